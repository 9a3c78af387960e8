"""The RabbitMQ consumer against the machine's RabbitMQ: one active worker per group (the
queue's single active consumer), a standby that takes over what the active one left
unacked, every event applied once and in order, repeats and bad messages dropped."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest

import eskit
from eskit.brokers.rabbitmq import RabbitPublisher, amqp_message
from eskit.projections import ReadModelConnection, SQLiteDatabase, handles
from eskit.projections.consumers.rabbitmq import RabbitConsumer
from eskit.store.model import RecordedEvent
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
    """An exchange of the test's own; it and the group's queue are deleted afterwards."""
    url, name = services.rabbitmq_url(), services.unique("t")
    yield name
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(f"{name}.stream_log")
        await channel.exchange_delete(name)


class SlowStreamLog(StreamLog):
    """``StreamLog`` taking 5 ms an event: a worker that still holds unacked messages
    when it is stopped."""

    @handles("Happened")
    def happened(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        time.sleep(0.005)
        super().happened(event, db)


def consumer(
    prefix: str, database: SQLiteDatabase, projection: StreamLog | None = None
) -> RabbitConsumer:
    return RabbitConsumer(
        services.rabbitmq_url(),
        projection or StreamLog(),
        database,
        prefix=prefix,
        batch_size=20,
    )


async def test_one_worker_applies_the_standby_waits(
    store: eskit.EventStore, prefix: str, tmp_path: Path
) -> None:
    databases = [SQLiteDatabase(tmp_path / "read.db") for _ in range(2)]
    workers = [consumer(prefix, db) for db in databases]
    async with running(workers):  # the queue exists before the relay publishes
        per_stream = await append_events(store, 150, streams=7)
        publisher = RabbitPublisher(services.rabbitmq_url(), prefix)
        await relay_to_head(store, publisher)
        await publisher.close()
        await until(lambda: sum(w.applied for w in workers) >= 150)
    found, errors = await counts_then_close(databases)
    assert found == per_stream
    assert errors == []  # every stream in version order
    assert sorted(w.applied for w in workers) == [0, 150]


async def test_a_standby_takes_over_when_the_active_worker_stops(
    store: eskit.EventStore, prefix: str, tmp_path: Path
) -> None:
    """The active worker stops half way; RabbitMQ hands the queue, and what the first left
    unacked, to the standby, which goes on in order."""
    database = SQLiteDatabase(tmp_path / "read.db")
    first, standby = consumer(prefix, database, SlowStreamLog()), consumer(prefix, database)
    await first.start()
    await standby.start()
    per_stream = await append_events(store, 200, streams=5)
    publisher = RabbitPublisher(services.rabbitmq_url(), prefix)
    try:
        await relay_to_head(store, publisher)
        await until(lambda: first.applied >= 40)
        await first.stop()
        await until(lambda: first.applied + standby.applied >= 200)
    finally:
        await publisher.close()
        await first.stop()
        await standby.stop()
    found, errors = await counts(database)
    await database.close()
    assert found == per_stream
    assert errors == []
    assert standby.applied > 0
    assert first.applied + standby.applied == 200


async def test_repeats_and_bad_messages_change_nothing(
    store: eskit.EventStore, prefix: str, tmp_path: Path
) -> None:
    """Every event published twice (a relay that resent after a failure) and a message that
    is not an event: each event counts once, the bad message is dropped, nothing stalls."""
    database = SQLiteDatabase(tmp_path / "read.db")
    async with consumer(prefix, database) as worker:
        per_stream = await append_events(store, 40, streams=4)
        events = [e async for e in store.read_all()]
        connection = await aio_pika.connect(services.rabbitmq_url())
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange(prefix)
            await exchange.publish(aio_pika.Message(b"not an event"), "thing.thing-0")
            for event in events + events:
                await exchange.publish(amqp_message(event), f"thing.{event.stream}")
        await until(lambda: worker.applied + worker.repeats >= 80)
    found, errors = await counts(database)
    await database.close()
    assert found == per_stream
    assert errors == []
    assert (worker.applied, worker.repeats, worker.error) == (40, 40, None)


async def test_a_worker_of_one_category_gets_only_its_events(
    store: eskit.EventStore, prefix: str, tmp_path: Path
) -> None:
    database = SQLiteDatabase(tmp_path / "read.db")
    url = services.rabbitmq_url()
    async with RabbitConsumer(
        url, StreamLog(), database, prefix=prefix, category="thing"
    ) as worker:
        await store.append("other-1", [eskit.NewEvent("Happened", {"n": 0})])
        per_stream = await append_events(store, 30, streams=3)
        publisher = RabbitPublisher(url, prefix)
        await relay_to_head(store, publisher)
        await publisher.close()
        await until(lambda: worker.applied >= 30)
    found, _ = await counts(database)
    await database.close()
    assert found == per_stream  # no other-1
    assert (worker.applied, worker.repeats) == (30, 0)


async def test_a_broker_that_cannot_be_reached_is_said_plainly(tmp_path: Path) -> None:
    database = SQLiteDatabase(tmp_path / "read.db")
    url = f"amqp://guest:guest@127.0.0.1:{services.free_port()}/"
    worker = RabbitConsumer(url, StreamLog(), database, prefix="nowhere")
    with pytest.raises(
        eskit.BrokerUnavailable, match=r"RabbitMQ amqp://127.0.0.1:\d+/ queue"
    ) as raised:
        await worker.start()
    await database.close()
    assert "nowhere.stream_log" in str(raised.value)
    assert "guest" not in str(raised.value)  # no password in errors and logs


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    database = SQLiteDatabase(tmp_path / "read.db")
    with pytest.raises(ValueError, match="batch_size"):
        RabbitConsumer("amqp://x", StreamLog(), database, batch_size=0)
    with pytest.raises(ValueError, match="SQLProjection"):
        RabbitConsumer("amqp://x", object(), database)  # type: ignore[arg-type]
