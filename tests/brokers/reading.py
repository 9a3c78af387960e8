"""Reading back what a broker holds, and removing it after a test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import cast

import nats.js.errors
import redis.asyncio as aioredis
from nats.js.api import RawStreamMsg

from eskit.brokers import message
from eskit.brokers.nats import connect
from eskit.brokers.redis import stream_key
from eskit.store.model import RecordedEvent


async def nats_raw(url: str, prefix: str) -> list[RawStreamMsg]:
    """Every message of the prefix's JetStream stream as stored, in stream order."""
    client = await connect(url)
    try:
        js = client.jetstream()
        info = await js.stream_info(prefix)
        return [
            await js.get_msg(prefix, seq=seq)
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
        ]
    finally:
        await client.close()


async def nats_messages(url: str, prefix: str) -> list[tuple[str, dict[str, str], RecordedEvent]]:
    """Every message of the prefix's JetStream stream, in stream order: subject, headers,
    event."""
    found = []
    for raw in await nats_raw(url, prefix):
        assert raw.data is not None
        assert raw.subject is not None
        found.append((raw.subject, dict(raw.headers or {}), message.decode(raw.data)))
    return found


async def delete_nats_stream(url: str, prefix: str) -> None:
    client = await connect(url)
    try:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await client.jetstream().delete_stream(prefix)
    finally:
        await client.close()


async def redis_entries(url: str, prefix: str) -> list[dict[str, bytes]]:
    """Every entry of the prefix's stream key, with string field names."""
    client = aioredis.Redis.from_url(url)
    try:
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]], await client.xrange(stream_key(prefix))
        )
        return [{k.decode(): v for k, v in fields.items()} for _, fields in entries]
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def redis_key(url: str, prefix: str) -> AsyncIterator[str]:
    """The prefix's stream key, deleted afterwards."""
    client = aioredis.Redis.from_url(url)
    try:
        yield stream_key(prefix)
    finally:
        await client.delete(stream_key(prefix))
        await client.aclose()
