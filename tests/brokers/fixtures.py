"""What the broker tests share: a store filled with interleaved streams, a relay run to
the head, and reading a ``StreamLog`` read model back."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import eskit
from eskit.brokers.publisher import Publisher
from eskit.projections import Database
from eskit.projections.service import Service
from eskit.relay import Relay, relay_runner


async def append_events(
    store: eskit.EventStore, count: int, streams: int = 12, seed: int = 1
) -> dict[str, int]:
    """``count`` events over ``streams`` streams in random interleaving; events per stream."""
    chosen = random.Random(seed)
    per_stream: dict[str, int] = {}
    for _ in range(count):
        stream = f"thing-{chosen.randrange(streams)}"
        await store.append(stream, [eskit.NewEvent("Happened", {"n": per_stream.get(stream, 0)})])
        per_stream[stream] = per_stream.get(stream, 0) + 1
    return per_stream


async def relay_to_head(store: eskit.EventStore, publisher: Publisher) -> Relay:
    relay = Relay(publisher, batch_size=50)
    runner = relay_runner(store, relay)
    try:
        await runner.run_until_caught_up()
    finally:
        await runner.stop()
    return relay


async def counts(database: Database) -> tuple[dict[str, int], list[Any]]:
    """Events per stream in the read model, and the order errors it noticed."""

    def read(conn: Any) -> tuple[dict[str, int], list[Any]]:
        rows = conn.execute("SELECT stream, count FROM stream_counts").fetchall()
        errors = conn.execute("SELECT * FROM order_errors").fetchall()
        return {stream: count for stream, count in rows}, list(errors)

    return await database.read(read)


async def until(done: Callable[[], bool], within: float = 30.0) -> None:
    """Poll ``done`` until it holds; ``TimeoutError`` after ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            if done():
                return
            await asyncio.sleep(0.02)


async def until_counted(database: Database, total: int, within: float = 60.0) -> None:
    """Wait until the ``StreamLog`` read model counts ``total`` events."""
    async with asyncio.timeout(within):
        while True:
            found, _ = await counts(database)
            if sum(found.values()) >= total:
                return
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running(workers: Sequence[Service]) -> AsyncIterator[None]:
    """Every worker started in turn, and every one stopped at the end, whatever happens."""
    async with contextlib.AsyncExitStack() as stack:
        for worker in workers:
            await stack.enter_async_context(worker)
        yield


async def counts_then_close(databases: Sequence[Database]) -> tuple[dict[str, int], list[Any]]:
    """``counts`` of the first database (they all hold the same file), then close them all."""
    found = await counts(databases[0])
    for database in databases:
        await database.close()
    return found
