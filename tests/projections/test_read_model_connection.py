"""ReadModelConnection: batched writes never change the order statements take effect in,
with sqlite3 and with psycopg."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from eskit.projections import ReadModelConnection
from tests import postgres

NAMES = {"items": "items__g1", "log": "log__g1"}


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest) -> Iterator[ReadModelConnection]:
    """A connection (autocommit) with the two tables, in SQLite's memory or in a
    PostgreSQL schema of its own."""
    if request.param == "sqlite":
        conn: sqlite3.Connection | psycopg.Connection[tuple[object, ...]] = sqlite3.connect(
            ":memory:", isolation_level=None
        )
        sequence = "INTEGER PRIMARY KEY"
    else:
        conn = psycopg.connect(postgres.database_url(), autocommit=True)
        schema = f"rmc_{uuid.uuid4().hex[:16]}"
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'SET search_path TO "{schema}"')
        sequence = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
    conn.execute("CREATE TABLE items__g1 (k TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    conn.execute(f"CREATE TABLE log__g1 (seq {sequence}, k TEXT)")
    try:
        yield ReadModelConnection(conn, NAMES)  # type: ignore[arg-type]
    finally:
        conn.close()


UPSERT = "INSERT INTO {items} VALUES (?, 1) ON CONFLICT (k) DO UPDATE SET n = {items}.n + 1"
"""Written once: ``ReadModelConnection`` translates ``?`` for PostgreSQL."""


def test_writes_are_visible_to_the_next_execute(db: ReadModelConnection) -> None:
    for key in ["a", "b", "a"]:
        db.write(UPSERT, (key,))

    rows = db.execute("SELECT k, n FROM {items} ORDER BY k").fetchall()

    assert rows == [("a", 2), ("b", 1)]


def test_interleaved_statements_keep_their_order(db: ReadModelConnection) -> None:
    db.write(UPSERT, ("a",))
    db.write("INSERT INTO {log} (k) SELECT k || n FROM {items}", ())
    db.write(UPSERT, ("a",))
    db.write("INSERT INTO {log} (k) SELECT k || n FROM {items}", ())
    db.flush()

    assert db.conn.execute("SELECT k FROM log__g1 ORDER BY seq").fetchall() == [("a1",), ("a2",)]


def test_nothing_is_written_before_flush_or_execute(db: ReadModelConnection) -> None:
    db.write(UPSERT, ("a",))

    assert db.conn.execute("SELECT count(*) FROM items__g1").fetchone() == (0,)
    db.executemany(UPSERT, [("b",)])
    assert db.conn.execute("SELECT count(*) FROM items__g1").fetchone() == (2,)
