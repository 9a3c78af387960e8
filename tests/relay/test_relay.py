"""The relay against the machine's NATS, Redis and RabbitMQ: every event published once, in
position order, with the shared message format; lag reported; a relay killed between
publishing and checkpointing sends nothing twice where the broker can tell."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import pytest

import eskit
from eskit.brokers import message
from eskit.brokers.nats import NatsPublisher, partition_subject, servers, subject
from eskit.brokers.publisher import publisher_for, safe_address
from eskit.brokers.rabbitmq import RabbitPublisher
from eskit.brokers.redis import RedisPublisher
from eskit.projections import ProjectionStatus
from eskit.relay import Relay, relay_runner, relay_status
from eskit.store.model import RecordedEvent
from tests import postgres, services
from tests.brokers.reading import delete_nats_stream, nats_messages, redis_entries, redis_key

pytestmark = pytest.mark.anyio

STREAMS = ["invoice-1", "invoice-2.b", "customer-7", "odd name*>-ü", "plain"]


async def fill(store: eskit.EventStore, rounds: int = 20) -> None:
    """Events of several streams, interleaved, some names needing escapes."""
    for i in range(rounds):
        for stream in STREAMS:
            await store.append(stream, [eskit.NewEvent("Happened", {"i": i, "s": stream})])


async def everything(store: eskit.EventStore) -> list[RecordedEvent]:
    return [e async for e in store.read_all()]


@pytest.fixture
async def nats_prefix() -> AsyncIterator[str]:
    url, prefix = services.nats_url(), services.unique("t")
    yield prefix
    await delete_nats_stream(url, prefix)


async def relay_all(store: eskit.EventStore, relay: Relay) -> ProjectionStatus:
    """Run the relay up to the head; its status there."""
    runner = relay_runner(store, relay)
    try:
        await runner.run_until_caught_up()
        return await relay_status(runner, relay)
    finally:
        await runner.stop()


async def test_nats_gets_every_event_once_in_order(
    store: eskit.EventStore, nats_prefix: str
) -> None:
    await fill(store)
    publisher = NatsPublisher(services.nats_url(), nats_prefix, partitions=4)
    try:
        status = await relay_all(store, Relay(publisher, batch_size=32))
    finally:
        await publisher.close()
    events = await everything(store)
    assert (status.position, status.head, status.lag) == (len(events), len(events), 0)
    stored = await nats_messages(services.nats_url(), nats_prefix)
    assert [e for _, _, e in stored] == events
    for subject_, headers, event in stored:
        assert subject_ == subject(nats_prefix, event, 4)
        assert headers["Nats-Msg-Id"] == headers[message.EVENT_ID] == str(event.id)
        assert headers[message.POSITION] == str(event.position)
        assert headers[message.STREAM] == message.token(event.stream)
        assert headers[message.TYPE] == "Happened"
        partition = message.partition_of(event.stream, 4)
        assert subject_.endswith(f".{partition}")
        assert partition_subject(nats_prefix, partition).count(".") == subject_.count(".")


async def test_nats_relay_killed_before_its_checkpoint_resends_nothing(
    store: eskit.EventStore, nats_prefix: str
) -> None:
    """Published but not checkpointed (a relay killed in between): the next relay reads
    the stream's last message and skips what NATS holds, whatever the duplicate window."""
    await fill(store)
    events = await everything(store)
    first = NatsPublisher(services.nats_url(), nats_prefix, duplicate_window=0.5)
    await first.publish(events[:37])  # as a relay would, before dying: no checkpoint
    await first.close()
    await asyncio.sleep(0.6)  # past the duplicate window: NATS alone would store repeats
    publisher = NatsPublisher(services.nats_url(), nats_prefix)
    relay = Relay(publisher, batch_size=10)
    await relay_all(store, relay)
    await publisher.close()
    assert [e for _, _, e in await nats_messages(services.nats_url(), nats_prefix)] == events
    assert relay.sent == len(events) - 37


async def test_nats_stream_with_other_partitions_is_refused(nats_prefix: str) -> None:
    first = NatsPublisher(services.nats_url(), nats_prefix, partitions=4)
    assert await first.published() == 0
    await first.close()
    other = NatsPublisher(services.nats_url(), nats_prefix, partitions=8)
    with pytest.raises(ValueError, match="has 4 partitions, not 8"):
        await other.published()
    await other.close()


async def test_redis_gets_every_event_once_in_order(store: eskit.EventStore) -> None:
    url, prefix = services.redis_url(), services.unique("t")
    await fill(store)
    events = await everything(store)
    async with redis_key(url, prefix):
        early = RedisPublisher(url, prefix)
        await early.publish(events[:11])  # published, never checkpointed
        await early.close()
        publisher = publisher_for(url, prefix)
        relay = Relay(publisher, batch_size=16)
        await relay_all(store, relay)
        await publisher.close()
        entries = await redis_entries(url, prefix)
    assert [message.decode(entry["body"]) for entry in entries] == events
    assert [entry[message.EVENT_ID].decode() for entry in entries] == [str(e.id) for e in events]
    assert relay.name == f"relay_redis_{prefix}"
    assert relay.sent == len(events) - 11


async def test_rabbitmq_gets_every_event_in_order(store: eskit.EventStore) -> None:
    url, prefix = services.rabbitmq_url(), services.unique("t")
    await fill(store)
    events = await everything(store)
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(prefix, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "#")
        publisher = RabbitPublisher(url, prefix)
        await relay_all(store, Relay(publisher, batch_size=16))
        await publisher.close()
        received: list[aio_pika.abc.AbstractIncomingMessage] = []
        async with asyncio.timeout(10), queue.iterator() as messages:
            async for incoming in messages:
                received.append(incoming)
                await incoming.ack()
                if len(received) == len(events):
                    break
        await exchange.delete()
    finally:
        await connection.close()
    assert [message.decode(m.body) for m in received] == events
    for incoming, event in zip(received, events, strict=True):
        assert incoming.message_id == str(event.id)
        assert incoming.routing_key == message.routing_key(event)
        assert incoming.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert (incoming.headers or {})[message.POSITION] == str(event.position)


async def test_broker_down_backs_off_without_blaming_events(store: eskit.EventStore) -> None:
    """Nothing listens: the relay retries with backoff, never gets stuck, reports its lag,
    and appends go on as fast as ever."""
    url = f"nats://127.0.0.1:{services.free_port()}"
    publisher = NatsPublisher(url, "down", connect_timeout=0.2)
    relay = Relay(publisher)
    async with relay_runner(store, relay, backoff=0.01) as runner:
        await fill(store, rounds=2)
        await asyncio.sleep(0.5)
        status = await relay_status(runner, relay)
    assert status.status != "stuck"
    assert status.error is None
    assert status.position == 0
    assert status.lag == status.head == 2 * len(STREAMS)


def test_bad_urls_and_prefixes_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown broker URL"):
        publisher_for("kafka://localhost")
    with pytest.raises(ValueError, match="invalid broker prefix"):
        publisher_for("nats://localhost", prefix="Bad.Prefix")
    with pytest.raises(ValueError, match="partitions must be between"):
        NatsPublisher("nats://localhost", partitions=0)
    with pytest.raises(ValueError, match="invalid relay name"):
        Relay(NatsPublisher("nats://localhost"), name="no-dashes")


def test_addresses_hide_credentials() -> None:
    assert safe_address("amqp://guest:secret@mq:5672/") == "amqp://mq:5672/"
    cluster = "nats://u:p@a:4222, nats://b:4222"
    assert safe_address(cluster) == "nats://a:4222,nats://b:4222"
    assert servers(cluster) == ["nats://u:p@a:4222", "nats://b:4222"]


async def test_a_cluster_url_lists_its_servers(store: eskit.EventStore, nats_prefix: str) -> None:
    await fill(store, rounds=1)
    dead = f"nats://127.0.0.1:{services.free_port()}"
    publisher = NatsPublisher(f"{dead},{services.nats_url()}", nats_prefix)
    await relay_all(store, Relay(publisher))
    await publisher.close()
    assert len(await nats_messages(services.nats_url(), nats_prefix)) == len(STREAMS)


async def test_relay_over_a_postgresql_store(nats_prefix: str) -> None:
    """The relay's checkpoint lives beside the PostgreSQL store's projections."""
    async with eskit.open_store(postgres.store_url()) as pg_store:
        await fill(pg_store, rounds=4)
        publisher = NatsPublisher(services.nats_url(), nats_prefix, partitions=2)
        try:
            status = await relay_all(pg_store, Relay(publisher, batch_size=7))
        finally:
            await publisher.close()
        events = await everything(pg_store)
    assert status.lag == 0
    assert [e for _, _, e in await nats_messages(services.nats_url(), nats_prefix)] == events
