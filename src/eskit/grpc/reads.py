"""``Streams.Read``: reads and catch-up subscriptions of a stream, of ``$all`` (with
server-side filters), of ``$ce-<category>`` and ``$et-<type>``, and of ``$$<stream>``.

Positions are eskit's: reading ``$all`` forwards from a position includes the event there,
backwards from it starts before it, and a subscription from it starts after it. Revisions
of a stream are versions; reading from one includes it, subscribing from one starts after
it. ``$ce-``/``$et-`` yield the original events (as KurrentDB does with resolve-links on),
each with a link whose revision is the event's position, so a checkpoint taken from the link
resumes there.

A subscription first confirms, then catches up page by page, says ``caught_up`` when it
reaches the head and follows live; a page that comes back full while live says
``fell_behind`` until it catches up again. Filtered ``$all`` subscriptions send a checkpoint
every ``window * multiplier`` events searched, and at the head.

Each event goes out as the bytes of its ``ReadResp`` (``wire``), the other messages as
protobuf objects; the Read method's serializer takes both (``streams.register``).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from eskit.grpc import metadata as stream_metadata
from eskit.grpc.errors import Refused, denied
from eskit.grpc.filters import Selection, of_filter, of_stream
from eskit.grpc.mapping import stream_name, ticks, uuid_message
from eskit.grpc.protos import shared_pb2, streams_pb2
from eskit.grpc.wire import read_event
from eskit.store import rules
from eskit.store.base import EventStore
from eskit.store.model import RecordedEvent
from eskit.web.tokens import Grant

Resp = streams_pb2.ReadResp
Options = streams_pb2.ReadReq.Options
PAGE = 500
"""Events fetched per page by subscriptions (memory stays bounded by it)."""
DEFAULT_WINDOW = 32
"""The checkpoint window of a filter that gives none."""


class Reader:
    """Answers ``Read`` requests over one store."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def read(self, options: Any, grant: Grant) -> AsyncIterator[Any]:
        structured = options.uuid_option.WhichOneof("content") == "structured"
        backwards = options.read_direction == Options.Backwards
        subscribing = options.WhichOneof("count_option") == "subscription"
        count = options.count if options.WhichOneof("count_option") == "count" else None
        if options.WhichOneof("stream_option") == "all":
            selection = of_filter(options, grant)
            where = options.all.WhichOneof("all_option")
            position = options.all.position.commit_position
            if subscribing:
                yield _confirmation()
                after = await self._start_after(where, position)
                async for response in self._follow_log(
                    selection, after, structured, _interval(options)
                ):
                    yield response
                return
            async for response in self._read_log(
                selection, where, position, backwards, count, structured
            ):
                yield response
            return
        stream = stream_name(options.stream.stream_identifier)
        where = options.stream.WhichOneof("revision_option")
        revision = options.stream.revision
        target = stream_metadata.target(stream)
        if target is not None:
            async for response in self._read_metadata(stream, target, grant, structured):
                yield response
            return
        virtual = of_stream(stream, grant)
        if virtual is not None:  # $ce-/$et-: revisions are positions
            if subscribing:
                yield _confirmation()
                after = await self._start_after(where, revision)
                async for response in self._follow_log(virtual, after, structured, 0, stream):
                    yield response
                return
            position = revision + 1 if backwards and where == "revision" else revision
            async for response in self._read_log(
                virtual, where, position, backwards, count, structured, stream
            ):
                yield response
            return
        rules.check_name(stream)
        category = rules.category(stream)
        if not grant.allows("read", category):
            raise denied(f"token {grant.name!r} may not read category {category!r}")
        if subscribing:
            yield _confirmation()
            async for response in self._follow_stream(stream, where, revision, structured):
                yield response
            return
        async for response in self._read_stream(
            stream, where, revision, backwards, count, structured
        ):
            yield response

    # -- reads ------------------------------------------------------------------------------

    async def _read_stream(
        self,
        stream: str,
        where: str | None,
        revision: int,
        backwards: bool,
        count: int | None,
        structured: bool,
    ) -> AsyncIterator[Any]:
        start: int | None = revision if where == "revision" else None
        if where == "start" and backwards:  # backwards from the start: the first event
            start = 0
        if where == "end" and not backwards:
            start = _after_last(await self.store.stream_version(stream))
        any_read = False
        events = self.store.read_stream(stream, start, backwards, _limit(count))
        async with _closed(events):
            async for event in events:
                any_read = True
                yield read_event(event, structured)
        if not any_read and await self.store.stream_version(stream) is None:
            yield Resp(
                stream_not_found=Resp.StreamNotFound(
                    stream_identifier=shared_pb2.StreamIdentifier(stream_name=stream.encode())
                )
            )

    async def _read_log(
        self,
        selection: Selection,
        where: str | None,
        position: int,
        backwards: bool,
        count: int | None,
        structured: bool,
        link: str | None = None,
    ) -> AsyncIterator[Any]:
        limit = _limit(count)
        if limit == 0:
            return
        store_limit = limit if selection.narrowed else None
        if backwards:
            if where == "start":  # nothing lies before the start of the log
                return
            before = position if where == "position" or where == "revision" else None
            events = self.store.read_all(
                backwards=True,
                before=before,
                limit=store_limit,
                types=selection.types,
                category=selection.category,
            )
        else:
            if where == "end":
                return
            after = max(0, position - 1) if where in ("position", "revision") else 0
            events = self.store.read_all(
                after, store_limit, types=selection.types, category=selection.category
            )
        yielded = 0
        async with _closed(events):
            async for event in events:
                if selection.matches(event):
                    yield read_event(event, structured, link)
                    yielded += 1
                    if limit is not None and yielded >= limit:
                        return

    async def _read_metadata(
        self, stream: str, target: str, grant: Grant, structured: bool
    ) -> AsyncIterator[Any]:
        category = rules.category(target)
        if not grant.allows("read", category):
            raise denied(f"token {grant.name!r} may not read category {category!r}")
        body = stream_metadata.dump(await self.store.get_stream_metadata(target))
        if body is None:
            yield Resp(
                stream_not_found=Resp.StreamNotFound(
                    stream_identifier=shared_pb2.StreamIdentifier(stream_name=stream.encode())
                )
            )
            return
        message = streams_pb2.ReadResp.ReadEvent.RecordedEvent(
            id=uuid_message(stream_metadata.event_id(stream), structured),
            stream_identifier=shared_pb2.StreamIdentifier(stream_name=stream.encode()),
            stream_revision=0,
            metadata={
                "type": stream_metadata.METADATA_TYPE,
                "content-type": "application/json",
                "created": str(ticks(stream_metadata.now())),
            },
            data=body,
        )
        yield Resp(event=Resp.ReadEvent(event=message, commit_position=0))

    # -- subscriptions ------------------------------------------------------------------------

    async def _start_after(self, where: str | None, position: int) -> int:
        if where == "end":
            return await self.store.last_position()
        return position if where in ("position", "revision") else 0

    async def _follow_log(
        self,
        selection: Selection,
        after: int,
        structured: bool,
        interval: int,
        link: str | None = None,
    ) -> AsyncIterator[Any]:
        searched = 0
        live = False
        while True:
            page = await self.store.read_page(
                after, PAGE, types=selection.types, category=selection.category
            )
            for event in page.events:
                if selection.matches(event):
                    yield read_event(event, structured, link)
                searched += 1
                if interval and searched >= interval:
                    searched = 0
                    yield _checkpoint(event.position)
            after = page.next_after
            if len(page.events) == PAGE:
                if live:
                    live = False
                    yield Resp(fell_behind=Resp.FellBehind(timestamp=_now(), position=_at(after)))
                continue
            if after < await self.store.last_position():
                continue
            if not live:
                live = True
                yield Resp(caught_up=Resp.CaughtUp(timestamp=_now(), position=_at(after)))
            if interval:
                yield _checkpoint(after)
            await self._wait(after)

    async def _follow_stream(
        self, stream: str, where: str | None, revision: int, structured: bool
    ) -> AsyncIterator[Any]:
        if where == "end":
            version = _after_last(await self.store.stream_version(stream))
        else:
            version = revision + 1 if where == "revision" else 0
        live = False
        while True:
            head = await self.store.last_position()
            got = 0
            events = self.store.read_stream(stream, version, False, PAGE)
            async with _closed(events):
                async for event in events:
                    got += 1
                    version = event.version + 1
                    yield read_event(event, structured)
            if got == PAGE:
                if live:
                    live = False
                    yield Resp(
                        fell_behind=Resp.FellBehind(timestamp=_now(), stream_revision=version - 1)
                    )
                continue
            if not live:
                live = True
                yield Resp(caught_up=Resp.CaughtUp(timestamp=_now(), stream_revision=version - 1))
            await self._wait(head)

    async def _wait(self, after: int) -> None:
        """Until an event past ``after`` exists; ``UNAVAILABLE`` once the store closed."""
        await self.store.wait_for_events(after)
        if not self.store.is_open:
            raise Refused(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")


@contextlib.asynccontextmanager
async def _closed(
    events: AsyncIterator[RecordedEvent],
) -> AsyncIterator[AsyncIterator[RecordedEvent]]:
    """``events``, closed when the block ends (a read stopped early releases its cursor)."""
    try:
        yield events
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()


def _confirmation() -> Any:
    return Resp(confirmation=Resp.SubscriptionConfirmation(subscription_id=str(uuid.uuid4())))


def _checkpoint(position: int) -> Any:
    return Resp(
        checkpoint=Resp.Checkpoint(
            commit_position=position, prepare_position=position, timestamp=_now()
        )
    )


def _at(position: int) -> Any:
    return Resp.Position(commit_position=position, prepare_position=position)


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def _interval(options: Any) -> int:
    """Events searched between checkpoints of a filtered subscription (0: none)."""
    if options.WhichOneof("filter_option") != "filter":
        return 0
    given = options.filter
    window = given.max if given.WhichOneof("window") == "max" and given.max else DEFAULT_WINDOW
    return int(window) * max(1, int(given.checkpointIntervalMultiplier))


def _after_last(version: int | None) -> int:
    return 0 if version is None else version + 1


def _limit(count: int | None) -> int | None:
    """A read's count as a limit: KurrentDB clients send the largest int for "all"."""
    return None if count is None or count >= 2**62 else count
