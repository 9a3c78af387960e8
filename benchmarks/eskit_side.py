"""The eskit side: the same workloads through the public store API, on a SQLite file.

Each function opens ``eskit.open_store("sqlite:///...")`` with its defaults
(``synchronous=FULL``), sets up and warms up untimed, then times only the workload.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import eskit
from benchmarks.common import Measurement, Payload, new_events, payloads, placements

WARM_UP = 20


def _url(directory: Path) -> str:
    return f"sqlite:///{directory.resolve() / 'eskit.db'}"


async def _warm_up_writes(store: eskit.EventStore) -> None:
    for (stream, _), event in zip(
        placements(WARM_UP, 1, "warmup"), new_events(payloads(WARM_UP, seed=1)), strict=True
    ):
        await store.append(stream, [event], expected_version=eskit.NO_STREAM)


async def _written_since(store: eskit.EventStore, mark: int) -> int:
    """How many events the log holds after position ``mark`` (checked after the clock)."""
    count = 0
    async for _ in store.read_all(after=mark):
        count += 1
    return count


async def append_one_at_a_time(directory: Path, items: list[Payload]) -> Measurement:
    """One event per append to a new stream, each append awaited before the next."""
    events = new_events(items)
    streams = [stream for stream, _ in placements(len(events), 1)]
    async with eskit.open_store(_url(directory)) as store:
        await _warm_up_writes(store)
        mark = await store.last_position()
        start = time.perf_counter()
        for stream, event in zip(streams, events, strict=True):
            await store.append(stream, [event], expected_version=eskit.NO_STREAM)
        elapsed = time.perf_counter() - start
        written = await _written_since(store, mark)
    return Measurement(written, elapsed)


async def append_concurrently(directory: Path, items: list[Payload], tasks: int) -> Measurement:
    """One event per append to a new stream, issued by ``tasks`` concurrent asyncio tasks."""
    events = new_events(items)
    streams = [stream for stream, _ in placements(len(events), 1)]
    async with eskit.open_store(_url(directory)) as store:

        async def client(first: int) -> None:
            for i in range(first, len(events), tasks):
                await store.append(streams[i], [events[i]], expected_version=eskit.NO_STREAM)

        await _warm_up_writes(store)
        mark = await store.last_position()
        start = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(tasks)))
        elapsed = time.perf_counter() - start
        written = await _written_since(store, mark)
    return Measurement(written, elapsed)


async def append_batches(directory: Path, items: list[Payload], per_append: int) -> Measurement:
    """All events into one stream, ``per_append`` per append, with exact expected versions."""
    events = new_events(items)
    batches = [events[i : i + per_append] for i in range(0, len(events), per_append)]
    async with eskit.open_store(_url(directory)) as store:
        await _warm_up_writes(store)
        mark = await store.last_position()
        expected: eskit.ExpectedVersion = eskit.NO_STREAM
        start = time.perf_counter()
        for batch in batches:
            expected = (await store.append("invoice-0", batch, expected)).last_version
        elapsed = time.perf_counter() - start
        written = await _written_since(store, mark)
    return Measurement(written, elapsed)


async def _fill(directory: Path, items: list[Payload], per_stream: int) -> None:
    """Write the events through eskit, 100 per append (appends to distinct streams run 50
    at a time), then close the store so its WAL is checkpointed before anything is timed."""
    events = new_events(items)
    where = placements(len(events), per_stream)
    batches: list[tuple[str, list[eskit.NewEvent]]] = []
    for (stream, version), event in zip(where, events, strict=True):
        if version % 100 == 0:
            batches.append((stream, []))
        batches[-1][1].append(event)
    async with eskit.open_store(_url(directory)) as store:
        if per_stream <= 100:  # one append per stream: they may run concurrently
            for i in range(0, len(batches), 50):
                await asyncio.gather(*(store.append(s, b) for s, b in batches[i : i + 50]))
        else:
            for stream, batch in batches:
                await store.append(stream, batch)


async def read_stream(directory: Path, items: list[Payload]) -> Measurement:
    """Read one stream of all the events back with ``read_stream``."""
    await _fill(directory, items, per_stream=len(items))
    async with eskit.open_store(_url(directory)) as store:
        async for _ in store.read_stream("invoice-0", limit=10):
            pass
        count = 0
        start = time.perf_counter()
        async for _ in store.read_stream("invoice-0"):
            count += 1
        elapsed = time.perf_counter() - start
    return Measurement(count, elapsed)


async def read_all(
    directory: Path, items: list[Payload], per_stream: int, page: int
) -> Measurement:
    """Read the whole log with ``read_all(after=checkpoint, limit=page)``, page after page."""
    await _fill(directory, items, per_stream)
    async with eskit.open_store(_url(directory)) as store:
        async for _ in store.read_all(limit=10):
            pass
        count, after = 0, 0
        start = time.perf_counter()
        while True:
            got = 0
            async for event in store.read_all(after=after, limit=page):
                got += 1
                after = event.position
            count += got
            if got < page:
                break
        elapsed = time.perf_counter() - start
    return Measurement(count, elapsed)


async def subscribe(directory: Path, items: list[Payload], per_stream: int) -> Measurement:
    """Catch up with ``subscribe(after=0)``; stop at the last position the store had."""
    await _fill(directory, items, per_stream)
    async with eskit.open_store(_url(directory)) as store:
        async for _ in store.read_all(limit=10):
            pass
        last = await store.last_position()
        count = 0
        start = time.perf_counter()
        subscription = store.subscribe(after=0)
        async for event in subscription:
            count += 1
            if event.position >= last:
                break
        elapsed = time.perf_counter() - start
        close: Any = getattr(subscription, "aclose", None)
        if close is not None:
            await close()
    return Measurement(count, elapsed)
