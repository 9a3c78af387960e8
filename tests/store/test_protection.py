"""The log refuses changes at the storage level: through a plain connection, an UPDATE of an
event is refused, and so is a DELETE (and on PostgreSQL a TRUNCATE), unless the removal was
first recorded in the removals table, which is append-only itself. tests/store/tamper.py
gets past the guard as an intruder with the file or the superuser can, and leaves it in
place."""

from __future__ import annotations

import contextlib
import sqlite3
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import eskit
from eskit.store.audit import verify
from tests import postgres
from tests.store.tamper import tamper_postgres, tamper_sqlite

pytestmark = pytest.mark.anyio

REMOVAL = (
    "INSERT INTO {removals} (position, stream, version, reason, removed_at, removed_by)"
    " VALUES (2, 'order-1', 1, 'scavenged: stream deleted', 0, 'scavenger')"
)


async def fill(url: str) -> None:
    async with eskit.open_store(url) as store:
        await store.append("order-1", [eskit.NewEvent("Noted", {"n": n}) for n in range(3)])


async def events(url: str) -> list[tuple[int, dict[str, Any]]]:
    async with eskit.open_store(url) as store:
        return [(e.position, e.data) async for e in store.read_all()]


# -- SQLite ---------------------------------------------------------------------------------


@pytest.fixture
async def sqlite_file(tmp_path: Path, anyio_backend: str) -> Path:
    path = tmp_path / "events.db"
    await fill(f"sqlite:///{path}")
    return path


@contextlib.contextmanager
def plain(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("UPDATE events SET data = '{}' WHERE position = 2", "an UPDATE of events is refused"),
        ("UPDATE events SET hash = NULL", "an UPDATE of events is refused"),
        (
            "INSERT INTO events SELECT * FROM events WHERE true"
            " ON CONFLICT (position) DO UPDATE SET data = '{}'",
            "an UPDATE of events is refused",
        ),
        ("DELETE FROM events WHERE position = 2", "a DELETE of events is refused unless"),
        ("DELETE FROM events", "first recorded in removals"),
    ],
)
async def test_sqlite_refuses_a_change_to_an_event(
    sqlite_file: Path, statement: str, message: str
) -> None:
    url = f"sqlite:///{sqlite_file}"
    before = await events(url)
    with plain(sqlite_file) as conn, pytest.raises(sqlite3.IntegrityError, match=message):
        conn.execute(statement)
    assert await events(url) == before


async def test_sqlite_deletes_an_event_whose_removal_was_recorded(sqlite_file: Path) -> None:
    url = f"sqlite:///{sqlite_file}"
    with plain(sqlite_file) as conn:
        conn.execute(REMOVAL.format(removals="removals"))
        conn.execute("DELETE FROM events WHERE position = 2")
        with pytest.raises(sqlite3.IntegrityError, match="refused"):  # only that one
            conn.execute("DELETE FROM events WHERE position = 3")
        assert conn.execute("SELECT reason, removed_by FROM removals").fetchall() == [
            ("scavenged: stream deleted", "scavenger")
        ]
    assert [position for position, _ in await events(url)] == [1, 3]


async def test_sqlite_needs_the_recorded_stream_and_version_to_match(sqlite_file: Path) -> None:
    with plain(sqlite_file) as conn:
        conn.execute(REMOVAL.format(removals="removals").replace("'order-1', 1", "'order-9', 1"))
        with pytest.raises(sqlite3.IntegrityError, match="refused"):
            conn.execute("DELETE FROM events WHERE position = 2")


async def test_sqlite_insert_or_replace_is_left_to_verify(sqlite_file: Path) -> None:
    """REPLACE deletes without firing DELETE triggers: the guard misses it, verify does not."""
    url = f"sqlite:///{sqlite_file}"
    with plain(sqlite_file) as conn:
        conn.execute(
            "INSERT OR REPLACE INTO events SELECT position, id, stream, category, version, type,"
            " '{\"n\": 99}', metadata, recorded_at, hash, content_type, raw_data, raw_metadata"
            " FROM events WHERE position = 2"
        )
    assert (await events(url))[1] == (2, {"n": 99})
    async with eskit.open_store(url) as store:
        report = await verify(store)
    assert [(p.version, p.what) for p in report.problems] == [
        (1, "altered: the link does not match the event")
    ]


@pytest.mark.parametrize(
    "statement", ["UPDATE removals SET reason = 'nothing'", "DELETE FROM removals"]
)
async def test_sqlite_removals_are_append_only(sqlite_file: Path, statement: str) -> None:
    with plain(sqlite_file) as conn:
        conn.execute(REMOVAL.format(removals="removals"))
        with pytest.raises(sqlite3.IntegrityError, match="removals are append-only"):
            conn.execute(statement)


async def test_sqlite_tampering_leaves_the_guard_in_place(sqlite_file: Path) -> None:
    url = f"sqlite:///{sqlite_file}"
    tamper_sqlite(sqlite_file, "UPDATE events SET data = '{\"n\": 7}' WHERE position = 1")
    assert (await events(url))[0] == (1, {"n": 7})
    with plain(sqlite_file) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE events SET data = '{}'")


async def test_sqlite_tampering_that_fails_changes_nothing(sqlite_file: Path) -> None:
    url = f"sqlite:///{sqlite_file}"
    before = await events(url)
    with pytest.raises(sqlite3.OperationalError):
        tamper_sqlite(sqlite_file, "DELETE FROM events WHERE position = 1", "SELECT nonsense()")
    assert await events(url) == before
    with plain(sqlite_file) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("DELETE FROM events")


# -- PostgreSQL -----------------------------------------------------------------------------


@pytest.fixture
async def postgres_url(anyio_backend: str) -> str:
    url = postgres.store_url()
    await fill(url)
    return url


@contextlib.contextmanager
def connection(url: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain connection (the server's superuser, as the tests have it) to the store's
    schema: triggers fire for it as for anyone."""
    parts = urllib.parse.urlsplit(url)
    schema = dict(urllib.parse.parse_qsl(parts.query))["schema"]
    with psycopg.connect(urllib.parse.urlunsplit(parts._replace(query="")), autocommit=True) as c:
        c.execute(f'SET search_path TO "{schema}"')
        yield c


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("UPDATE eskit_events SET data = '{}' WHERE position = 2", "UPDATE of .* is refused"),
        ("UPDATE eskit_events SET hash = NULL", "UPDATE of .* is refused"),
        (
            "INSERT INTO eskit_events SELECT * FROM eskit_events"
            " ON CONFLICT (position) DO UPDATE SET data = '{}'",
            "UPDATE of .* is refused",
        ),
        ("DELETE FROM eskit_events WHERE position = 2", "first recorded in eskit_removals"),
        ("DELETE FROM eskit_events", "a DELETE of .*eskit_events is refused unless"),
        ("TRUNCATE eskit_events", "TRUNCATE of .*eskit_events is refused"),
    ],
)
async def test_postgres_refuses_a_change_to_an_event(
    postgres_url: str, statement: str, message: str
) -> None:
    before = await events(postgres_url)
    with connection(postgres_url) as conn, pytest.raises(psycopg.errors.RestrictViolation) as e:
        conn.execute(statement.encode())
    assert e.match(message)
    assert await events(postgres_url) == before


async def test_postgres_refuses_from_any_search_path(postgres_url: str) -> None:
    """The trigger finds the removals table through the events table's schema."""
    schema = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(postgres_url).query))["schema"]
    with connection(postgres_url) as conn:
        conn.execute("SET search_path TO public")
        with pytest.raises(psycopg.errors.RestrictViolation, match="recorded in eskit_removals"):
            conn.execute(f'DELETE FROM "{schema}".eskit_events'.encode())


async def test_postgres_deletes_an_event_whose_removal_was_recorded(postgres_url: str) -> None:
    with connection(postgres_url) as conn:
        conn.execute(REMOVAL.format(removals="eskit_removals").encode())
        conn.execute("DELETE FROM eskit_events WHERE position = 2")
        with pytest.raises(psycopg.errors.RestrictViolation):  # only that one
            conn.execute("DELETE FROM eskit_events WHERE position = 3")
    assert [position for position, _ in await events(postgres_url)] == [1, 3]


async def test_postgres_needs_the_recorded_stream_and_version_to_match(
    postgres_url: str,
) -> None:
    with connection(postgres_url) as conn:
        conn.execute(
            "INSERT INTO eskit_removals (position, stream, version, reason, removed_at)"
            " VALUES (2, 'order-1', 2, 'wrong version', 0)"
        )
        assert conn.execute("SELECT removed_by FROM eskit_removals").fetchone() == ("postgres",)
        with pytest.raises(psycopg.errors.RestrictViolation):
            conn.execute("DELETE FROM eskit_events WHERE position = 2")


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE eskit_removals SET reason = 'x'",
        "DELETE FROM eskit_removals",
        "TRUNCATE eskit_removals",
    ],
)
async def test_postgres_removals_are_append_only(postgres_url: str, statement: str) -> None:
    with connection(postgres_url) as conn:
        conn.execute(REMOVAL.format(removals="eskit_removals").encode())
        with pytest.raises(psycopg.errors.RestrictViolation, match="removals are append-only"):
            conn.execute(statement.encode())


async def test_postgres_tampering_leaves_the_guard_in_place(postgres_url: str) -> None:
    tamper_postgres(postgres_url, "UPDATE eskit_events SET data = '{\"n\": 7}' WHERE position = 1")
    assert (await events(postgres_url))[0] == (1, {"n": 7})
    with connection(postgres_url) as conn, pytest.raises(psycopg.errors.RestrictViolation):
        conn.execute("UPDATE eskit_events SET data = '{}'")
