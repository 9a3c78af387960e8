"""The eskit side on PostgreSQL: the same workloads through the public store API.

Each function opens ``eskit.open_store("postgresql://…?schema=…")`` with its defaults on a
fresh schema of the run's database (see ``benchmarks/postgres.py``), sets up and warms up
untimed, then times only the workload. What was written is checked after the clock with
the same SQL as raw's (gap-free positions, the head, dense versions).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import eskit
from benchmarks import postgres
from benchmarks.common import Measurement, Payload, new_events, placements
from benchmarks.eskit_side import (
    read_in_pages,
    timed_batches,
    timed_one_at_a_time,
    warm_up_writes,
)
from benchmarks.projection import TABLE, PgInvoiceTotals, counted_rows
from eskit.projections import ProjectionRunner

PER_INVOICE = 100
"""Events per stream in the catch-up workload, as in P1."""


async def _written(schema: str, mark: int) -> int:
    """The events past ``mark`` if positions, head and versions are right (else 0)."""
    async with await postgres.aconnect(schema) as conn:
        check = await (await conn.execute(postgres.CHECK, {"mark": mark})).fetchone()
    return postgres.written(check, mark)


async def append_one_at_a_time(directory: Path, items: list[Payload]) -> Measurement:
    """One event per append to a new stream, each append awaited before the next."""
    with postgres.fresh_schema() as schema:
        async with eskit.open_store(postgres.store_url(schema)) as store:
            mark, elapsed = await timed_one_at_a_time(store, items)
        return Measurement(await _written(schema, mark), elapsed)


async def append_concurrently(directory: Path, items: list[Payload], tasks: int) -> Measurement:
    """``tasks`` concurrent tasks, each appending its share one event at a time to its own
    stream with the exact expected version (group commit's case)."""
    per_task = len(items) // tasks
    assert per_task * tasks == len(items)
    events = new_events(items)
    with postgres.fresh_schema() as schema:
        async with eskit.open_store(postgres.store_url(schema)) as store:

            async def client(k: int) -> None:
                stream = f"invoice-{k}"
                expected: eskit.ExpectedVersion = eskit.NO_STREAM
                for event in events[k * per_task : (k + 1) * per_task]:
                    expected = (await store.append(stream, [event], expected)).last_version

            await warm_up_writes(store)
            mark = await store.last_position()
            start = time.perf_counter()
            await asyncio.gather(*(client(k) for k in range(tasks)))
            elapsed = time.perf_counter() - start
        return Measurement(await _written(schema, mark), elapsed)


async def append_batches(directory: Path, items: list[Payload], per_append: int) -> Measurement:
    """All events into one stream, ``per_append`` per append, with exact expected versions."""
    with postgres.fresh_schema() as schema:
        async with eskit.open_store(postgres.store_url(schema)) as store:
            mark, elapsed = await timed_batches(store, items, per_append)
        return Measurement(await _written(schema, mark), elapsed)


async def read_all(
    directory: Path, items: list[Payload], per_stream: int, page: int
) -> Measurement:
    """Read the log (filled untimed with the same rows as raw's) with
    ``read_all(after=checkpoint, limit=page)``, page after page."""
    rows = postgres.rows(placements(len(items), per_stream), items)
    with postgres.fresh_schema() as schema:
        await postgres.prepare(schema, rows)
        del rows
        async with eskit.open_store(postgres.store_url(schema)) as store:
            async for _ in store.read_all(limit=10):
                pass
            start = time.perf_counter()
            count, after = await read_in_pages(store, page)
            elapsed = time.perf_counter() - start
            head = await store.last_position()
    return Measurement(count if after == head else 0, elapsed)


async def catch_up(directory: Path, items: list[Payload]) -> Measurement:
    """``run_until_caught_up()`` of P1's projection, its read model in the store's schema
    (filled untimed with the same rows as raw's)."""
    rows = postgres.rows(placements(len(items), PER_INVOICE), items)
    with postgres.fresh_schema() as schema:
        await postgres.prepare(schema, rows)
        del rows
        async with eskit.open_store(postgres.store_url(schema)) as store:
            runner = ProjectionRunner(store, [PgInvoiceTotals()])
            start = time.perf_counter()
            await runner.run_until_caught_up()
            elapsed = time.perf_counter() - start
            head = await store.last_position()
            totals = await runner.database.read(
                lambda conn: conn.execute(
                    f"SELECT sum(events), sum(amount) FROM {TABLE}"
                ).fetchone()
            )
            checkpoint = await runner.database.read(
                lambda conn: conn.execute(
                    "SELECT position FROM eskit_projections WHERE name = 'totals'"
                ).fetchone()[0]
            )
            await runner.stop()
    return Measurement(counted_rows(totals, items, checkpoint, head), elapsed)
