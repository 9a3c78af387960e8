"""ReadModelConnection: batched writes never change the order statements take effect in."""

from __future__ import annotations

import sqlite3

from eskit.projections import ReadModelConnection

NAMES = {"items": "items__g1", "log": "log__g1"}


def connection() -> ReadModelConnection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE items__g1 (k TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    conn.execute("CREATE TABLE log__g1 (seq INTEGER PRIMARY KEY, k TEXT)")
    return ReadModelConnection(conn, NAMES)


UPSERT = "INSERT INTO {items} VALUES (?, 1) ON CONFLICT (k) DO UPDATE SET n = n + 1"


def test_writes_are_visible_to_the_next_execute() -> None:
    db = connection()
    for key in ["a", "b", "a"]:
        db.write(UPSERT, (key,))

    rows = db.execute("SELECT k, n FROM {items} ORDER BY k").fetchall()

    assert rows == [("a", 2), ("b", 1)]


def test_interleaved_statements_keep_their_order() -> None:
    db = connection()
    db.write(UPSERT, ("a",))
    db.write("INSERT INTO {log} (k) SELECT k || n FROM {items}", ())
    db.write(UPSERT, ("a",))
    db.write("INSERT INTO {log} (k) SELECT k || n FROM {items}", ())
    db.flush()

    assert db.conn.execute("SELECT k FROM log__g1 ORDER BY seq").fetchall() == [("a1",), ("a2",)]


def test_nothing_is_written_before_flush_or_execute() -> None:
    db = connection()
    db.write(UPSERT, ("a",))

    assert db.conn.execute("SELECT count(*) FROM items__g1").fetchone() == (0,)
    db.executemany(UPSERT, [("b",)])
    assert db.conn.execute("SELECT count(*) FROM items__g1").fetchone() == (2,)
