"""The read side through eskit: a ``ProjectionRunner`` building the P workloads' read model.

P1 times ``run_until_caught_up()`` over a filled log; P2 times each append until
``runner.wait_until(its last position)`` returns while the runner follows the log live.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import eskit
from benchmarks.common import Measurement, Payload, fill_log, new_events, payloads, placements
from benchmarks.eskit_side import in_tasks
from benchmarks.projection import InvoiceTotals, counted
from eskit.projections import ProjectionRunner, state

PER_STREAM = 100
WARM_UP = 20


def _url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


async def _counted(store: eskit.EventStore, runner: ProjectionRunner, items: list[Payload]) -> int:
    """What the read model holds (checked after the clock)."""
    head = await store.last_position()

    def check(conn: sqlite3.Connection) -> int:
        live = state.load(conn, InvoiceTotals.name)
        return counted(conn, items, live.position if live else -1, head)

    return await runner.database.read(check)


async def catch_up(directory: Path, items: list[Payload]) -> Measurement:
    """``run_until_caught_up()`` of a fresh projection over a log of ``items``."""
    path = directory / "events.db"
    fill_log(path, [items], PER_STREAM)
    async with eskit.open_store(_url(path)) as store:
        async for _ in store.read_all(limit=10):
            pass
        runner = ProjectionRunner(store, [InvoiceTotals()])
        start = time.perf_counter()
        await runner.run_until_caught_up()
        elapsed = time.perf_counter() - start
        count = await _counted(store, runner, items)
        await runner.stop()
    return Measurement(count, elapsed)


async def latency(
    directory: Path, items: list[Payload], appenders: int, spacing: float
) -> Measurement:
    """Append each event to a new stream and time it until ``runner.wait_until`` of its
    position returns, from ``appenders`` concurrent tasks, each pausing ``spacing``
    seconds between its appends; the runner follows the log live."""
    path = directory / "events.db"
    fill_log(path, [], PER_STREAM)
    warm = payloads(WARM_UP, seed=1)
    events = new_events(items)
    streams = [stream for stream, _ in placements(len(items), 1)]
    latencies = [0.0] * len(items)
    async with eskit.open_store(_url(path)) as store:
        runner = ProjectionRunner(store, [InvoiceTotals()])
        async with runner:
            for i, event in enumerate(new_events(warm)):
                result = await store.append(f"warmup-{i}", [event])
                await runner.wait_until(result.last_position)

            async def visible(i: int) -> None:
                start = time.perf_counter()
                result = await store.append(streams[i], [events[i]], eskit.NO_STREAM)
                await runner.wait_until(result.last_position)
                latencies[i] = time.perf_counter() - start
                if spacing:
                    await asyncio.sleep(spacing)

            start = time.perf_counter()
            await in_tasks(appenders, len(items), visible)
            elapsed = time.perf_counter() - start
            applied = await _counted(store, runner, warm + items)
    return Measurement(applied - WARM_UP if applied else 0, elapsed, tuple(latencies))
