"""PG6: several processes appending to one PostgreSQL store at once, eskit and raw.

Each side starts ``PROCESSES`` processes (``spawn``: nothing shared but the database). Every
process takes its share of the events, warms up untimed on streams of its own, waits for the
others, then appends its share one event at a time to a stream of its own with the exact
expected version. The time is from the first process's start to the last one's end (the
monotonic clock is the machine's, so the processes' readings compare). What was written is
checked after the clock with ``postgres.CHECK`` (gap-free positions, head, dense versions):
with the head row's lock, the processes' transactions take turns, as in PG2.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from pathlib import Path
from typing import Any, Final

import psycopg

import eskit
from benchmarks import postgres
from benchmarks.common import Measurement, Payload, new_events, payloads, placements
from benchmarks.postgres_raw import APPEND_ONE

PROCESSES: Final = 4
WARM_UP: Final = 20
Span = tuple[float, float]
"""When one process started and ended its timed appends (``time.monotonic``)."""


def _eskit_process(url: str, k: int, items: list[Payload], ready: Any, go: Any, spans: Any) -> None:
    spans.put(asyncio.run(_eskit_appends(url, k, items, ready, go)))


async def _eskit_appends(url: str, k: int, items: list[Payload], ready: Any, go: Any) -> Span:
    events = new_events(items)
    async with eskit.open_store(url) as store:
        for n, event in enumerate(new_events(payloads(WARM_UP, seed=k + 1))):
            await store.append(f"warmup-{k}-{n}", [event], eskit.NO_STREAM)
        ready.wait()
        go.wait()
        start = time.monotonic()
        expected: eskit.ExpectedVersion = eskit.NO_STREAM
        for event in events:
            expected = (await store.append(f"invoice-{k}", [event], expected)).last_version
        return start, time.monotonic()


def _raw_process(url: str, k: int, items: list[Payload], ready: Any, go: Any, spans: Any) -> None:
    schema = url.rsplit("schema=", 1)[1]  # a spawned process knows no run database: pass it
    rows = postgres.rows(placements(len(items), len(items), f"invoice{k}"), items, k * 10**6)
    warm_up = postgres.rows(
        placements(WARM_UP, 1, f"warmup{k}"), payloads(WARM_UP, seed=k + 1), 10**9 + k * 10**6
    )
    database = url.split("?", 1)[0]
    with psycopg.connect(database, autocommit=True, options=f"-c search_path={schema}") as conn:
        for row in warm_up:
            conn.execute(APPEND_ONE, row, prepare=True)
        ready.wait()
        go.wait()
        start = time.monotonic()
        for row in rows:
            conn.execute(APPEND_ONE, row, prepare=True)
        spans.put((start, time.monotonic()))


def _run(side: str, items: list[Payload]) -> Measurement:
    """Run ``PROCESSES`` processes of ``side`` on a fresh schema; measure and check."""
    share = len(items) // PROCESSES
    assert share * PROCESSES == len(items)
    context = multiprocessing.get_context("spawn")
    ready, go = context.Barrier(PROCESSES + 1), context.Barrier(PROCESSES + 1)
    spans = context.Queue()
    with postgres.fresh_schema() as schema:
        asyncio.run(postgres.prepare(schema))
        target = _eskit_process if side == "eskit" else _raw_process
        where = postgres.store_url(schema)
        children = [
            context.Process(
                target=target,
                args=(where, k, items[k * share : (k + 1) * share], ready, go, spans),
            )
            for k in range(PROCESSES)
        ]
        for child in children:
            child.start()
        try:
            ready.wait(timeout=120)
            with postgres.connect(schema) as conn:
                row = conn.execute("SELECT position FROM eskit_head").fetchone()
                assert row is not None
                mark = int(row[0])
                go.wait(timeout=60)
                ended = [spans.get(timeout=300) for _ in children]
                check = conn.execute(postgres.CHECK, {"mark": mark}).fetchone()
        finally:
            for child in children:
                child.join(timeout=30)
                if child.is_alive():
                    child.kill()
    elapsed = max(end for _, end in ended) - min(start for start, _ in ended)
    return Measurement(postgres.written(check, mark), elapsed)


async def eskit_appends(directory: Path, items: list[Payload]) -> Measurement:
    """eskit's side: each process one ``PostgresStore`` (defaults)."""
    return await asyncio.to_thread(_run, "eskit", items)


def raw_appends(directory: Path, items: list[Payload]) -> Measurement:
    """Raw's side: each process one autocommit connection and PG1's single statement."""
    return _run("raw", items)
