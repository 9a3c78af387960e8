"""Inline projections on the SQLite store: updated in the append's own transaction, so a read
right after the append sees them, and a handler that fails refuses that append alone."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

import eskit
from eskit.projections import (
    ProjectionRunner,
    ReadModelConnection,
    SQLProjection,
    add_inline,
    handles,
)
from eskit.projections import state as st
from eskit.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


class Emails(SQLProjection):
    """Which user holds each e-mail address: a uniqueness index commands can trust."""

    name = "emails"
    tables = ("emails",)
    schema = ("CREATE TABLE {emails} (email TEXT PRIMARY KEY, stream TEXT NOT NULL)",)

    @handles("Registered")
    def registered(self, event: eskit.RecordedEvent, db: ReadModelConnection) -> None:
        db.execute("INSERT INTO {emails} VALUES (?, ?)", (event.data["email"], event.stream))


def registered(email: str) -> list[eskit.NewEvent]:
    return [eskit.NewEvent("Registered", {"email": email})]


async def emails(store: SQLiteStore) -> dict[str, str]:
    rows = await store.read_transaction(
        lambda c: c.execute("SELECT email, stream FROM emails").fetchall()
    )
    return dict(rows)


async def checkpoint(store: SQLiteStore) -> int:
    state = await store.read_transaction(lambda c: st.load(c, "emails"))
    assert state is not None
    return state.position


async def test_a_read_right_after_the_append_sees_the_row(sqlite_store: SQLiteStore) -> None:
    await add_inline(sqlite_store, Emails())

    written = await sqlite_store.append("user-1", registered("ada@example.com"))

    assert await emails(sqlite_store) == {"ada@example.com": "user-1"}
    assert await checkpoint(sqlite_store) == written.last_position


async def test_the_backlog_is_caught_up_when_installed(sqlite_store: SQLiteStore) -> None:
    for n in range(5):
        await sqlite_store.append(f"user-{n}", registered(f"u{n}@example.com"))
    last = await sqlite_store.append("other-1", [eskit.NewEvent("Other", {})])

    await add_inline(sqlite_store, Emails())

    assert await emails(sqlite_store) == {f"u{n}@example.com": f"user-{n}" for n in range(5)}
    assert await checkpoint(sqlite_store) == last.last_position


async def test_a_failing_handler_refuses_its_append_and_only_that_one(
    sqlite_store: SQLiteStore,
) -> None:
    await add_inline(sqlite_store, Emails())
    await sqlite_store.append("user-1", registered("ada@example.com"))
    await sqlite_store.append("user-2", registered("bob@example.com"))

    results = await asyncio.gather(
        *(sqlite_store.append(f"user-{n}", registered(f"u{n}@example.com")) for n in range(3, 8)),
        sqlite_store.append("user-2", registered("ada@example.com")),  # taken: the PK refuses
        return_exceptions=True,
    )

    *good, refused = results
    assert all(isinstance(r, eskit.AppendResult) for r in good)
    assert isinstance(refused, eskit.ProjectionError)
    assert (refused.name, refused.event_type) == ("emails", "Registered")
    assert isinstance(refused.__cause__, sqlite3.IntegrityError)
    assert await sqlite_store.stream_version("user-2") == 0  # nothing of it was written
    assert await emails(sqlite_store) == {
        "ada@example.com": "user-1",
        "bob@example.com": "user-2",
        **{f"u{n}@example.com": f"user-{n}" for n in range(3, 8)},
    }


async def test_remove_stops_the_inline_updates(sqlite_store: SQLiteStore) -> None:
    inline = await add_inline(sqlite_store, Emails())
    before = await sqlite_store.append("user-1", registered("ada@example.com"))

    await inline.remove()
    after = await sqlite_store.append("user-2", registered("bob@example.com"))

    assert await emails(sqlite_store) == {"ada@example.com": "user-1"}
    assert await checkpoint(sqlite_store) == before.last_position
    async with ProjectionRunner(sqlite_store, [Emails()]) as runner:  # a runner takes over
        await runner.wait_until(after.last_position)
    assert await emails(sqlite_store) == {"ada@example.com": "user-1", "bob@example.com": "user-2"}
