"""The ceiling: plain sqlite3 doing the same row writes and reads as eskit, nothing more.

One table with only the position key and UNIQUE (stream, version), eskit's columns, WAL,
``synchronous=FULL``, autocommit mode with explicit ``BEGIN IMMEDIATE`` / ``COMMIT``. Rows
are prepared before the clock starts; reads decode data and metadata with msgspec.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec

import eskit
from benchmarks import invoices
from benchmarks.common import (
    Measurement,
    Payload,
    RawRow,
    event_ids,
    payloads,
    placements,
    raw_rows,
)

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
_ROW = "(?, ?, ?, ?, ?, ?, ?)"
INSERT = (
    f"INSERT INTO events (id, stream, version, type, data, metadata, recorded_at) VALUES {_ROW}"
)
CHUNK = 64
"""The most rows one multi-row INSERT takes, as in eskit's writer: a statement of many rows
costs SQLite less a row than ``executemany``'s step a row (which opens the table's and
indexes' cursors each time)."""
INSERTS = {1 << k: INSERT + f", {_ROW}" * ((1 << k) - 1) for k in range(CHUNK.bit_length())}
"""The insert of each chunk size: the powers of two up to ``CHUNK``."""
Statement = tuple[str, list[object]]
"""A statement and its parameters, bound flat."""
SNAPSHOTS = """
CREATE TABLE snapshots (
    stream           TEXT    NOT NULL,
    snapshot_version INTEGER NOT NULL,
    version          INTEGER NOT NULL,
    state            TEXT    NOT NULL,
    recorded_at      INTEGER NOT NULL,
    PRIMARY KEY (stream, snapshot_version, version)
) WITHOUT ROWID
"""
INSERT_SNAPSHOT = (
    "INSERT INTO snapshots (stream, snapshot_version, version, state, recorded_at)"
    " VALUES (?, ?, ?, ?, ?)"
)
COLUMNS = "position, id, stream, version, type, data, metadata, recorded_at"
READ_STREAM = f"SELECT {COLUMNS} FROM events WHERE stream = ? ORDER BY version"
READ_STREAM_FROM = (
    f"SELECT {COLUMNS} FROM events WHERE stream = ? AND version >= ? ORDER BY version"
)
READ_SNAPSHOT = (
    "SELECT version, state FROM snapshots WHERE stream = ? AND snapshot_version = ?"
    " ORDER BY version DESC LIMIT 1"
)
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
    """Insert the events ``per_tx`` rows per transaction (one after the other); several rows
    go in multi-row INSERTs (``chunked``), planned before the clock."""
    rows = raw_rows(placements(len(items), per_stream), items)
    transactions = in_batches(rows, per_tx) if per_tx > 1 else []  # 1: inserted as it is
    conn = create(directory / "raw.db")
    try:
        for row in _warm_up_rows():
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(INSERT, row)
            conn.execute("COMMIT")
        mark = conn.execute("SELECT max(position) FROM events").fetchone()[0]
        if per_tx == 1:
            start = time.perf_counter()
            for row in rows:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(INSERT, row)
                conn.execute("COMMIT")
            elapsed = time.perf_counter() - start
        else:
            elapsed = in_transactions(conn, transactions)
        written = written_after(conn, mark)
    finally:
        conn.close()
    return Measurement(written, elapsed)


def in_batches(rows: Sequence[tuple[object, ...]], per_tx: int) -> list[list[Statement]]:
    """``rows`` ``per_tx`` a transaction, each transaction as its multi-row inserts."""
    batches = (rows[i : i + per_tx] for i in range(0, len(rows), per_tx))
    return [chunked(flat(batch), len(batch)) for batch in batches]


def flat(rows: Sequence[tuple[object, ...]]) -> list[object]:
    """The parameters of ``rows`` in one flat list, as a multi-row INSERT binds them."""
    return [parameter for row in rows for parameter in row]


def chunked(
    parameters: list[object], count: int, inserts: dict[int, str] = INSERTS
) -> list[Statement]:
    """The multi-row inserts of ``count`` rows bound flat in ``parameters``: chunks of the
    largest sizes ``inserts`` has (100 rows: 64, 32 and 4), as eskit's writer chunks a
    group (its ``_insert_chunks``, not called here: raw runs no eskit code). ``inserts``:
    another table's statements by chunk size."""
    width = len(parameters) // count
    statements: list[Statement] = []
    start, size = 0, max(inserts)
    while count:
        while size > count:
            size >>= 1
        end = start + size * width
        statements.append((inserts[size], parameters[start:end]))
        start, count = end, count - size
    return statements


def in_transactions(conn: sqlite3.Connection, transactions: list[list[Statement]]) -> float:
    """Run each transaction's statements between ``BEGIN IMMEDIATE`` and ``COMMIT``, one
    transaction after the other: the seconds it took."""
    start = time.perf_counter()
    for statements in transactions:
        conn.execute("BEGIN IMMEDIATE")
        for statement, parameters in statements:
            conn.execute(statement, parameters)
        conn.execute("COMMIT")
    return time.perf_counter() - start


def fill(path: Path, items: list[Payload], per_stream: int) -> None:
    """Write the events in one transaction (setup, not timed); the close checkpoints."""
    _insert(path, raw_rows(placements(len(items), per_stream), items))


def _insert(path: Path, rows: list[RawRow], snapshot: tuple[Any, ...] | None = None) -> None:
    """A fresh database holding ``rows`` (and a snapshot table with ``snapshot``)."""
    conn = create(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT, rows)
        if snapshot is not None:
            conn.execute(SNAPSHOTS)
            conn.execute(INSERT_SNAPSHOT, snapshot)
        conn.execute("COMMIT")
    finally:
        conn.close()


def decode_rows(rows: Iterable[Any]) -> int:
    """Decode the data and metadata of each row: how many rows there were."""
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
        decode_rows(conn.execute(READ_STREAM + " LIMIT 10", ("invoice-0",)))
        start = time.perf_counter()
        count = decode_rows(conn.execute(READ_STREAM, ("invoice-0",)))
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    return Measurement(count, elapsed)


def scan(conn: sqlite3.Connection, page: int) -> int:
    """Read the whole log in pages of ``page`` rows by position, decoding each row."""
    after, total = 0, 0
    while True:
        rows = conn.execute(READ_PAGE, (after, page)).fetchall()
        total += decode_rows(rows)
        if len(rows) < page:
            return total
        after = rows[-1][0]


def read_all(directory: Path, items: list[Payload], per_stream: int, page: int) -> Measurement:
    """Scan the log in pages of ``page`` by position (also the subscription's ceiling)."""
    path = directory / "raw.db"
    fill(path, items, per_stream)
    conn = connect(path)
    try:
        decode_rows(conn.execute(READ_PAGE, (0, 10)).fetchall())
        start = time.perf_counter()
        count = scan(conn, page)
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    return Measurement(count, elapsed)


def envelope_rows(stream: str, envelopes: list[eskit.NewEvent]) -> list[RawRow]:
    """The rows of ``envelopes`` as eskit stores them, versions 0, 1, 2, … of ``stream``."""
    encode = msgspec.json.encode
    now = time.time_ns() // 1_000
    return [
        (id_, stream, version, e.type, encode(e.data).decode(), encode(e.metadata).decode(), now)
        for version, (id_, e) in enumerate(zip(event_ids(len(envelopes)), envelopes, strict=True))
    ]


def load_invoice(directory: Path, items: list[Payload], loads: int, snapshots: bool) -> Measurement:
    """The rows eskit's load reads, read ``loads`` times with plain SQL, decoding data and
    metadata (and the snapshot's state): the whole stream, or the newest snapshot and the
    events after it."""
    history = invoices.history(items)
    rows = envelope_rows(invoices.STREAM, invoices.envelopes(history))
    model = invoices.WITH_SNAPSHOTS
    snapshot = None
    if snapshots:
        assert model.to_snapshot is not None
        state = msgspec.json.encode(model.to_snapshot(invoices.final_state(history))).decode()
        last, now = len(rows) - 1, time.time_ns() // 1_000
        snapshot = (invoices.STREAM, model.snapshot_version, last, state, now)
    path = directory / "raw.db"
    _insert(path, rows, snapshot)
    conn = connect(path)
    try:
        decode_rows(conn.execute(READ_STREAM + " LIMIT 10", (invoices.STREAM,)))
        snapshot_version = model.snapshot_version if snapshots else None
        start = time.perf_counter()
        folded = [_load_once(conn, snapshot_version) for _ in range(loads)]
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    return Measurement(sum(n == len(rows) for n in folded), elapsed)


def _load_once(conn: sqlite3.Connection, snapshot_version: int | None) -> int:
    """One load: the newest snapshot (if wanted) and the events after it; returns how many
    events that covers (the snapshot's version + 1, plus the events read)."""
    after = -1
    if snapshot_version is not None:
        version, state = conn.execute(READ_SNAPSHOT, (invoices.STREAM, snapshot_version)).fetchone()
        msgspec.json.decode(state)
        after = version
    return after + 1 + decode_rows(conn.execute(READ_STREAM_FROM, (invoices.STREAM, after + 1)))


def written_after(conn: Any, mark: int) -> int:
    """How many events a timed run wrote after position ``mark`` (checked after the clock)."""
    found: int = conn.execute("SELECT count(*) FROM events WHERE position > ?", (mark,)).fetchone()[
        0
    ]
    return found
