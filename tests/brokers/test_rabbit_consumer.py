"""What the RabbitMQ consumer does beyond the broker suite (tests/brokers/test_conformance):
messages that are not events dropped, a group of one category, bad settings refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest

import eskit
from eskit.brokers.rabbitmq import RabbitPublisher, amqp_message
from eskit.projections import SQLiteDatabase
from eskit.projections.consumers.rabbitmq import RabbitConsumer
from tests import services
from tests.brokers.fixtures import StreamLog, append_events, counts, relay_to_head, until

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


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    database = SQLiteDatabase(tmp_path / "read.db")
    with pytest.raises(ValueError, match="batch_size"):
        RabbitConsumer("amqp://x", StreamLog(), database, batch_size=0)
    with pytest.raises(ValueError, match="SQLProjection"):
        RabbitConsumer("amqp://x", object(), database)  # type: ignore[arg-type]
