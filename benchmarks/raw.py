"""The ceiling: plain sqlite3 doing the same row writes and reads as eskit, nothing more.

One table with only the position key and UNIQUE (stream, version), eskit's columns, WAL,
``synchronous=FULL``, autocommit mode with explicit ``BEGIN IMMEDIATE`` / ``COMMIT``. Rows
are prepared before the clock starts; reads decode data and metadata with msgspec.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.common import Measurement, Payload, RawRow, payloads, placements, raw_rows

SCHEMA = """
CREATE TABLE events (
    position    INTEGER PRIMARY KEY AUTOINCREMENT,
    id          BLOB    NOT NULL,
    stream      TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    type        TEXT    NOT NULL,
    data        TEXT    NOT NULL,
    metadata    TEXT    NOT NULL,
    recorded_at INTEGER NOT NULL,
    UNIQUE (stream, version)
)
"""
INSERT = (
    "INSERT INTO events (id, stream, version, type, data, metadata, recorded_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
COLUMNS = "position, id, stream, version, type, data, metadata, recorded_at"
READ_STREAM = f"SELECT {COLUMNS} FROM events WHERE stream = ? ORDER BY version"
READ_PAGE = f"SELECT {COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
WARM_UP = 20


def connect(path: Path) -> sqlite3.Connection:
    """A connection as the ceiling uses it: WAL, synchronous=FULL, explicit transactions."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def create(path: Path) -> sqlite3.Connection:
    """A fresh database with the ceiling's table."""
    conn = connect(path)
    conn.execute(SCHEMA)
    return conn


def _warm_up_rows() -> list[RawRow]:
    return raw_rows(placements(WARM_UP, 1, "warmup"), payloads(WARM_UP, seed=1), 10**9)


def write(directory: Path, items: list[Payload], per_stream: int, per_tx: int) -> Measurement:
    """Insert the events ``per_tx`` rows per transaction (one after the other)."""
    rows = raw_rows(placements(len(items), per_stream), items)
    chunks = [rows[i : i + per_tx] for i in range(0, len(rows), per_tx)]
    conn = create(directory / "raw.db")
    try:
        for row in _warm_up_rows():
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(INSERT, row)
            conn.execute("COMMIT")
        mark = conn.execute("SELECT max(position) FROM events").fetchone()[0]
        start = time.perf_counter()
        if per_tx == 1:
            for row in rows:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(INSERT, row)
                conn.execute("COMMIT")
        else:
            for chunk in chunks:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(INSERT, chunk)
                conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        sql = "SELECT count(*) FROM events WHERE position > ?"
        written: int = conn.execute(sql, (mark,)).fetchone()[0]
    finally:
        conn.close()
    return Measurement(written, elapsed)


def fill(path: Path, items: list[Payload], per_stream: int) -> None:
    """Write the events in one transaction (setup, not timed); the close checkpoints."""
    conn = create(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT, raw_rows(placements(len(items), per_stream), items))
        conn.execute("COMMIT")
    finally:
        conn.close()


def _decode(rows: Iterable[Any]) -> int:
    decode = msgspec.json.decode
    count = 0
    for _position, _id, _stream, _version, _type, data, metadata, _recorded in rows:
        decode(data)
        decode(metadata)
        count += 1
    return count


def read_stream(directory: Path, items: list[Payload]) -> Measurement:
    """Read one stream back with a single SELECT ... ORDER BY version, decoding each row."""
    path = directory / "raw.db"
    fill(path, items, per_stream=len(items))
    conn = connect(path)
    try:
        _decode(conn.execute(READ_STREAM + " LIMIT 10", ("invoice-0",)))
        start = time.perf_counter()
        count = _decode(conn.execute(READ_STREAM, ("invoice-0",)))
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    return Measurement(count, elapsed)


def scan(conn: sqlite3.Connection, page: int) -> int:
    """Read the whole log in pages of ``page`` rows by position, decoding each row."""
    after, total = 0, 0
    while True:
        rows = conn.execute(READ_PAGE, (after, page)).fetchall()
        total += _decode(rows)
        if len(rows) < page:
            return total
        after = rows[-1][0]


def read_all(directory: Path, items: list[Payload], per_stream: int, page: int) -> Measurement:
    """Scan the log in pages of ``page`` by position (also the subscription's ceiling)."""
    path = directory / "raw.db"
    fill(path, items, per_stream)
    conn = connect(path)
    try:
        _decode(conn.execute(READ_PAGE, (0, 10)).fetchall())
        start = time.perf_counter()
        count = scan(conn, page)
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    return Measurement(count, elapsed)
