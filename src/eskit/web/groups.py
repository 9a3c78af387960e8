"""``/subscriptions``: consumer groups over HTTP, for consumers in any language.

A consumer reads a batch (``POST /subscriptions/{group}/read?consumer=...``), then acks
or nacks the events by id. Reading from a group takes the ``read`` scope on its source:
a category-scoped token sees the groups of its categories only (a group over ``$all``
needs an unscoped ``read``).
"""

import uuid
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Query
from starlette.requests import Request

from eskit.store.model import RecordedEvent
from eskit.subscriptions import Group, GroupNotFound, Groups
from eskit.web.auth import require, require_some
from eskit.web.context import context
from eskit.web.errors import ApiError
from eskit.web.inputs import json_body, only_parameters
from eskit.web.openapi import request_body, responses
from eskit.web.schemas import JSONResponse
from eskit.web.tokens import Grant

MAX_IDS = 1000


class GroupView(msgspec.Struct, frozen=True):
    """A consumer group: its source (``$all``, ``$ce-<category>`` or a stream), settings
    and counts."""

    name: str
    source: str
    strategy: str
    message_timeout: float
    max_retries: int
    max_in_flight: int
    checkpoint: int
    in_flight: int
    waiting: int
    parked: int
    consumers: list[str]
    filter: str | None = None
    """The source's filter on its events (stream name or event type), None if none."""


class GroupList(msgspec.Struct, frozen=True):
    groups: list[GroupView]


class GroupMessage(msgspec.Struct, frozen=True):
    """An event handed to the consumer: ack or nack it by ``event.id`` before the group's
    ``message_timeout``. ``attempt`` is 1 the first time it is handed out."""

    event: RecordedEvent
    attempt: int
    replayed: bool


class GroupBatch(msgspec.Struct, frozen=True):
    messages: list[GroupMessage]


class AckBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Events done, by id."""

    ids: Annotated[list[uuid.UUID], msgspec.Meta(min_length=1, max_length=MAX_IDS)]


class NackBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Events the consumer could not handle: ``retry`` (later, parked after the group's
    ``max_retries``), ``park`` or ``skip``; ``reason`` is kept with a parked event."""

    consumer: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    ids: Annotated[list[uuid.UUID], msgspec.Meta(min_length=1, max_length=MAX_IDS)]
    action: Literal["retry", "park", "skip"]
    reason: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class Counted(msgspec.Struct, frozen=True):
    """How many of the events named were there to ack or nack."""

    count: int


GROUP_TYPES = (GroupList, GroupView, GroupBatch, AckBody, NackBody, Counted)


def groups_of(request: Request) -> Groups:
    """The app's ``Groups`` over its store, made on first use (the admin UI's too)."""
    state = request.app.state
    found: Groups | None = getattr(state, "eskit_groups", None)
    if found is None:
        found = state.eskit_groups = Groups(context(request).store)
    return found


def view(group: Group) -> GroupView:
    s = group.settings
    return GroupView(
        group.name,
        str(group.source),
        s.strategy,
        s.message_timeout,
        s.max_retries,
        s.max_in_flight,
        group.checkpoint,
        group.in_flight,
        group.waiting,
        group.parked,
        list(group.consumers),
        None if group.source.filter is None else str(group.source.filter),
    )


def allowed(grant: Grant, group: Group) -> bool:
    return grant.allows("read", group.source.category_filter)


async def _readable(request: Request, name: str) -> tuple[Groups, Group]:
    ctx = context(request)
    grant = ctx.authenticate(request)
    require_some(grant, "read")
    groups = groups_of(request)
    try:
        group = await groups.get(name)
    except GroupNotFound as error:
        raise ApiError(404, "GroupNotFound", str(error)) from None
    require(grant, "read", group.source.category_filter)
    return groups, group


def add_group_routes(router: APIRouter, secured: Sequence[Any], max_limit: int) -> None:
    read_errors = (404,)

    @router.get(
        "/subscriptions",
        tags=["subscriptions"],
        operation_id="list_groups",
        dependencies=list(secured),
        response_class=JSONResponse,
        responses=responses(200, "GroupList", secured=bool(secured)),
    )
    async def list_groups(request: Request) -> JSONResponse:
        """The consumer groups this token may read from."""
        ctx = context(request)
        grant = ctx.authenticate(request)
        only_parameters(request)
        require_some(grant, "read")
        groups = await groups_of(request).list()
        return JSONResponse(GroupList([view(g) for g in groups if allowed(grant, g)]))

    @router.get(
        "/subscriptions/{group}",
        tags=["subscriptions"],
        operation_id="get_group",
        dependencies=list(secured),
        response_class=JSONResponse,
        responses=responses(200, "GroupView", *read_errors, secured=bool(secured)),
    )
    async def get_group(request: Request, group: str) -> JSONResponse:
        """One consumer group with its counts."""
        only_parameters(request)
        _, found = await _readable(request, group)
        return JSONResponse(view(found))

    @router.post(
        "/subscriptions/{group}/read",
        tags=["subscriptions"],
        operation_id="read_group",
        dependencies=list(secured),
        response_class=JSONResponse,
        responses=responses(200, "GroupBatch", *read_errors, secured=bool(secured)),
    )
    async def read_group(
        request: Request,
        group: str,
        consumer: Annotated[
            str, Query(min_length=1, max_length=200, description="Who reads (any stable name).")
        ],
        limit: Annotated[int, Query(ge=1, le=max_limit, description="Events at most.")] = 100,
    ) -> JSONResponse:
        """Up to ``limit`` events handed to ``consumer`` (none if none is waiting); each
        is its own until it acks or nacks it, or the group's ``message_timeout`` ends."""
        only_parameters(request, "consumer", "limit")
        if not consumer.isprintable():
            raise ApiError(422, "ValidationError", "consumer: control characters")
        groups, found = await _readable(request, group)
        batch = await groups.consumer(found.name, consumer).fetch(limit)
        messages = [GroupMessage(d.event, d.attempt, d.replayed) for d in batch]
        return JSONResponse(GroupBatch(messages))

    @router.post(
        "/subscriptions/{group}/ack",
        tags=["subscriptions"],
        operation_id="ack_group_events",
        dependencies=list(secured),
        response_class=JSONResponse,
        responses=responses(200, "Counted", 400, 404, 415, secured=bool(secured)),
        openapi_extra={"requestBody": request_body("AckBody")},
    )
    async def ack(request: Request, group: str) -> JSONResponse:
        """Ack events by id: they are not handed out again."""
        only_parameters(request)
        groups, found = await _readable(request, group)
        body = await json_body(request, AckBody)
        return JSONResponse(Counted(await groups.ack(found.name, [str(i) for i in body.ids])))

    @router.post(
        "/subscriptions/{group}/nack",
        tags=["subscriptions"],
        operation_id="nack_group_events",
        dependencies=list(secured),
        response_class=JSONResponse,
        responses=responses(200, "Counted", 400, 404, 415, secured=bool(secured)),
        openapi_extra={"requestBody": request_body("NackBody")},
    )
    async def nack(request: Request, group: str) -> JSONResponse:
        """Nack events ``consumer`` holds, by id: retry, park or skip them."""
        only_parameters(request)
        groups, found = await _readable(request, group)
        body = await json_body(request, NackBody)
        ids = [str(i) for i in body.ids]
        count = await groups.nack(found.name, body.consumer, ids, body.action, body.reason)
        return JSONResponse(Counted(count))
