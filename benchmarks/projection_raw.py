"""The read side's ceiling: plain sqlite3 building the same read model from the same log.

It reads eskit's own events table (the same file layout, filled the same way), applies
the same upsert per event and moves a checkpoint row, one ``BEGIN IMMEDIATE`` transaction
per batch of the same size, WAL and ``synchronous=FULL`` as eskit. The batch is read inside
its write transaction, rows decoded (data and metadata) with msgspec, upserts sent with
``executemany``. Nothing else: no objects, no threads, no event loop.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec

from benchmarks import raw
from benchmarks.common import (
    ESKIT_INSERT,
    EVENT_TYPE,
    Measurement,
    Payload,
    eskit_rows,
    fill_log,
    payloads,
)
from benchmarks.projection import BATCH, SCHEMA, TABLE, UPSERT, counted

PER_STREAM = 100
WARM_UP = 20
WARM_UP_START = 10**6
"""The warm-up events go to streams ``invoice-1000000`` and up, away from the measured ones."""
READ = f"SELECT {raw.COLUMNS} FROM events WHERE position > ? AND type = ? ORDER BY position LIMIT ?"
CHECKPOINTS = "CREATE TABLE checkpoints (name TEXT PRIMARY KEY, position INTEGER NOT NULL)"
SQL_UPSERT = UPSERT.format(invoice_totals=TABLE)


def _setup(conn: sqlite3.Connection) -> None:
    """The read model's table and its checkpoint row, in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(SCHEMA.format(invoice_totals=TABLE))
    conn.execute(CHECKPOINTS)
    conn.execute("INSERT INTO checkpoints VALUES ('totals', 0)")
    conn.execute("COMMIT")


def apply_batch(conn: sqlite3.Connection, after: int) -> tuple[int, int]:
    """One transaction: read a batch after ``after``, upsert, move the checkpoint. Returns
    (rows applied, new checkpoint)."""
    decode = msgspec.json.decode
    conn.execute("BEGIN IMMEDIATE")
    rows = conn.execute(READ, (after, EVENT_TYPE, BATCH)).fetchall()
    upserts = []
    for position, _id, stream, _version, _type, data, metadata, _recorded in rows:
        decode(metadata)
        upserts.append((stream, decode(data)["amount"]))
        after = position
    conn.executemany(SQL_UPSERT, upserts)
    conn.execute("UPDATE checkpoints SET position = ? WHERE name = 'totals'", (after,))
    conn.execute("COMMIT")
    return len(rows), after


def _counted(conn: sqlite3.Connection, items: list[Payload]) -> int:
    head = conn.execute("SELECT max(position) FROM events").fetchone()[0]
    checkpoint = conn.execute("SELECT position FROM checkpoints").fetchone()[0]
    return counted(conn, items, checkpoint, head)


def catch_up(directory: Path, items: list[Payload]) -> Measurement:
    """Build the read model from position 0, batch after batch, until a batch is short."""
    path = directory / "events.db"
    fill_log(path, [items], PER_STREAM)
    conn = raw.connect(path)
    try:
        conn.execute(READ, (0, EVENT_TYPE, 10)).fetchall()
        start = time.perf_counter()
        _setup(conn)
        after = 0
        while True:
            applied, after = apply_batch(conn, after)
            if applied < BATCH:
                break
        elapsed = time.perf_counter() - start
        count = _counted(conn, items)
    finally:
        conn.close()
    return Measurement(count, elapsed)


def latency(directory: Path, items: list[Payload], spacing: float) -> Measurement:
    """Each event: one transaction appends it (a prepared row), the next applies it to the
    read model as a batch; timed from the first BEGIN to the second COMMIT, one after the
    other with ``spacing`` seconds between them (the same loop for the concurrent variant:
    one connection has no concurrency to offer)."""
    path = directory / "events.db"
    fill_log(path, [], PER_STREAM)
    warm = payloads(WARM_UP, seed=1)
    conn = raw.connect(path)
    latencies = []
    try:
        _setup(conn)
        after = 0
        for row in eskit_rows(warm, WARM_UP_START, 1):
            _append(conn, row)
            _, after = apply_batch(conn, after)
        rows = eskit_rows(items, 0, 1)
        start = time.perf_counter()
        for row in rows:
            begin = time.perf_counter()
            _append(conn, row)
            _, after = apply_batch(conn, after)
            latencies.append(time.perf_counter() - begin)
            if spacing:
                time.sleep(spacing)
        elapsed = time.perf_counter() - start
        applied = _counted(conn, warm + items)
    finally:
        conn.close()
    return Measurement(applied - WARM_UP if applied else 0, elapsed, tuple(latencies))


def _append(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(ESKIT_INSERT, row)
    conn.execute("COMMIT")
