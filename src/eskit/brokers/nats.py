"""NATS JetStream: the relay's publisher and the addresses consumers pull from.

One JetStream stream named after the prefix holds every event, on subjects
``{prefix}.{category}.{stream}.{partition}`` (names escaped by ``message.token``; the
partition is a stable hash of the stream name, so a consumer per partition gets every
event of its streams in order). The stream's description records the partition count, so
consumers read it from the broker instead of being told.

Publishing is exact, not merely deduplicated: each message carries
``Nats-Expected-Last-Sequence`` (JetStream refuses it unless it extends the stream by
exactly one) besides ``Nats-Msg-Id`` = event id. A pipelined batch that fails half-way
therefore leaves a prefix of it stored, never a batch with holes; the relay then asks the
stream for its last message and sends only what follows, whatever the duplicate window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck, RetentionPolicy, StorageType, StreamConfig, StreamInfo

from eskit.brokers import message
from eskit.brokers.publisher import safe_address
from eskit.errors import BrokerUnavailable
from eskit.store.model import RecordedEvent

log = logging.getLogger("eskit.brokers.nats")
MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST_SEQUENCE = "Nats-Expected-Last-Sequence"
_PARTITIONS = re.compile(r"partitions=(\d+)")
MAX_PARTITIONS = 1024
NATS_ERRORS: tuple[type[BaseException], ...] = (nats.errors.Error, OSError, TimeoutError)
"""What a client call raises when the server is away or does not answer in time."""
_STATE_ERRORS: tuple[type[BaseException], ...] = (*NATS_ERRORS, nats.js.errors.APIError)
_CONNECT_ERRORS: tuple[type[BaseException], ...] = (*NATS_ERRORS, ValueError)


def subject(prefix: str, event: RecordedEvent, partitions: int) -> str:
    """``{prefix}.{category}.{stream}.{partition}``."""
    partition = message.partition_of(event.stream, partitions)
    return f"{prefix}.{message.token(event.category)}.{message.token(event.stream)}.{partition}"


def partition_subject(prefix: str, partition: int) -> str:
    """The subjects of one partition, whatever the category and stream."""
    return f"{prefix}.*.*.{partition}"


def check_partitions(partitions: object) -> int:
    if isinstance(partitions, bool) or not isinstance(partitions, int):
        raise ValueError(f"partitions must be an int, got {partitions!r}")
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise ValueError(f"partitions must be between 1 and {MAX_PARTITIONS}, got {partitions}")
    return partitions


def servers(url: str) -> list[str]:
    """The servers of a cluster given as ``nats://a:4222,nats://b:4222``."""
    return [server.strip() for server in url.split(",") if server.strip()]


async def connect(url: str, wait: float = 2.0) -> Client:
    """A client that reconnects forever once connected; ``BrokerUnavailable`` if the first
    connection does not succeed within ``wait`` seconds."""
    client = Client()
    options: dict[str, Any] = {  # typed as ints by the client, though it takes seconds
        "connect_timeout": wait,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.25,
    }

    async def quiet(error: Exception) -> None:  # the client would print a traceback per retry
        log.debug("NATS %s: %s", safe_address(url), error)

    try:
        async with asyncio.timeout(wait):
            await client.connect(servers(url), error_cb=quiet, **options)
    except _CONNECT_ERRORS as error:
        with contextlib.suppress(Exception):
            await client.close()
        raise BrokerUnavailable(
            f"NATS at {safe_address(url)} is not reachable: {error!r}"
        ) from error
    return client


async def ensure_stream(
    js: JetStreamContext, prefix: str, partitions: int, duplicate_window: float
) -> StreamInfo:
    """The prefix's stream, created if missing; ``ValueError`` if it exists with another
    partition count (consumers would read the wrong subjects)."""
    try:
        info = await js.stream_info(prefix)
    except nats.js.errors.NotFoundError:
        return await js.add_stream(
            StreamConfig(
                name=prefix,
                description=f"eskit events; partitions={partitions}",
                subjects=[f"{prefix}.>"],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                duplicate_window=duplicate_window,
            )
        )
    found = partitions_of(info)
    if found != partitions:
        raise ValueError(
            f"JetStream stream {prefix!r} has {found} partitions, not {partitions}: use"
            f" --partitions {found}, or another prefix"
        )
    return info


def partitions_of(info: StreamInfo) -> int:
    """The partition count an eskit stream's description records."""
    match = _PARTITIONS.search(info.config.description or "")
    if match is None:
        raise ValueError(
            f"JetStream stream {info.config.name!r} was not made by eskit (no partition count)"
        )
    return int(match.group(1))


class NatsPublisher:
    """Publishes to the prefix's JetStream stream, pipelined, exactly once (see above)."""

    kind = "nats"

    def __init__(
        self,
        url: str,
        prefix: str = "eskit",
        *,
        partitions: int = 16,
        duplicate_window: float = 120.0,
        ack_timeout: float = 10.0,
        connect_timeout: float = 2.0,
    ) -> None:
        self.url, self.prefix = url, message.check_prefix(prefix)
        self.partitions = check_partitions(partitions)
        self.address = f"{safe_address(url)} stream {prefix}"
        self.duplicate_window, self.ack_timeout = duplicate_window, ack_timeout
        self.connect_timeout = connect_timeout
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._last_sequence: int | None = None
        """The stream's last sequence, while this publisher knows it."""

    async def _jetstream(self) -> JetStreamContext:
        if self._client is None or self._client.is_closed or self._js is None:
            client = await connect(self.url, self.connect_timeout)
            js = client.jetstream(timeout=self.ack_timeout)
            try:
                await ensure_stream(js, self.prefix, self.partitions, self.duplicate_window)
            except BaseException:
                await client.close()
                raise
            self._client, self._js = client, js
        return self._js

    async def published(self) -> int | None:
        try:
            js = await self._jetstream()
            info = await js.stream_info(self.prefix)
            last = info.state.last_seq
            self._last_sequence = last
            if info.state.messages == 0:
                return 0
            try:
                newest = await js.get_msg(self.prefix, seq=last)
            except nats.js.errors.NotFoundError:  # deleted by hand: chain on, position unknown
                return None
        except _STATE_ERRORS as error:
            self._last_sequence = None
            raise BrokerUnavailable(f"NATS stream {self.prefix}: {error!r}") from error
        return int((newest.headers or {}).get(message.POSITION, 0)) or None

    async def publish(self, events: Sequence[RecordedEvent]) -> None:
        if not events:
            return
        if self._last_sequence is None:
            await self.published()
        assert self._last_sequence is not None
        try:
            js = await self._jetstream()
        except ValueError as error:  # the stream changed under the relay: not an event's fault
            raise BrokerUnavailable(str(error)) from error
        sequence = self._last_sequence
        self._last_sequence = None  # unknown until every ack is in
        acks: list[asyncio.Future[PubAck]] = []
        try:
            for event in events:
                headers = message.headers(event)
                headers[MSG_ID] = headers[message.EVENT_ID]
                headers[EXPECTED_LAST_SEQUENCE] = str(sequence)
                sequence += 1
                acks.append(
                    await js.publish_async(
                        subject(self.prefix, event, self.partitions),
                        message.body(event),
                        headers=headers,
                    )
                )
            await asyncio.wait(acks, timeout=self.ack_timeout)
        except nats.errors.MaxPayloadError as error:  # this event's fault: the relay stops at it
            raise ValueError(
                f"event {event.id} at position {event.position} is larger than the NATS"
                " server's max_payload: raise max_payload, or skip the event"
            ) from error
        except NATS_ERRORS as error:
            raise BrokerUnavailable(
                f"NATS stream {self.prefix}: publish failed: {error!r}"
            ) from error
        finally:
            for ack in acks:
                ack.cancel()  # those still waiting: their outcome is read from the stream later
        failed = [_failure(ack) for ack in acks if _failure(ack) is not None]
        if failed or len(acks) < len(events):
            raise BrokerUnavailable(
                f"NATS stream {self.prefix}: {len(failed)} of {len(events)} events not"
                f" acknowledged ({failed[0] if failed else 'not sent'}); resending from the"
                " stream's last message"
            )
        self._last_sequence = sequence

    async def close(self) -> None:
        client, self._client, self._js = self._client, None, None
        self._last_sequence = None
        if client is not None and not client.is_closed:
            with contextlib.suppress(*NATS_ERRORS):
                await client.close()


def _failure(ack: asyncio.Future[PubAck]) -> str | None:
    """Why an ack does not confirm a new message stored, or None if it does."""
    if ack.cancelled():
        return "no acknowledgement in time"
    error = ack.exception()
    if error is not None:
        return repr(error)
    if ack.result().duplicate:
        return "duplicate (the stream already held it)"
    return None
