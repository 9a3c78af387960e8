"""The PersistentSubscriptions service over eskit's consumer groups (``eskit.subscriptions``):
``Create``, ``Update``, ``Delete``, ``GetInfo``, ``List``, ``ReplayParked`` and ``Read``, to a
stream, to ``$ce-<category>`` and to ``$all`` (with a filter: stream or event type, prefixes
or a regex, stored with the group).

``Read`` is one consumer of the group per call: it hands out up to the client's
``buffer_size`` events at a time, each with its ``retry_count`` (deliveries before this
one), and applies the client's acks and nacks as they come (``retry``: handed out again,
parked after ``max_retry_count``; ``park``; ``skip``; ``stop``: a retry that ends the
call; ``unknown``: a retry). An event neither acked nor nacked within the group's message
timeout goes to another consumer; when the call ends, what it held goes at once.

The caller's token needs ``read`` on the group's category (on every category for ``$all``)
to manage, list or read a group. How KurrentDB's settings map is in ``groups``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Final

import grpc

from eskit.grpc.auth import Authenticator
from eskit.grpc.errors import Context, answered, denied, invalid, streamed
from eskit.grpc.groups import created, exists, info, named_source, not_found, settings_of
from eskit.grpc.mapping import recorded, stream_name, uuid_of
from eskit.grpc.protos import persistent_pb2, persistent_pb2_grpc, shared_pb2
from eskit.grpc.service import Methods, Service
from eskit.subscriptions import Group, GroupExists, GroupNotFound, Groups, Source, tables
from eskit.subscriptions.model import Action
from eskit.web.tokens import Grant

SERVICE: Final = "event_store.client.persistent_subscriptions.persistentsubscriptions"
METHODS: Methods = {
    SERVICE: {
        "create": ("stream", "all"),
        "update": ("stream", "all"),
        "delete": ("stream", "all"),
        "read": ("stream", "all"),
        "getinfo": ("stream", "all"),
        "replayparked": ("stream", "all"),
        "list": ("stream", "all"),
        "restartsubsystem": (),
    }
}
POLL: Final = 0.1
"""Seconds a reader with nothing to hand out waits before it looks again (an ack or nack
wakes it at once)."""
DEFAULT_BUFFER: Final = 10
Nack = persistent_pb2.ReadReq.Nack
ACTIONS: Final[dict[int, Action]] = {
    Nack.Unknown: "retry",
    Nack.Retry: "retry",
    Nack.Stop: "retry",
    Nack.Park: "park",
    Nack.Skip: "skip",
}
Message = persistent_pb2.ReadResp.ReadEvent.RecordedEvent


def register(server: grpc.aio.Server, service: Service) -> Methods:
    persistent_pb2_grpc.add_PersistentSubscriptionsServicer_to_server(  # type: ignore[no-untyped-call]
        PersistentSubscriptions(Groups(service.store), service.auth), server
    )
    return METHODS


class PersistentSubscriptions(persistent_pb2_grpc.PersistentSubscriptionsServicer):
    def __init__(self, groups: Groups, auth: Authenticator) -> None:
        self.groups = groups
        self.auth = auth
        self._ready = False

    async def ready(self) -> None:
        """The group tables, before the first read of them."""
        if not self._ready:
            await self.groups.database.write(tables.ensure_schema)
            self._ready = True

    async def _grant(self, context: Context) -> Grant:
        await self.ready()
        return self.auth.grant(context.invocation_metadata())

    def _check(self, grant: Grant, source: Source) -> None:
        category = source.category_filter
        if not grant.allows("read", category):
            where = "every category ($all)" if category is None else f"category {category!r}"
            raise denied(f"token {grant.name!r} may not read {where}")

    async def _group(self, grant: Grant, name: str, source: Source) -> Group:
        """The group ``name`` on ``source`` (a ``$all`` group may be filtered to one
        category); ``NOT_FOUND`` if there is none."""
        try:
            group = await self.groups.get(name)
        except GroupNotFound:
            raise not_found(name, str(source)) from None
        if group.source != source and not (source.kind == "all" and group.source.kind != "stream"):
            raise not_found(name, str(source))
        self._check(grant, group.source)
        return group

    @answered
    async def Create(self, request: Any, context: Context) -> Any:
        return await self.create(await self._grant(context), request.options)

    async def create(self, grant: Grant, options: Any) -> Any:
        source, start = await created(self.groups.store, options)
        self._check(grant, source)
        settings = settings_of(options.settings, create=True)
        try:
            await self.groups.create(options.group_name, source, start=start, settings=settings)
        except GroupExists:
            raise exists(options.group_name, str(source)) from None
        return persistent_pb2.CreateResp()

    @answered
    async def Update(self, request: Any, context: Context) -> Any:
        return await self.update(await self._grant(context), request.options)

    async def update(self, grant: Grant, options: Any) -> Any:
        which = options.WhichOneof("stream_option")
        if which == "stream":
            source = Source.parse(stream_name(options.stream.stream_identifier))
        elif which == "all":
            source = Source.all()
        else:
            source = Source.parse(stream_name(options.stream_identifier))
        group = await self._group(grant, options.group_name, source)
        await self.groups.update(group.name, settings_of(options.settings, create=False))
        return persistent_pb2.UpdateResp()

    @answered
    async def Delete(self, request: Any, context: Context) -> Any:
        return await self.delete(await self._grant(context), request.options)

    async def delete(self, grant: Grant, options: Any) -> Any:
        group = await self._group(grant, options.group_name, named_source(options))
        await self.groups.delete(group.name)
        return persistent_pb2.DeleteResp()

    @answered
    async def GetInfo(self, request: Any, context: Context) -> Any:
        return await self.get_info(await self._grant(context), request.options)

    async def get_info(self, grant: Grant, options: Any) -> Any:
        group = await self._group(grant, options.group_name, named_source(options))
        return persistent_pb2.GetInfoResp(subscription_info=info(group, named_source(options)))

    @answered
    async def List(self, request: Any, context: Context) -> Any:
        return await self.list(await self._grant(context), request.options)

    async def list(self, grant: Grant, options: Any) -> Any:
        wanted: str | None = None
        if options.WhichOneof("list_option") == "list_for_stream":
            given = options.list_for_stream
            wanted = "$all" if given.WhichOneof("stream_option") == "all" else None
            wanted = wanted or stream_name(given.stream)
        found = [
            info(group)
            for group in await self.groups.list()
            if grant.allows("read", group.source.category_filter)
            and (wanted is None or str(group.source) == wanted)
        ]
        return persistent_pb2.ListResp(subscriptions=found)

    @answered
    async def ReplayParked(self, request: Any, context: Context) -> Any:
        return await self.replay_parked(await self._grant(context), request.options)

    async def replay_parked(self, grant: Grant, options: Any) -> Any:
        group = await self._group(grant, options.group_name, named_source(options))
        up_to: int | None = None
        if options.WhichOneof("stop_at_option") == "stop_at":
            first = await self.groups.parked(group.name, limit=max(options.stop_at, 1))
            up_to = first[-1].seq if first and options.stop_at > 0 else 0
        if up_to != 0:
            await self.groups.replay(group.name, requested_by=grant.name, up_to=up_to)
        return persistent_pb2.ReplayParkedResp()

    @answered
    async def RestartSubsystem(self, request: Any, context: Context) -> Any:
        await self._grant(context)
        return shared_pb2.Empty()  # nothing to restart: groups live in the database

    @streamed
    async def Read(self, request_iterator: Any, context: Context) -> AsyncIterator[Any]:
        grant = await self._grant(context)
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("content") != "options":
            raise invalid("a persistent subscription read starts with its options")
        options = first.options
        source = named_source(options)
        group = await self._group(grant, options.group_name, source)
        structured = options.uuid_option.WhichOneof("content") == "structured"
        shown = "$all" if source.kind == "all" else str(source)
        reader = Reader(self.groups, group, grant, options.buffer_size or DEFAULT_BUFFER)
        yield persistent_pb2.ReadResp(
            subscription_confirmation=persistent_pb2.ReadResp.SubscriptionConfirmation(
                subscription_id=f"{shown}::{group.name}"
            )
        )
        async for response in reader.run(requests, structured):
            yield response


class Reader:
    """One ``Read`` call: a consumer of the group, and the acks and nacks its client sends."""

    def __init__(self, groups: Groups, group: Group, grant: Grant, buffer: int) -> None:
        self.groups, self.group, self.buffer = groups, group, max(1, min(buffer, 10_000))
        self.consumer = groups.consumer(group.name, f"grpc:{grant.name}:{uuid.uuid4().hex[:8]}")
        self.timeout = group.settings.message_timeout
        self.held: dict[str, float] = {}
        """Event ids handed out and not yet acked or nacked, with when they time out."""
        self.wake = asyncio.Event()
        self.stopped = False

    async def run(self, requests: AsyncIterator[Any], structured: bool) -> AsyncIterator[Any]:
        answers = asyncio.create_task(self._answer(requests))
        try:
            while not answers.done():
                now = time.monotonic()
                for event_id in [i for i, deadline in self.held.items() if deadline < now]:
                    del self.held[event_id]
                room = self.buffer - len(self.held)
                try:
                    batch = await self.consumer.fetch(room) if room > 0 else []
                except GroupNotFound:  # deleted while read
                    raise not_found(self.group.name, str(self.group.source)) from None
                for delivery in batch:
                    self.held[str(delivery.event.id)] = now + self.timeout
                    yield persistent_pb2.ReadResp(
                        event=persistent_pb2.ReadResp.ReadEvent(
                            event=recorded(delivery.event, structured, kind=Message),
                            commit_position=delivery.event.position,
                            retry_count=delivery.attempt - 1,
                        )
                    )
                if not batch:
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):  # not wait_for: see store.base
                        async with asyncio.timeout(POLL):
                            await self.wake.wait()
            answers.result()  # an error of the client's requests ends the call with it
        finally:
            answers.cancel()
            with contextlib.suppress(GroupNotFound):
                await asyncio.shield(self.consumer.close())

    async def _answer(self, requests: AsyncIterator[Any]) -> None:
        """Apply the client's acks and nacks until it stops sending (or says ``stop``)."""
        try:
            await self._apply(requests)
        except GroupNotFound:  # deleted while read
            raise not_found(self.group.name, str(self.group.source)) from None
        finally:
            self.wake.set()

    async def _apply(self, requests: AsyncIterator[Any]) -> None:
        async for request in requests:
            which = request.WhichOneof("content")
            if which not in ("ack", "nack"):
                raise invalid("a persistent subscription read sends its options once")
            given = getattr(request, which)
            ids = [str(uuid_of(i)) for i in given.ids]
            if which == "ack":
                await self.groups.ack(self.group.name, ids)
            else:
                action = ACTIONS.get(given.action)
                if action is None:
                    raise invalid(f"unknown nack action {given.action}")
                await self.groups.nack(
                    self.group.name, self.consumer.name, ids, action, given.reason or None
                )
            for event_id in ids:
                self.held.pop(event_id, None)
            self.wake.set()
            if which == "nack" and given.action == Nack.Stop:
                return
