"""RabbitMQ: the relay's publisher.

Events go to a durable topic exchange named after the prefix, routing key
``{category}.{stream}`` (escaped), as persistent messages whose ``message_id`` is the event
id and whose headers are the eskit headers. Publisher confirms make a batch count only once
RabbitMQ took every message. RabbitMQ keeps no log the relay could ask what it already
holds, so after a failure the relay sends the unconfirmed batch again and consumers drop
repeats by ``message_id``. Bind queues to the exchange before publishing: an exchange
drops messages no queue wants (``mandatory`` is off, so that is not an error).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import aio_pika
import aio_pika.exceptions
import aiormq.exceptions

from eskit.brokers import message
from eskit.brokers.publisher import safe_address
from eskit.errors import BrokerUnavailable
from eskit.store.model import RecordedEvent

ERRORS = (aio_pika.exceptions.AMQPError, aiormq.exceptions.AMQPError, OSError, TimeoutError)


def amqp_message(event: RecordedEvent) -> aio_pika.Message:
    return aio_pika.Message(
        message.body(event),
        headers=dict(message.headers(event)),
        message_id=str(event.id),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        type=event.type,
    )


class RabbitPublisher:
    """Publishes to the topic exchange ``{prefix}`` with publisher confirms."""

    kind = "rabbitmq"

    def __init__(self, url: str, prefix: str = "eskit", *, timeout: float = 10.0) -> None:
        self.url, self.prefix = url, message.check_prefix(prefix)
        self.address = f"{safe_address(url)} exchange {prefix}"
        self.timeout = timeout
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None

    async def exchange(self) -> aio_pika.abc.AbstractExchange:
        """The exchange, declared (durable, topic) on first use."""
        if self._exchange is None or self._connection is None or self._connection.is_closed:
            await self.close()
            try:
                connection = await aio_pika.connect(self.url, timeout=self.timeout)
                channel = await connection.channel(publisher_confirms=True)
                self._exchange = await channel.declare_exchange(
                    self.prefix, aio_pika.ExchangeType.TOPIC, durable=True
                )
                self._connection = connection
            except ERRORS as error:
                raise BrokerUnavailable(f"RabbitMQ {self.address}: {error!r}") from error
        return self._exchange

    async def published(self) -> int | None:
        await self.exchange()
        return None  # RabbitMQ cannot tell: repeats are dropped by consumers

    async def publish(self, events: Sequence[RecordedEvent]) -> None:
        if not events:
            return
        exchange = await self.exchange()
        try:
            confirms = [
                exchange.publish(amqp_message(e), message.routing_key(e), mandatory=False)
                for e in events
            ]
            async with asyncio.timeout(self.timeout):
                await asyncio.gather(*confirms)
        except ERRORS as error:
            self._exchange = None  # reconnect next time
            raise BrokerUnavailable(
                f"RabbitMQ {self.address}: publish failed: {error!r}"
            ) from error

    async def close(self) -> None:
        connection, self._connection, self._exchange = self._connection, None, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(*ERRORS):
                await connection.close()
