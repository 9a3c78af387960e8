"""The raw drivers' sides of the peer workloads that ``raw.py`` and ``postgres_raw.py`` do not
already have: a command with nothing but SQL, and PostgreSQL's load of one stream.

A raw command reads its stream's rows and decodes them (the load), then writes one prepared
row at the next version in its own transaction (the event): ``BEGIN IMMEDIATE; INSERT;
COMMIT`` on SQLite (WAL, ``synchronous=FULL``), PG1's single autocommit statement on
PostgreSQL. Nothing is checked beyond the tables' constraints.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from benchmarks import postgres, postgres_raw, raw
from benchmarks.common import Measurement, Payload, RawRow, payloads, placements, raw_rows
from benchmarks.peer_data import Backend, existing_ids, lines

PG_READ_STREAM = (
    "SELECT position, id, stream, version, type, data, metadata, recorded_at"
    " FROM eskit_events WHERE stream = %s ORDER BY version"
)
WARM_UP = raw.WARM_UP


def _streams(items: list[Payload], existing: bool) -> list[str]:
    """The stream each command writes to: a new one each, or the existing ones in turn."""
    if existing:
        return [f"invoice-{x.invoice_id}" for x in lines(items)]
    return [f"invoice-{data['invoice_id']}" for data, _ in items]


def _created(count: int) -> list[tuple[str, int]]:
    """Where the existing invoices' first events go (version 0 of each stream)."""
    return [(f"invoice-{invoice_id}", 0) for invoice_id in existing_ids()[:count]]


def commands(
    backend: Backend, directory: Path, items: list[Payload], existing: bool
) -> Measurement:
    """One command per payload: read the stream, then append one row at its next version."""
    streams = _streams(items, existing)
    setup = _created(len(existing_ids())) if existing else []
    if backend == "sqlite":
        return _sqlite_commands(directory, items, streams, setup)
    return _postgres_commands(items, streams, setup)


def _sqlite_commands(
    directory: Path, items: list[Payload], streams: list[str], setup: list[tuple[str, int]]
) -> Measurement:
    rows = raw_rows([(stream, 0) for stream in streams], items)
    conn = raw.create(directory / "raw.db")
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(raw.INSERT, raw_rows(setup, payloads(len(setup), seed=2), 10**8))
        conn.execute("COMMIT")
        for row in raw_rows(placements(WARM_UP, 1, "warmup"), payloads(WARM_UP, seed=1), 10**9):
            _sqlite_command(conn, row)
        mark = conn.execute("SELECT max(position) FROM events").fetchone()[0]
        start = time.perf_counter()
        for row in rows:
            _sqlite_command(conn, row)
        elapsed = time.perf_counter() - start
        written = raw.written_after(conn, mark)
    finally:
        conn.close()
    return Measurement(written, elapsed)


def _sqlite_command(conn: Any, row: RawRow) -> None:
    version = raw.decode_rows(conn.execute(raw.READ_STREAM, (row[1],)))
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(raw.INSERT, (row[0], row[1], version, *row[3:]))
    conn.execute("COMMIT")


def _postgres_commands(
    items: list[Payload], streams: list[str], setup: list[tuple[str, int]]
) -> Measurement:
    rows = postgres.rows([(stream, 0) for stream in streams], items)
    with postgres.fresh_schema() as schema:
        asyncio.run(
            postgres.prepare(schema, postgres.rows(setup, payloads(len(setup), seed=2), 10**8))
        )
        with postgres.connect(schema) as conn:
            warm = postgres.rows(placements(WARM_UP, 1, "warmup"), payloads(WARM_UP, seed=1), 10**9)
            for row in warm:
                _postgres_command(conn, row)
            mark = postgres_raw.read_head(conn)
            start = time.perf_counter()
            for row in rows:
                _postgres_command(conn, row)
            elapsed = time.perf_counter() - start
            check = conn.execute(postgres.CHECK, {"mark": mark}).fetchone()
    assert check is not None
    return Measurement(int(check[0]), elapsed)


def _postgres_command(conn: Any, row: postgres.Row) -> None:
    got = conn.execute(PG_READ_STREAM, (row[1],), prepare=True).fetchall()
    postgres_raw.decode_rows(got)
    conn.execute(
        postgres_raw.APPEND_ONE, (row[0], row[1], row[2], len(got), *row[4:]), prepare=True
    )


def appends(backend: Backend, directory: Path, items: list[Payload]) -> Measurement:
    """One row per transaction to a new stream (W1's and PG1's raw sides)."""
    if backend == "sqlite":
        return raw.write(directory, items, per_stream=1, per_tx=1)
    return postgres_raw.append_one_at_a_time(directory, items)


def load(backend: Backend, directory: Path, items: list[Payload], loads: int) -> Measurement:
    """The stream's rows read with one SELECT and decoded, ``loads`` times."""
    if backend == "sqlite":
        return raw.load_invoice(directory, items, loads, snapshots=False)
    rows = postgres.rows(placements(len(items), len(items)), items)
    with postgres.fresh_schema() as schema:
        asyncio.run(postgres.prepare(schema, rows))
        with postgres.connect(schema) as conn:
            postgres_raw.decode_rows(
                conn.execute(PG_READ_STREAM + " LIMIT 10", ("invoice-0",)).fetchall()
            )
            start = time.perf_counter()
            counts = []
            for _ in range(loads):
                got = conn.execute(PG_READ_STREAM, ("invoice-0",)).fetchall()
                postgres_raw.decode_rows(got)
                counts.append(len(got))
            elapsed = time.perf_counter() - start
    return Measurement(sum(n == len(rows) for n in counts), elapsed)
