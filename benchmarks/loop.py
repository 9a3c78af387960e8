"""Does the event loop stay responsive when short reads or commits run on it? (issue 13
point 4)

W1c's load (5,000 one-event appends from 100 concurrent tasks) runs beside 20 tasks that
load small aggregates the way a command does (``stream_version``, then
``read_from_snapshot`` of a 10-event stream: one snapshot probe and one page), and a 1 ms
heartbeat whose lag is how long the loop was kept from it. Once with every read handed to
a worker thread, once with the SQLite engine's ``short_reads_on_loop``. Then the same
appends from one task, one at a time, beside the heartbeat alone: once with the engine's
``loop_commits`` (the default: an append commits on the loop when the loop has nothing
else to run), once with every append handed to the committer thread. Reported: the lag's
p50, p99 and max, the appends' and reads' rates. Run: ``python -m benchmarks.loop``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tempfile
import time
from pathlib import Path

import eskit
from eskit.store.sqlite import SQLiteStore

APPENDS = 5_000
TASKS = 100
READERS = 20
"""Tasks loading aggregates beside the appends (``--loaders``; 0: W1c and the heartbeat)."""
STREAMS = 200
EVENTS_EACH = 10


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def run(
    path: Path, on_loop: bool, loaders: int, tasks: int = TASKS, loop_commits: bool = True
) -> dict[str, float]:
    async with SQLiteStore(path) as store:
        store.engine.short_reads_on_loop = on_loop
        store.engine.loop_commits = loop_commits
        for i in range(STREAMS):
            await store.append(f"agg-{i}", [eskit.NewEvent("E", {"n": n}) for n in range(10)])
        done = asyncio.Event()
        lags: list[float] = []
        reads = 0

        async def heartbeat() -> None:
            while not done.is_set():
                start = time.perf_counter()
                await asyncio.sleep(0.001)
                lags.append(time.perf_counter() - start - 0.001)

        async def reader(task: int) -> None:
            nonlocal reads
            n = task
            while not done.is_set():
                stream = f"agg-{n % STREAMS}"
                assert await store.stream_version(stream) == EVENTS_EACH - 1
                _, events = await store.read_from_snapshot(stream, 1)
                assert len([e async for e in events]) == EVENTS_EACH
                reads += 1
                n += loaders

        async def appender(task: int) -> None:
            for n in range(task, APPENDS, tasks):
                await store.append(f"new-{n}", [eskit.NewEvent("E", {"n": n})], eskit.NO_STREAM)

        gc.collect()
        gc.freeze()  # earlier runs' garbage is not this run's pause
        try:
            beat = asyncio.create_task(heartbeat())
            readers = [asyncio.create_task(reader(t)) for t in range(loaders)]
            started = time.perf_counter()
            await asyncio.gather(*(appender(t) for t in range(tasks)))
            elapsed = time.perf_counter() - started
            done.set()
            await asyncio.gather(beat, *readers)
        finally:
            gc.unfreeze()
    return {
        "p50": percentile(lags, 0.5) * 1e3,
        "p99": percentile(lags, 0.99) * 1e3,
        "max": max(lags) * 1e3,
        "appends/s": APPENDS / elapsed,
        "loads/s": reads / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--loaders", type=int, default=READERS, help="tasks loading aggregates")
    args = parser.parse_args()
    repeat, loaders = args.repeat, args.loaders
    for on_loop in (False, True) if loaders else (False,):
        for attempt in range(repeat):
            with tempfile.TemporaryDirectory() as directory:
                figures = asyncio.run(run(Path(directory) / "events.db", on_loop, loaders))
            where = "on the loop" if on_loop else "hand-off   "
            print(f"W1c, short reads {where} run {attempt + 1}: {_show(figures)}")
    for loop_commits in (True, False):
        for attempt in range(repeat):
            with tempfile.TemporaryDirectory() as directory:
                path = Path(directory) / "events.db"
                figures = asyncio.run(run(path, False, 0, tasks=1, loop_commits=loop_commits))
            where = "on the loop" if loop_commits else "hand-off   "
            print(f"one appender, commits {where} run {attempt + 1}: {_show(figures)}")


def _show(figures: dict[str, float]) -> str:
    return (
        f"heartbeat lag p50 {figures['p50']:.2f} ms, p99 {figures['p99']:.2f} ms, max"
        f" {figures['max']:.2f} ms; {figures['appends/s']:,.0f} appends/s,"
        f" {figures['loads/s']:,.0f} loads/s"
    )


if __name__ == "__main__":
    main()
