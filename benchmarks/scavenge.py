"""A scavenge of a large store (``eskit.store.scavenge``): its size before and after, the time
it takes, and appends/s while it runs against appends/s without it.

    .venv/bin/python -m benchmarks.scavenge                       # 1,000,000 events, SQLite
    .venv/bin/python -m benchmarks.scavenge --events 100000       # a quicker run
    .venv/bin/python -m benchmarks.scavenge --url postgresql://postgres@127.0.0.1/test?schema=b

The store is filled through eskit (links and all): streams of ``PER_STREAM`` events of
~200 bytes, half of them then soft-deleted, so a scavenge removes half the log. Appends are
``WRITERS`` tasks appending one event at a time to streams of their own, on the same event
loop as the scavenge (the application's process, as when it scavenges itself); measured
alone (best of ``--repeat`` runs of ``--seconds``) and during the scavenge (from its start to
its end). Both figures come from the same run, on the same store. Nothing here is asserted
by the test suite: it measures and reports.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import eskit
from benchmarks.common import new_events, payloads
from eskit.store.scavenge import ScavengeReport, scavenge

PER_STREAM = 100
STREAMS_PER_APPEND = 10
WRITERS = 8


async def fill(store: eskit.EventStore, count: int) -> None:
    streams = count // PER_STREAM
    events = new_events(payloads(PER_STREAM))
    for first in range(0, streams, STREAMS_PER_APPEND):
        await store.append_many(
            [
                eskit.Append(f"{'gone' if n % 2 else 'kept'}-{n}", events)
                for n in range(first, min(first + STREAMS_PER_APPEND, streams))
            ]
        )
    gone = [f"gone-{n}" for n in range(1, streams, 2)]
    for first in range(0, len(gone), 200):
        await asyncio.gather(*(store.delete_stream(s) for s in gone[first : first + 200]))


async def appending(store: eskit.EventStore, until: asyncio.Event, writer: int) -> int:
    """Append one event at a time until ``until`` is set; how many."""
    count, event = 0, new_events(payloads(1))
    while not until.is_set():
        await store.append(f"live-{writer}", event)
        count += 1
    return count


async def appends_per_second(store: eskit.EventStore, seconds: float) -> float:
    until = asyncio.Event()
    tasks = [asyncio.create_task(appending(store, until, w)) for w in range(WRITERS)]
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    until.set()
    counts = await asyncio.gather(*tasks)
    return sum(counts) / (time.perf_counter() - started)


async def during_scavenge(store: eskit.EventStore, batch: int) -> tuple[ScavengeReport, float]:
    until = asyncio.Event()
    tasks = [asyncio.create_task(appending(store, until, w)) for w in range(WRITERS)]
    started = time.perf_counter()
    try:
        report = await scavenge(store, batch_size=batch)
    finally:
        until.set()
    counts = await asyncio.gather(*tasks)
    return report, sum(counts) / (time.perf_counter() - started)


def on_disk(url: str) -> int | None:
    if not url.startswith("sqlite"):
        return None
    path = Path(url.removeprefix("sqlite:///"))
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def mib(size: int | None) -> str:
    return "-" if size is None else f"{size / 2**20:,.1f} MiB"


async def main(args: argparse.Namespace) -> None:
    url = args.url or f"sqlite:///{tempfile.mkdtemp(prefix='eskit-scavenge-')}/events.db"
    async with eskit.open_store(url) as store:
        started = time.perf_counter()
        await fill(store, args.events)
        print(f"filled {args.events:,} events in {time.perf_counter() - started:.1f} s ({url})")
        alone = max([await appends_per_second(store, args.seconds) for _ in range(args.repeat)])
        disk_before = on_disk(url)
        report, during = await during_scavenge(store, args.batch_size)
        alone_after = await appends_per_second(store, args.seconds)
    disk_after = on_disk(url)
    print(f"events removed        {report.total:,} ({report.removed})")
    print(f"scavenge time         {report.seconds:.1f} s (batches of {args.batch_size})")
    print(f"store size            {mib(report.size_before)} -> {mib(report.size_after)}")
    print(f"files on disk         {mib(disk_before)} -> {mib(disk_after)}")
    print(f"maintenance           {report.maintenance}")
    print(f"appends/s alone       {alone:,.0f} (best of {args.repeat} x {args.seconds} s)")
    print(f"appends/s during      {during:,.0f} ({during / alone:.0%} of alone)")
    print(f"appends/s after       {alone_after:,.0f}")
    if args.url is None:
        for path in Path(url.removeprefix("sqlite:///")).parent.iterdir():
            os.remove(path)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--url", help="a store URL (default: a new SQLite file)")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
