"""A poison event on each broker (NATS JetStream, Redis Streams, RabbitMQ): the consumer
applies the batch event by event, retries the poison with backoff, then its partition is
stuck (position, type, error: in ``stuck`` and, on JetStream, ``status()``), the handler
is never called again, and an operator's ``skip`` lets everything else through, once.
(The store runner's and partitioned workers' poison events: tests/projections.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import pytest
import redis.asyncio as aioredis

import eskit
from eskit.brokers.nats import NatsPublisher
from eskit.brokers.publisher import Publisher
from eskit.brokers.rabbitmq import RabbitPublisher
from eskit.brokers.redis import RedisPublisher, stream_key
from eskit.projections import ReadModelConnection, SQLiteDatabase, handles
from eskit.projections import state as st
from eskit.projections.consumer import BrokerWorker, JetStreamConsumer
from eskit.projections.rabbit_consumer import RabbitConsumer
from eskit.projections.redis_consumer import RedisStreamConsumer
from eskit.store.model import RecordedEvent
from tests import services
from tests.brokers.fixtures import append_events, counts, relay_to_head, until
from tests.brokers.models import StreamLog
from tests.brokers.reading import delete_nats_stream

pytestmark = pytest.mark.anyio

RETRIES = 2
STUCK_POLL = 0.05


class Poisoned(StreamLog):
    """``StreamLog`` whose handler of ``Poison`` always raises."""

    def __init__(self) -> None:
        self.poison_calls = 0

    @handles("Poison")
    def poison(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        self.poison_calls += 1
        raise RuntimeError("cannot digest poison")


@dataclass
class Broker:
    publisher: Callable[[str], Publisher]
    consumer: Callable[[str, Poisoned, SQLiteDatabase], BrokerWorker]
    queue_first: bool
    """RabbitMQ drops what no queue is bound to: start the consumer before publishing."""


BROKERS = {
    "nats": Broker(
        lambda prefix: NatsPublisher(services.nats_url(), prefix),
        lambda prefix, projection, db: JetStreamConsumer(
            services.nats_url(),
            projection,
            db,
            prefix=prefix,
            retries=RETRIES,
            backoff=0.001,
            stuck_poll=STUCK_POLL,
        ),
        queue_first=False,
    ),
    "redis": Broker(
        lambda prefix: RedisPublisher(services.redis_url(), prefix),
        lambda prefix, projection, db: RedisStreamConsumer(
            services.redis_url(),
            projection,
            db,
            prefix=prefix,
            batch_size=20,
            retries=RETRIES,
            backoff=0.001,
            stuck_poll=STUCK_POLL,
        ),
        queue_first=False,
    ),
    "rabbitmq": Broker(
        lambda prefix: RabbitPublisher(services.rabbitmq_url(), prefix),
        lambda prefix, projection, db: RabbitConsumer(
            services.rabbitmq_url(),
            projection,
            db,
            prefix=prefix,
            batch_size=20,
            retries=RETRIES,
            backoff=0.001,
            stuck_poll=STUCK_POLL,
        ),
        queue_first=True,
    ),
}


@pytest.fixture(params=sorted(BROKERS))
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, Broker]]:
    name = services.unique("t")
    yield name, BROKERS[request.param]
    if request.param == "nats":
        await delete_nats_stream(services.nats_url(), name)
    elif request.param == "redis":
        redis = aioredis.Redis.from_url(services.redis_url())
        await redis.delete(stream_key(name), f"{stream_key(name)}:lease:stream_log")
        await redis.aclose()
    else:
        connection = await aio_pika.connect(services.rabbitmq_url())
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(f"{name}.stream_log")
            await channel.exchange_delete(name)


async def test_a_poison_event_ends_stuck_then_a_skip_moves_on(
    store: eskit.EventStore, broker: tuple[str, Broker], tmp_path: Path
) -> None:
    prefix, kind = broker
    await append_events(store, 30, streams=4)
    poison = await store.append("poisoned", [eskit.NewEvent("Poison", {})])
    await append_events(store, 30, streams=4, seed=2)
    database = SQLiteDatabase(tmp_path / "read.db")
    projection = Poisoned()
    worker = kind.consumer(prefix, projection, database)
    publisher = kind.publisher(prefix)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(database.close)
        stack.push_async_callback(publisher.close)
        if kind.queue_first:
            await stack.enter_async_context(worker)
        await relay_to_head(store, publisher)
        if not kind.queue_first:
            await stack.enter_async_context(worker)

        await until(lambda: bool(worker.stuck))
        [(partition, stuck)] = worker.stuck.items()
        await asyncio.sleep(STUCK_POLL * 6)  # redelivered, held again: never applied
        calls = projection.poison_calls
        if isinstance(worker, JetStreamConsumer):
            shown = {s.partition: s for s in await worker.status()}[partition]
            assert (shown.stuck, shown.error_position, shown.error_type) == (
                True,
                poison.last_position,
                "Poison",
            )
            assert shown.error == "RuntimeError: cannot digest poison"

        records = await worker.skip("poisoned by a test")
        await until(lambda: worker.applied >= 60 and not worker.stuck)
        found, errors = await counts(database)
        skips = await database.read(lambda c: st.skips(c, worker.group))

    assert (stuck.position, stuck.event_type) == (poison.last_position, "Poison")
    assert stuck.error == "RuntimeError: cannot digest poison"
    assert calls == 1 + RETRIES + 1  # in a batch, then alone with retries; then held
    assert projection.poison_calls == calls  # the skipped event is never applied again
    assert [(r.position, r.event_type, r.reason) for r in records] == [
        (poison.last_position, "Poison", "poisoned by a test")
    ]
    assert skips == records
    assert sum(found.values()) == 60 == worker.applied  # every other event, once
    assert errors == []  # in order


async def test_a_worker_started_later_leaves_a_stuck_partition_be(
    store: eskit.EventStore, broker: tuple[str, Broker], tmp_path: Path
) -> None:
    """The stuck partition is kept in the read model: the next worker of the group (a
    restart, a standby) holds the poison event back without applying it, until a skip."""
    prefix, kind = broker
    await append_events(store, 20, streams=3)
    await store.append("poisoned", [eskit.NewEvent("Poison", {})])
    await append_events(store, 20, streams=3, seed=2)
    database = SQLiteDatabase(tmp_path / "read.db")
    first, second = Poisoned(), Poisoned()
    publisher = kind.publisher(prefix)
    try:
        worker = kind.consumer(prefix, first, database)
        if not kind.queue_first:
            await relay_to_head(store, publisher)
        await worker.start()
        try:
            if kind.queue_first:
                await relay_to_head(store, publisher)
            await until(lambda: bool(worker.stuck))
        finally:
            await worker.stop()

        later = kind.consumer(prefix, second, database)
        async with later:
            await asyncio.sleep(STUCK_POLL * 6)
            held = dict(later.stuck)
            await later.skip("poisoned by a test")
            await until(lambda: worker.applied + later.applied >= 40 and not later.stuck)
        found, errors = await counts(database)
    finally:
        await publisher.close()
        await database.close()

    assert held == worker.stuck
    assert second.poison_calls == 0  # held back, never applied
    assert sum(found.values()) == 40 == worker.applied + later.applied
    assert errors == []
