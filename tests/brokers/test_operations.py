"""An operator reaches a broker consumer group with the usual commands, through its read
model's database: ``eskit projections status`` shows it stuck (position, type, error) and
``eskit projections skip`` steps it over the event, which the running worker picks up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

import eskit
from eskit.brokers.redis import RedisPublisher, stream_key
from eskit.projections import SQLiteDatabase
from eskit.projections.consumers.redis import RedisConsumer
from eskit.testing.brokers import Poisoned, append_events, relay_to_head, until
from tests import services
from tests.cli.conftest import invoke

pytestmark = pytest.mark.anyio


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    url, name = services.redis_url(), services.unique("t")
    yield name
    redis = aioredis.Redis.from_url(url)
    await redis.delete(stream_key(name), f"{stream_key(name)}:lease:stream_log")
    await redis.aclose()


async def test_status_and_skip_reach_a_stuck_consumer_group(prefix: str, tmp_path: Path) -> None:
    url, read_db = f"sqlite:///{tmp_path / 'events.db'}", tmp_path / "read.db"
    async with eskit.open_store(url) as store:
        await append_events(store, 10, streams=2)
        poison = await store.append("poisoned", [eskit.NewEvent("Poison", {})])
        await append_events(store, 10, streams=2, seed=2)
        publisher = RedisPublisher(services.redis_url(), prefix)
        await relay_to_head(store, publisher)
        await publisher.close()
    database = SQLiteDatabase(read_db)
    worker = RedisConsumer(
        services.redis_url(), Poisoned(), database, prefix=prefix, stuck_poll=0.05, backoff=0.001
    )
    async with worker:
        await until(lambda: bool(worker.stuck))
        shown = await asyncio.to_thread(
            invoke, ["projections", "status", url, "--database", str(read_db), "--json"]
        )
        skip = ["projections", "skip", url, "stream_log", "--reason", "poison, #7"]
        skipped = await asyncio.to_thread(invoke, [*skip, "--database", str(read_db)])
        await until(lambda: worker.applied >= 20 and not worker.stuck)
        again = await asyncio.to_thread(
            invoke, ["projections", "status", url, "--database", str(read_db), "--json"]
        )
    await database.close()

    assert shown.exit_code == 0, shown.output
    [group] = [json.loads(line) for line in shown.stdout.splitlines()]
    assert (group["name"], group["status"]) == ("stream_log", "stuck")
    assert group["error"] == (
        f"partition 0 at {poison.last_position} (Poison): RuntimeError: cannot digest poison"
        " (1 of 1 stuck)"
    )
    assert skipped.exit_code == 0, skipped.output
    assert "projection stream_log skipped event" in skipped.stdout
    assert f"at position {poison.last_position}" in skipped.stdout
    [after] = [json.loads(line) for line in again.stdout.splitlines()]
    assert (after["status"], after["skips"], after["lag"]) == ("running", 1, 0)
