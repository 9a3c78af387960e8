"""Redis Streams: the relay's publisher, and reading an eskit stream key back.

Every event goes to one stream key per prefix (``{prefix}:events``) with an id Redis gives;
its fields are the message headers (``eskit-event-id``, ``eskit-position``, ...) and
``body``. A batch is one MULTI/EXEC transaction: Redis stores all of it or none, so a
failure never leaves holes. The client does not retry by itself (a retried EXEC whose reply
was lost would store the batch twice): the relay retries, after reading the key's last
entry to skip what Redis already holds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from eskit.brokers import message
from eskit.brokers.publisher import safe_address
from eskit.errors import BrokerUnavailable
from eskit.store.model import RecordedEvent

BODY = "body"


def stream_key(prefix: str) -> str:
    return f"{prefix}:events"


def fields(event: RecordedEvent) -> dict[str, str | bytes]:
    """The entry's fields: the message headers and the body."""
    entry: dict[str, str | bytes] = dict(message.headers(event))
    entry[BODY] = message.body(event)
    return entry


def client(url: str, timeout: float = 10.0) -> aioredis.Redis:
    """A client that never retries a command on its own (see above)."""
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=min(timeout, 2.0),
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


class RedisPublisher:
    """Publishes to ``{prefix}:events``, one transaction per batch."""

    kind = "redis"

    def __init__(self, url: str, prefix: str = "eskit", *, timeout: float = 10.0) -> None:
        self.url, self.prefix = url, message.check_prefix(prefix)
        self.key = stream_key(prefix)
        self.address = f"{safe_address(url)} key {self.key}"
        self._redis = client(url, timeout)

    async def published(self) -> int | None:
        try:
            newest = await self._redis.xrevrange(self.key, count=1)
        except redis.exceptions.RedisError as error:
            raise BrokerUnavailable(f"Redis {self.address}: {error!r}") from error
        if not newest:
            return 0
        _, entry = newest[0]
        position = (entry or {}).get(message.POSITION.encode())
        return int(position) if position is not None else None

    async def publish(self, events: Sequence[RecordedEvent]) -> None:
        if not events:
            return
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for event in events:
                    pipe.xadd(self.key, fields(event))  # type: ignore[arg-type]
                await pipe.execute()
        except redis.exceptions.RedisError as error:
            raise BrokerUnavailable(f"Redis {self.address}: publish failed: {error!r}") from error

    async def close(self) -> None:
        with contextlib.suppress(redis.exceptions.RedisError):
            await self._redis.aclose()
