"""The broker consumer conformance suite (``eskit.testing.brokers``) on the machine's NATS
JetStream, Redis and RabbitMQ. Under ``CI=true`` a broker that cannot be reached fails its
tests (``tests.services``)."""

from __future__ import annotations

from collections.abc import Sequence

import aio_pika
import redis.asyncio as aioredis

from eskit.brokers import message
from eskit.brokers.nats import NatsPublisher, connect, subject
from eskit.brokers.rabbitmq import RabbitPublisher
from eskit.brokers.redis import RedisPublisher, stream_key
from eskit.projections import Database, SQLProjection
from eskit.projections.consumers.nats import NatsConsumer
from eskit.projections.consumers.rabbitmq import RabbitConsumer
from eskit.projections.consumers.redis import RedisConsumer
from eskit.store.model import RecordedEvent
from eskit.testing.brokers import BrokerConsumerConformance
from tests import services
from tests.brokers.reading import delete_nats_stream

PARTITIONS = 4


class TestNats(BrokerConsumerConformance):
    def url(self) -> str:
        return services.nats_url()

    def unreachable_url(self) -> str:
        return f"nats://eskit:secret@127.0.0.1:{services.free_port()}"

    def publisher(self, url: str, prefix: str) -> NatsPublisher:
        return NatsPublisher(url, prefix, partitions=PARTITIONS)

    def consumer(
        self, url: str, prefix: str, projection: SQLProjection, database: Database
    ) -> NatsConsumer:
        return NatsConsumer(url, projection, database, prefix=prefix, ack_wait=1.0)

    async def publish_again(self, url: str, prefix: str, events: Sequence[RecordedEvent]) -> None:
        client = await connect(url)
        try:
            js = client.jetstream()
            for event in events:  # no Nats-Msg-Id: the broker stores the repeat
                body, headers = message.body(event), message.headers(event)
                await js.publish(subject(prefix, event, PARTITIONS), body, headers=headers)
        finally:
            await client.close()

    async def clean_up(self, url: str, prefix: str) -> None:
        await delete_nats_stream(url, prefix)


class TestRedis(BrokerConsumerConformance):
    def url(self) -> str:
        return services.redis_url()

    def unreachable_url(self) -> str:
        return f"redis://:secret@127.0.0.1:{services.free_port()}/0"

    def publisher(self, url: str, prefix: str) -> RedisPublisher:
        return RedisPublisher(url, prefix)

    def consumer(
        self, url: str, prefix: str, projection: SQLProjection, database: Database
    ) -> RedisConsumer:
        return RedisConsumer(
            url, projection, database, prefix=prefix, batch_size=20, lease=1.0, block=0.2
        )

    async def publish_again(self, url: str, prefix: str, events: Sequence[RecordedEvent]) -> None:
        publisher = self.publisher(url, prefix)
        await publisher.publish(events)
        await publisher.close()

    async def clean_up(self, url: str, prefix: str) -> None:
        redis = aioredis.Redis.from_url(url)
        await redis.delete(stream_key(prefix), f"{stream_key(prefix)}:lease:stream_log")
        await redis.aclose()


class TestRabbitMQ(BrokerConsumerConformance):
    queue_first = True

    def url(self) -> str:
        return services.rabbitmq_url()

    def unreachable_url(self) -> str:
        return f"amqp://guest:secret@127.0.0.1:{services.free_port()}/"

    def publisher(self, url: str, prefix: str) -> RabbitPublisher:
        return RabbitPublisher(url, prefix)

    def consumer(
        self, url: str, prefix: str, projection: SQLProjection, database: Database
    ) -> RabbitConsumer:
        return RabbitConsumer(url, projection, database, prefix=prefix, batch_size=20)

    async def publish_again(self, url: str, prefix: str, events: Sequence[RecordedEvent]) -> None:
        publisher = self.publisher(url, prefix)
        await publisher.publish(events)
        await publisher.close()

    async def clean_up(self, url: str, prefix: str) -> None:
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(f"{prefix}.stream_log")
            await channel.exchange_delete(prefix)
