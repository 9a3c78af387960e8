"""The live feed as Server-Sent Events: each event a ``data:`` line of JSON with its position
as ``id:``, so a client that reconnects with ``Last-Event-ID`` resumes right after it.

A task follows ``store.subscribe`` into a small queue; the response sends what arrives and
a comment every ``heartbeat`` seconds while nothing does, so proxies keep the connection
open. The feed ends when the client goes away (the server cancels it), when the server
begins to shut down (``closing``), or when the store closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec

from eskit.store.base import EventStore
from eskit.store.model import RecordedEvent

log = logging.getLogger("eskit.web")
HEARTBEAT = b": heartbeat\n\n"
TASK = "eskit live feed"
"""The name of the task following the store for a feed (tests look for it)."""
_BATCH = 100
"""Events sent in one write when many are waiting."""

encode = msgspec.json.Encoder().encode


def frame(event: RecordedEvent) -> bytes:
    """One Server-Sent Event: the position as id, the event as one line of JSON."""
    return b"id: %d\ndata: %s\n\n" % (event.position, encode(event))


async def feed(
    store: EventStore,
    after: int,
    types: Sequence[str] | None,
    category: str | None,
    *,
    closing: asyncio.Event,
    heartbeat: float,
    buffer: int,
) -> AsyncIterator[bytes]:
    """The bytes of the feed of events after position ``after`` (filtered)."""
    queue: asyncio.Queue[RecordedEvent] = asyncio.Queue(buffer)
    follower = asyncio.create_task(
        _follow(store, after, types, category, queue), name=f"{TASK} after {after}"
    )
    stop = asyncio.ensure_future(closing.wait())
    getting: asyncio.Future[RecordedEvent] | None = None
    try:
        yield b": following the log after position %d\n\n" % after
        while True:
            if getting is None:
                getting = asyncio.ensure_future(queue.get())
            waiting: set[asyncio.Future[Any]] = {getting, stop, follower}
            done, _ = await asyncio.wait(
                waiting, timeout=heartbeat, return_when=asyncio.FIRST_COMPLETED
            )
            if stop in done:
                return
            if getting in done:
                event, getting = getting.result(), None
                yield _frames([event], queue, _BATCH)
            elif follower in done:  # the subscription ended: send what is left, then end
                if not queue.empty():
                    yield _frames([], queue, queue.qsize())
                return
            else:
                yield HEARTBEAT
    finally:
        for task in (follower, stop, getting):
            if task is not None:
                task.cancel()


def _frames(events: list[RecordedEvent], queue: asyncio.Queue[RecordedEvent], most: int) -> bytes:
    """``events`` and those waiting in ``queue`` (up to ``most`` in all), as one write."""
    while len(events) < most and not queue.empty():
        events.append(queue.get_nowait())
    return b"".join(map(frame, events))


async def _follow(
    store: EventStore,
    after: int,
    types: Sequence[str] | None,
    category: str | None,
    queue: asyncio.Queue[RecordedEvent],
) -> None:
    """Put every event of the subscription in ``queue`` until it ends."""
    try:
        async for event in store.subscribe(after, types, category):
            await queue.put(event)
    except Exception as error:  # the store closed or failed: the client reconnects
        log.warning("live feed ended: %s", type(error).__name__)
