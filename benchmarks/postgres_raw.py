"""The PostgreSQL ceiling: plain psycopg doing the same durable writes and reads as eskit.

Same server, same durability (the server's own settings), same table (eskit's schema,
created by eskit's migrations), same gap-free positions: every write transaction takes the
lock of the single ``eskit_head`` row, numbers its rows from it, moves it and commits, so
commit order is position order exactly as in eskit. Each write is done the fastest honest
way found on this machine:

- one event: a single statement in autocommit mode, ``WITH head AS (UPDATE eskit_head SET
  position = position + 1 RETURNING position) INSERT INTO eskit_events ... SELECT ... FROM
  head`` — lock, number, insert, move the head and commit in one round trip (an explicit
  ``BEGIN; UPDATE ... RETURNING; INSERT; COMMIT`` ran at ~0.5 of its rate, pipelined
  about the same);
- a batch: ``BEGIN``, ``UPDATE eskit_head ... RETURNING position``, the rows by ``COPY``,
  ``COMMIT`` (``COPY`` beat ``executemany`` and a single ``INSERT ... SELECT FROM unnest``).

Rows (ids, JSON text, timestamps) are prepared before the clock; writes check nothing
beyond the table's constraints (no expected version, no idempotency lookup). Reads decode
``data`` and ``metadata`` with msgspec and build nothing else (psycopg's default loaders:
the id arrives as ``uuid.UUID``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Final

import msgspec
import psycopg
import psycopg_pool

from benchmarks import postgres
from benchmarks.common import EVENT_TYPE, Measurement, Payload, payloads, placements
from benchmarks.postgres import CHECK, COLUMNS, Row
from benchmarks.postgres_eskit import PER_INVOICE
from benchmarks.projection import BATCH, PG_UPSERT, SCHEMA, TABLE, counted_rows

WARM_UP: Final = 20
APPEND_ONE: Final = (
    "WITH head AS (UPDATE eskit_head SET position = position + 1 RETURNING position)"
    f" INSERT INTO eskit_events (position, {COLUMNS})"
    " SELECT position, %s, %s, %s, %s, %s, %s, %s, %s FROM head"
)
MOVE_HEAD: Final = "UPDATE eskit_head SET position = position + %s RETURNING position"
COPY: Final = f"COPY eskit_events (position, {COLUMNS}) FROM STDIN"
READ_PAGE: Final = (
    "SELECT position, id, stream, version, type, data, metadata, recorded_at"
    " FROM eskit_events WHERE position > %s ORDER BY position LIMIT %s"
)


def _warm_up_rows() -> list[Row]:
    return postgres.rows(placements(WARM_UP, 1, "warmup"), payloads(WARM_UP, seed=1), 10**9)


def read_head(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT position FROM eskit_head").fetchone()
    assert row is not None
    return int(row[0])


def append_one_at_a_time(directory: Path, items: list[Payload]) -> Measurement:
    """One event per transaction, to new streams, one after the other."""
    rows = postgres.rows(placements(len(items), 1), items)
    with postgres.fresh_schema() as schema:
        asyncio.run(postgres.prepare(schema))
        with postgres.connect(schema) as conn:
            for row in _warm_up_rows():
                conn.execute(APPEND_ONE, row, prepare=True)
            mark = read_head(conn)
            start = time.perf_counter()
            for row in rows:
                conn.execute(APPEND_ONE, row, prepare=True)
            elapsed = time.perf_counter() - start
            count = postgres.written(conn.execute(CHECK, {"mark": mark}).fetchone(), mark)
    return Measurement(count, elapsed)


def append_concurrently(directory: Path, items: list[Payload], tasks: int) -> Measurement:
    """``tasks`` asyncio tasks, each appending its share of events one at a time to its own
    stream, each event one transaction on a connection from a pool of ``tasks``."""
    return asyncio.run(_append_concurrently(items, tasks))


async def _append_concurrently(items: list[Payload], tasks: int) -> Measurement:
    per_task = len(items) // tasks
    assert per_task * tasks == len(items)
    rows = postgres.rows(placements(len(items), per_task), items)
    with postgres.fresh_schema() as schema:
        await postgres.prepare(schema)
        pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]]
        pool = psycopg_pool.AsyncConnectionPool(
            postgres.database_url(),
            min_size=tasks,
            max_size=tasks,
            kwargs={"autocommit": True, "options": f"-c search_path={schema}"},
            open=False,
        )
        await pool.open(wait=True, timeout=30)
        try:

            async def append(row: Row) -> None:
                async with pool.connection() as conn:
                    await conn.execute(APPEND_ONE, row, prepare=True)

            async def client(share: list[Row]) -> None:
                for row in share:
                    await append(row)

            for row in _warm_up_rows():
                await append(row)
            async with pool.connection() as conn:
                mark = await _head_async(conn)
            start = time.perf_counter()
            shares = [rows[k * per_task : (k + 1) * per_task] for k in range(tasks)]
            await asyncio.gather(*(client(share) for share in shares))
            elapsed = time.perf_counter() - start
            async with pool.connection() as conn:
                check = await (await conn.execute(CHECK, {"mark": mark})).fetchone()
        finally:
            await pool.close()
    return Measurement(postgres.written(check, mark), elapsed)


async def _head_async(conn: psycopg.AsyncConnection[Any]) -> int:
    row = await (await conn.execute("SELECT position FROM eskit_head")).fetchone()
    assert row is not None
    return int(row[0])


def append_batches(directory: Path, items: list[Payload], per_append: int) -> Measurement:
    """All events into one stream, ``per_append`` rows per transaction (``COPY``)."""
    rows = postgres.rows(placements(len(items), len(items)), items)
    batches = [rows[i : i + per_append] for i in range(0, len(rows), per_append)]
    with postgres.fresh_schema() as schema:
        asyncio.run(postgres.prepare(schema))
        with postgres.connect(schema) as conn:
            for row in _warm_up_rows():
                conn.execute(APPEND_ONE, row, prepare=True)
            mark = read_head(conn)
            start = time.perf_counter()
            for batch in batches:
                with conn.transaction():
                    moved = conn.execute(MOVE_HEAD, (len(batch),), prepare=True).fetchone()
                    assert moved is not None
                    first = moved[0] - len(batch) + 1
                    with conn.cursor().copy(COPY) as copy:
                        for position, row in enumerate(batch, first):
                            copy.write_row((position, *row))
            elapsed = time.perf_counter() - start
            count = postgres.written(conn.execute(CHECK, {"mark": mark}).fetchone(), mark)
    return Measurement(count, elapsed)


def decode_rows(rows: list[tuple[Any, ...]]) -> None:
    decode = msgspec.json.decode
    for _position, _id, _stream, _version, _type, data, metadata, _recorded in rows:
        decode(data)
        decode(metadata)


def read_all(directory: Path, items: list[Payload], per_stream: int, page: int) -> Measurement:
    """Scan the log (filled untimed, as eskit's) by position in pages of ``page`` rows,
    decoding data and metadata; the count holds only if the last position is the head."""
    rows = postgres.rows(placements(len(items), per_stream), items)
    with postgres.fresh_schema() as schema:
        asyncio.run(postgres.prepare(schema, rows))
        del rows
        with postgres.connect(schema) as conn:
            decode_rows(conn.execute(READ_PAGE, (0, 10)).fetchall())
            count, after = 0, 0
            start = time.perf_counter()
            while True:
                got = conn.execute(READ_PAGE, (after, page)).fetchall()
                decode_rows(got)
                count += len(got)
                if len(got) < page:
                    break
                after = got[-1][0]
            elapsed = time.perf_counter() - start
            last = got[-1][0] if got else after
            head = read_head(conn)
    return Measurement(count if last == head else 0, elapsed)


PG_SCHEMA = SCHEMA.format(invoice_totals=TABLE)
PG_READ = (
    "SELECT position, id, stream, version, type, data, metadata, recorded_at FROM eskit_events"
    " WHERE position > %s AND type = %s ORDER BY position LIMIT %s"
)


def catch_up(directory: Path, items: list[Payload]) -> Measurement:
    """P1's read model with plain psycopg: per batch one transaction that reads the batch,
    decodes data and metadata, upserts with ``executemany`` and moves a checkpoint row."""
    rows = postgres.rows(placements(len(items), PER_INVOICE), items)
    upsert = PG_UPSERT.format(invoice_totals=TABLE)
    decode = msgspec.json.decode
    with postgres.fresh_schema() as schema:
        asyncio.run(postgres.prepare(schema, rows))
        del rows
        with postgres.connect(schema) as conn:
            start = time.perf_counter()
            with conn.transaction():
                conn.execute(PG_SCHEMA)
                conn.execute("CREATE TABLE checkpoints (name TEXT PRIMARY KEY, position BIGINT)")
                conn.execute("INSERT INTO checkpoints VALUES ('totals', 0)")
            after = 0
            while True:
                with conn.transaction():
                    got = conn.execute(
                        PG_READ, (after, EVENT_TYPE, BATCH), prepare=False
                    ).fetchall()
                    upserts = []
                    for position, _id, stream, _version, _type, data, metadata, _at in got:
                        decode(metadata)
                        upserts.append((stream, decode(data)["amount"]))
                        after = position
                    conn.cursor().executemany(upsert, upserts)
                    conn.execute(
                        "UPDATE checkpoints SET position = %s WHERE name = 'totals'", (after,)
                    )
                if len(got) < BATCH:
                    break
            elapsed = time.perf_counter() - start
            totals = conn.execute(f"SELECT sum(events), sum(amount) FROM {TABLE}").fetchone()
            head = read_head(conn)
    assert totals is not None
    return Measurement(counted_rows(totals, items, after, head), elapsed)
