"""What the relay needs from a broker, and which broker a URL names.

A publisher sends events in order and returns only once the broker acknowledged every one
of them; when it cannot, it raises ``BrokerUnavailable`` (the relay backs off and tries
again, never blaming an event). ``published()`` asks the broker for the position of the
newest event it holds, so that after a failure the relay resends nothing the broker already
has (NATS, Redis); a broker that cannot tell (RabbitMQ) answers None, and consumers then
drop the repeats by event id.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from typing import Protocol

from eskit.store.model import RecordedEvent


class Publisher(Protocol):
    kind: str
    """Short broker name (``nats``, ``redis``, ``rabbitmq``): part of the relay's name."""
    prefix: str
    """The NATS stream, Redis key prefix or RabbitMQ exchange: part of the relay's name."""
    address: str
    """Where it publishes, for status lines (no credentials)."""

    async def published(self) -> int | None:
        """Position of the newest event the broker holds (0: none), None if it cannot tell.
        Raises ``BrokerUnavailable`` if the broker cannot be reached."""
        ...

    async def publish(self, events: Sequence[RecordedEvent]) -> None:
        """Send ``events`` in order; return when the broker acknowledged them all, else
        raise ``BrokerUnavailable`` (having stored at most a prefix of them, where the broker
        allows it)."""
        ...

    async def close(self) -> None: ...


def publisher_for(url: str, prefix: str = "eskit", partitions: int = 16) -> Publisher:
    """The publisher for a broker URL: ``nats://``, ``redis://`` (or ``rediss://``),
    ``amqp://`` (or ``amqps://``). Connects on first use."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme in ("nats", "tls"):
        from eskit.brokers.nats import NatsPublisher

        return NatsPublisher(url, prefix, partitions=partitions)
    if scheme in ("redis", "rediss"):
        from eskit.brokers.redis import RedisPublisher

        return RedisPublisher(url, prefix)
    if scheme in ("amqp", "amqps"):
        from eskit.brokers.rabbitmq import RabbitPublisher

        return RabbitPublisher(url, prefix)
    raise ValueError(
        f"unknown broker URL {url!r}: use nats://host:4222, redis://host:6379 or"
        " amqp://user:password@host:5672/"
    )


def safe_address(url: str) -> str:
    """``url`` without its user and password, for logs and status lines (each of a
    comma-separated list of servers)."""
    if "," in url:
        return ",".join(safe_address(one.strip()) for one in url.split(","))
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=host))
