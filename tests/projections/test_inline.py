"""Inline projections on the SQLite and PostgreSQL stores: updated in the append's own
transaction, so a read right after the append sees them, and a handler that fails refuses
that append alone, even in the middle of a group commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import psycopg
import pytest

import eskit
from eskit.projections import (
    Database,
    ProjectionRunner,
    ReadModelConnection,
    SQLProjection,
    add_inline,
    database_for,
    handles,
)
from eskit.projections import state as st
from eskit.projections.sql import execute
from eskit.store.audit import verify
from eskit.store.postgres import PostgresStore
from eskit.store.sqlite import SQLiteStore
from tests import postgres
from tests.projections.models import store_url

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(request.param, tmp_path)


@pytest.fixture
async def store(url: str, anyio_backend: str) -> AsyncIterator[eskit.EventStore]:
    """A store whose read models share its database (the ``readmodels`` fixture's)."""
    async with eskit.open_store(url) as opened:
        yield opened


class Emails(SQLProjection):
    """Which user holds each e-mail address: a uniqueness index commands can trust."""

    name = "emails"
    tables = ("emails",)
    schema = ("CREATE TABLE {emails} (email TEXT PRIMARY KEY, stream TEXT NOT NULL)",)

    @handles("Registered")
    def registered(self, event: eskit.RecordedEvent, db: ReadModelConnection) -> None:
        db.execute("INSERT INTO {emails} VALUES (?, ?)", (event.data["email"], event.stream))


class Logins(SQLProjection):
    """Events per stream, written in batches: a second inline projection in the same group.
    It refuses blocked addresses, after its write (which must then not be sent)."""

    name = "logins"
    tables = ("logins",)
    schema = ("CREATE TABLE {logins} (stream TEXT PRIMARY KEY, n INTEGER NOT NULL)",)

    @handles("Registered", "LoggedIn")
    def seen(self, event: eskit.RecordedEvent, db: ReadModelConnection) -> None:
        db.write(
            (
                "INSERT INTO {logins} VALUES (?, 1)"
                " ON CONFLICT (stream) DO UPDATE SET n = {logins}.n + 1"
            ),
            (event.stream,),
        )
        if event.data.get("email") == BLOCKED:
            raise ValueError(f"{BLOCKED} is blocked")


BLOCKED = "spam@example.com"


class Nicknames(SQLProjection):
    """Unique nicknames, inserted with ``db.write``: a taken one fails only when the waiting
    writes are sent (at the end of the group's appends, or of the append with savepoints)."""

    name = "nicknames"
    tables = ("nicknames",)
    schema = ("CREATE TABLE {nicknames} (nick TEXT PRIMARY KEY)",)

    @handles("Registered")
    def registered(self, event: eskit.RecordedEvent, db: ReadModelConnection) -> None:
        db.write("INSERT INTO {nicknames} VALUES (?)", (event.data["nick"],))


def registered(email: str, nick: str | None = None) -> list[eskit.NewEvent]:
    """A user registered, by default with the address's local part as nickname."""
    return [eskit.NewEvent("Registered", {"email": email, "nick": nick or email.split("@")[0]})]


async def emails(database: Database) -> dict[str, str]:
    rows = await database.read(lambda c: c.execute("SELECT email, stream FROM emails").fetchall())
    return dict(rows)


async def checkpoint(database: Database, name: str = "emails") -> int:
    state = await database.read(lambda c: st.load(c, name))
    assert state is not None
    return state.position


@contextlib.asynccontextmanager
async def writer_held(store: eskit.EventStore) -> AsyncIterator[None]:
    """Keep the store's writer busy in a transaction until the block ends: the appends
    started meanwhile wait, and then commit in one group."""
    if isinstance(store, SQLiteStore):
        gate = threading.Event()
        held = asyncio.create_task(store.write_transaction(lambda conn: gate.wait(10)))
        await asyncio.sleep(0.05)  # the writer thread is now waiting at the gate
        try:
            yield
        finally:
            gate.set()
            await held
        return
    assert isinstance(store, PostgresStore)
    release, entered = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        store.before_commit = None
        entered.set()
        await release.wait()

    store.before_commit = hold
    holding = asyncio.create_task(store.append("hold-1", [eskit.NewEvent("Held", {})]))
    await entered.wait()
    try:
        yield
    finally:
        release.set()
        await holding


async def test_a_read_right_after_the_append_sees_the_row(
    store: eskit.EventStore, readmodels: Database
) -> None:
    await add_inline(store, Emails())

    written = await store.append("user-1", registered("ada@example.com"))

    assert await emails(readmodels) == {"ada@example.com": "user-1"}
    assert await checkpoint(readmodels) == written.last_position


async def test_the_backlog_is_caught_up_when_installed(
    store: eskit.EventStore, readmodels: Database
) -> None:
    for n in range(5):
        await store.append(f"user-{n}", registered(f"u{n}@example.com"))
    last = await store.append("other-1", [eskit.NewEvent("Other", {})])

    await add_inline(store, Emails())

    assert await emails(readmodels) == {f"u{n}@example.com": f"user-{n}" for n in range(5)}
    assert await checkpoint(readmodels) == last.last_position


TAKEN = sqlite3.IntegrityError | psycopg.IntegrityError


@pytest.mark.parametrize(
    ("email", "nick", "refusing", "error"),
    [
        ("ada@example.com", "ada2", "emails", TAKEN),  # refused by the first projection
        (BLOCKED, None, "logins", ValueError),  # by the second, after the first wrote
        ("ada2@example.com", "ada", "nicknames", TAKEN),  # by the third, when writes are sent
    ],
)
async def test_a_failing_handler_in_the_middle_of_a_group_refuses_only_its_append(
    store: eskit.EventStore,
    readmodels: Database,
    email: str,
    nick: str | None,
    refusing: str,
    error: type,
) -> None:
    for projection in (Emails(), Logins(), Nicknames()):
        await add_inline(store, projection)
    await store.append("user-1", registered("ada@example.com"))
    await store.append("user-2", registered("bob@example.com"))

    appends = [store.append(f"user-{n}", registered(f"u{n}@example.com")) for n in range(3, 9)]
    appends.insert(3, store.append("user-2", registered(email, nick)))
    async with writer_held(store):  # the appends commit in one group once it is released
        started = [asyncio.create_task(append) for append in appends]
        await asyncio.sleep(0.05)  # all queued, in this order
    results = await asyncio.gather(*started, return_exceptions=True)

    refused = results.pop(3)
    assert all(isinstance(r, eskit.AppendResult) for r in results), results
    assert isinstance(refused, eskit.ProjectionError)
    assert (refused.name, refused.event_type) == (refusing, "Registered")
    assert isinstance(refused.__cause__, error)
    assert await store.stream_version("user-2") == 0  # nothing of it was written
    written = [e async for e in store.read_all(types=["Registered"])][2:]
    assert len({event.recorded_at for event in written}) == 1  # one group commit
    assert await emails(readmodels) == {
        "ada@example.com": "user-1",
        "bob@example.com": "user-2",
        **{f"u{n}@example.com": f"user-{n}" for n in range(3, 9)},
    }
    logins = await readmodels.read(lambda c: c.execute("SELECT stream, n FROM logins").fetchall())
    assert dict(logins) == {f"user-{n}": 1 for n in range(1, 9)}  # nor in the others
    nicks = await readmodels.read(lambda c: c.execute("SELECT nick FROM nicknames").fetchall())
    assert sorted(nick for (nick,) in nicks) == ["ada", "bob", *(f"u{n}" for n in range(3, 9))]
    head = await store.last_position()
    for name in ("emails", "logins", "nicknames"):
        assert await checkpoint(readmodels, name) == head
    # the refused append's positions were given again: no gap, every link covers its own
    assert [e.position async for e in store.read_all()] == list(range(1, head + 1))
    report = await verify(store)
    assert report.ok, report.problems


async def test_a_refused_append_leaves_its_stream_and_ids_as_before_for_the_rest_of_the_group(
    store: eskit.EventStore, readmodels: Database
) -> None:
    await add_inline(store, Emails())
    await store.append("user-1", registered("ada@example.com"))
    event_id = uuid.uuid4()
    taken, free = (
        [msgspec.structs.replace(e, id=event_id) for e in registered(address)]
        for address in ("ada@example.com", "bob@example.com")
    )
    async with writer_held(store):  # both commit in one group once it is released
        refused = asyncio.create_task(store.append("user-2", taken, eskit.NO_STREAM))
        await asyncio.sleep(0.02)
        accepted = asyncio.create_task(store.append("user-2", free, eskit.NO_STREAM))
        await asyncio.sleep(0.05)
    with pytest.raises(eskit.ProjectionError):
        await refused
    # the same id and NO_STREAM again: a new append (not a retry of the refused one) at
    # the refused one's version and position, linked after nothing
    result = await accepted
    assert (result.last_version, result.last_position) == (0, await store.last_position())
    assert [e.id async for e in store.read_stream("user-2")] == [event_id]
    assert [e.position async for e in store.read_all()] == list(range(1, result.last_position + 1))
    assert await emails(readmodels) == {"ada@example.com": "user-1", "bob@example.com": "user-2"}
    report = await verify(store)
    assert report.ok, report.problems


async def test_many_concurrent_appends_leave_the_read_models_equal_to_the_log(
    store: eskit.EventStore, readmodels: Database
) -> None:
    """16 writers append at once, some with an address or a nickname already taken: every
    append the projections accepted is in the log and the read models, every refused one in
    neither."""
    for projection in (Emails(), Logins(), Nicknames()):
        await add_inline(store, projection)
    rng = random.Random(5)
    refused: list[tuple[str, str, str]] = []

    async def writer(w: int) -> None:
        for n in range(25):
            stream = f"user-{w}x{n}"
            email, nick = f"e{rng.randrange(400)}@example.com", f"n{rng.randrange(400)}"
            try:
                await store.append(stream, registered(email, nick))
            except eskit.ProjectionError as error:
                refused.append((error.name, email, nick))
            await store.append(stream, [eskit.NewEvent("LoggedIn", {})])

    await asyncio.gather(*(writer(w) for w in range(16)))

    log = [e async for e in store.read_all(types=["Registered"])]
    by_email = {event.data["email"]: event.stream for event in log}
    nicks = sorted(event.data["nick"] for event in log)
    assert len(by_email) == len(set(nicks)) == len(log) == 16 * 25 - len(refused)
    assert {name for name, _, _ in refused} == {"emails", "nicknames"}
    for name, email, nick in refused:  # refused for what was taken
        assert email in by_email if name == "emails" else nick in nicks
    assert await emails(readmodels) == by_email
    stored = await readmodels.read(lambda c: c.execute("SELECT nick FROM nicknames").fetchall())
    assert sorted(nick for (nick,) in stored) == nicks
    logins = await readmodels.read(lambda c: c.execute("SELECT stream, n FROM logins").fetchall())
    streams = {f"user-{w}x{n}" for w in range(16) for n in range(25)}
    assert dict(logins) == {stream: 1 + (stream in by_email.values()) for stream in streams}
    head = await store.last_position()
    for name in ("emails", "logins", "nicknames"):
        assert await checkpoint(readmodels, name) == head
    assert [e.position async for e in store.read_all()] == list(range(1, head + 1))
    report = await verify(store)
    assert report.ok, report.problems


async def test_a_refused_append_is_logged_as_refused_and_the_projection_goes_on(
    store: eskit.EventStore, readmodels: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The projection is not stuck: the log says which append it refused and why, once."""
    await add_inline(store, Emails())
    await store.append("user-1", registered("ada@example.com"))
    caplog.set_level(logging.WARNING, logger="eskit")
    with pytest.raises(eskit.ProjectionError) as raised:
        await store.append("user-2", registered("ada@example.com"))
    refused = raised.value
    assert refused.refused == "user-2"
    assert re.match(
        r"the append to user-2 was refused by projection emails: \w*(Integrity|Unique)\w*: ",
        str(refused),
    ), refused
    assert "stuck" not in str(refused)
    logged = [r for r in caplog.records if r.name.startswith("eskit")]
    assert [(r.levelname, r.getMessage()) for r in logged] == [("WARNING", str(refused))]

    await store.append("user-3", registered("cy@example.com"))
    state = await readmodels.read(lambda c: st.load(c, "emails"))
    assert state is not None
    assert (state.status, state.error) == (st.RUNNING, None)
    assert await emails(readmodels) == {"ada@example.com": "user-1", "cy@example.com": "user-3"}


@pytest.mark.parametrize("how", ["reset", "stuck"])
async def test_a_reset_or_stuck_projection_refuses_appends(
    store: eskit.EventStore, readmodels: Database, how: str
) -> None:
    inline = await add_inline(store, Emails())
    await store.append("user-1", registered("ada@example.com"))
    if how == "reset":
        await readmodels.write(lambda c: st.reset(c, "emails"))
    else:
        await readmodels.write(
            lambda c: execute(c, "UPDATE eskit_projections SET status = ?", (st.STUCK,))
        )

    with pytest.raises(
        eskit.ProjectionError,
        match="append to user-2 was refused by projection emails: the inline projection was reset",
    ):
        await store.append("user-2", registered("bob@example.com"))
    assert await store.stream_version("user-2") is None
    if how == "reset":  # removed and installed again, it is built again
        await inline.remove()
        await add_inline(store, Emails())
        await store.append("user-3", registered("cy@example.com"))
        assert await emails(readmodels) == {"ada@example.com": "user-1", "cy@example.com": "user-3"}


async def test_events_appended_without_the_projection_are_applied_before_the_next_append(
    url: str, store: eskit.EventStore, readmodels: Database
) -> None:
    """Another process's store (here: another store object) appends without the inline
    projection: the next inline append applies those events first, in its transaction."""
    await add_inline(store, Emails())
    await store.append("user-1", registered("ada@example.com"))
    async with eskit.open_store(url) as other:
        await other.append("user-2", registered("bob@example.com"))
        await other.append("user-3", registered("cy@example.com"))

    last = await store.append("user-4", registered("dan@example.com"))

    assert await emails(readmodels) == {
        "ada@example.com": "user-1",
        "bob@example.com": "user-2",
        "cy@example.com": "user-3",
        "dan@example.com": "user-4",
    }
    assert await checkpoint(readmodels) == last.last_position


async def test_two_processes_with_the_projection_append_at_once(
    url: str, store: eskit.EventStore, readmodels: Database
) -> None:
    """Both processes (here: two store objects) run the projection inline while they append
    concurrently, with addresses the other may have taken: their group commits alternate,
    each moving the checkpoint past the other's, and each event is applied once."""
    await add_inline(store, Emails())
    rng = random.Random(7)
    results: list[eskit.AppendResult | eskit.ProjectionError] = []

    async def writer(appender: eskit.EventStore, w: int) -> None:
        for n in range(15):
            email = f"e{rng.randrange(60)}@example.com"
            try:
                results.append(await appender.append(f"user-{w}x{n}", registered(email)))
            except eskit.ProjectionError as refused:
                results.append(refused)

    async with eskit.open_store(url) as other:
        await add_inline(other, Emails())
        await asyncio.gather(*(writer([store, other][w % 2], w) for w in range(8)))

    assert {type(r) for r in results} == {eskit.AppendResult, eskit.ProjectionError}
    log = {e.data["email"]: e.stream async for e in store.read_all(types=["Registered"])}
    assert len(log) == sum(isinstance(r, eskit.AppendResult) for r in results)
    assert await emails(readmodels) == log
    assert await checkpoint(readmodels) == await store.last_position()


async def test_remove_stops_the_inline_updates(
    store: eskit.EventStore, readmodels: Database
) -> None:
    inline = await add_inline(store, Emails())
    before = await store.append("user-1", registered("ada@example.com"))

    await inline.remove()
    after = await store.append("user-2", registered("bob@example.com"))

    assert await emails(readmodels) == {"ada@example.com": "user-1"}
    assert await checkpoint(readmodels) == before.last_position
    async with ProjectionRunner(store, [Emails()]) as runner:  # a runner takes over
        await runner.wait_until(after.last_position)
    assert await emails(readmodels) == {"ada@example.com": "user-1", "bob@example.com": "user-2"}


class Terminating(SQLProjection):
    """Ends its own server session on ``Terminate``: the writer's connection is lost inside a
    handler, which is the store's failure, not the projection's."""

    name = "terminating"
    tables = ("terminated",)
    schema = ("CREATE TABLE {terminated} (stream TEXT PRIMARY KEY)",)

    @handles("Registered", "Terminate")
    def seen(self, event: eskit.RecordedEvent, db: ReadModelConnection) -> None:
        if event.type == "Terminate":
            db.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        db.write("INSERT INTO {terminated} VALUES (%s)", (event.stream,))


async def test_a_connection_lost_in_a_handler_fails_appends_as_the_stores_error() -> None:
    # Each new attempt loses its connection too: tried again until the failover deadline.
    async with eskit.open_store(f"{postgres.store_url()}&failover_deadline=1") as store:
        await add_inline(store, Terminating())
        database = database_for(store)
        try:
            lost = store.append("user-1", [eskit.NewEvent("Terminate", {})])
            with pytest.raises(eskit.StoreUnavailable, match="may or may not have been"):
                await lost
            written = await store.append("user-2", registered("bob@example.com"))

            rows = await database.read(lambda c: c.execute("SELECT * FROM terminated").fetchall())
            assert rows == [("user-2",)]
            assert await store.stream_version("user-1") is None
            assert await checkpoint(database, "terminating") == written.last_position
        finally:
            await database.close()
