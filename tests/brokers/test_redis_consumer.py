"""The Redis Streams consumer against the machine's Redis: one active worker per group,
standbys that take over (pending entries first), every event applied once, in order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

import eskit
from eskit.brokers.redis import RedisPublisher, stream_key
from eskit.projections import SQLiteDatabase
from eskit.projections.consumers.redis import RedisConsumer
from tests import services
from tests.brokers.fixtures import (
    append_events,
    counts,
    counts_then_close,
    relay_to_head,
    running,
    until,
)
from tests.brokers.models import StreamLog

pytestmark = pytest.mark.anyio


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    url, name = services.redis_url(), services.unique("t")
    yield name
    redis = aioredis.Redis.from_url(url)
    await redis.delete(stream_key(name), f"{stream_key(name)}:lease:stream_log")
    await redis.aclose()


async def test_one_worker_applies_the_standby_waits(
    store: eskit.EventStore, prefix: str, tmp_path: Path
) -> None:
    per_stream = await append_events(store, 150, streams=7)
    publisher = RedisPublisher(services.redis_url(), prefix)
    await relay_to_head(store, publisher)
    await publisher.close()
    databases = [SQLiteDatabase(tmp_path / "read.db") for _ in range(2)]
    workers = [
        RedisConsumer(services.redis_url(), StreamLog(), db, prefix=prefix, batch_size=20)
        for db in databases
    ]
    async with running(workers):
        await until(lambda: sum(w.applied for w in workers) >= 150)
    found, errors = await counts_then_close(databases)
    assert found == per_stream
    assert errors == []
    assert sorted(w.applied for w in workers) == [0, 150]


async def test_a_standby_takes_over_what_a_dead_holder_left_pending(
    store: eskit.EventStore, prefix: str, tmp_path: Path
) -> None:
    """The holder read a batch and died before applying it (its lease runs out): the
    standby reads the pending entries first, then the rest."""
    per_stream = await append_events(store, 60, streams=5)
    publisher = RedisPublisher(services.redis_url(), prefix)
    await relay_to_head(store, publisher)
    await publisher.close()
    database = SQLiteDatabase(tmp_path / "read.db")
    dead = RedisConsumer(
        services.redis_url(), StreamLog(), database, prefix=prefix, lease=0.5, block=0.1
    )
    await dead._redis.xgroup_create(stream_key(prefix), "stream_log", id="0", mkstream=True)
    assert await dead._hold()
    assert len(await dead._read(pending=False)) == 60  # delivered to the group, never acked
    await dead._redis.aclose()  # dies holding the lease
    standby = RedisConsumer(
        services.redis_url(), StreamLog(), database, prefix=prefix, lease=0.5, block=0.1
    )
    async with standby:
        await until(lambda: standby.applied >= 60, within=15)
    found, errors = await counts(database)
    await database.close()
    assert found == per_stream
    assert errors == []
    redis = aioredis.Redis.from_url(services.redis_url())
    pending = await redis.xpending(stream_key(prefix), "stream_log")
    await redis.aclose()
    assert pending["pending"] == 0
