"""The streams pages: list and search streams (by category, or those holding events of a
type), and one stream's events with their metadata and data."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from eskit.application.repository import Repository
from eskit.store import rules
from eskit.store.model import RecordedEvent
from eskit.web.admin.session import user_page, visitor
from eskit.web.admin.site import admin_of, base, url

TYPE_SCAN: Final = 1000
"""Events of the type read per page when searching streams by event type."""
Text = Annotated[str, Query(max_length=200)]
Count = Annotated[int, Query(ge=1, le=1000)]
DEFAULT_LIMIT: Final = 50
"""Streams listed per page."""


def add_stream_routes(router: APIRouter) -> None:
    @router.get("/streams")
    async def streams(
        request: Request,
        category: Text = "",
        type: Text = "",
        after: Text = "",
        after_position: Annotated[int, Query(ge=0, le=rules.MAX_INT64)] = 0,
        limit: Count = DEFAULT_LIMIT,
    ) -> Response:
        """Streams by name (of one category), a page at a time, or those with events of
        one type."""
        who = visitor(request)
        if type:
            found = await _with_type(request, type, category or None, after_position)
        else:
            found = await _by_name(request, category or None, after or None, limit)
        return user_page(
            request, who, "streams.html", "Streams", category=category, type=type, **found
        )

    @router.get("/stream")
    async def stream(
        request: Request,
        name: Annotated[str, Query(min_length=1, max_length=rules.MAX_NAME_LENGTH)],
        from_version: Annotated[int | None, Query(ge=0, le=rules.MAX_INT64)] = None,
        backwards: bool = True,
        limit: Count = 20,
    ) -> Response:
        """A stream's events, newest first by default, with metadata and data as JSON."""
        who = visitor(request)
        admin = admin_of(request)
        rules.check_name(name)
        reading = admin.store.read_stream(name, from_version, backwards, limit + 1)
        events = [event async for event in reading]
        root = base(request)
        here = {"name": name, "backwards": str(backwards).lower(), "limit": limit}
        order = "oldest first" if backwards else "newest first"
        links: list[tuple[str | None, str]] = [
            (url(f"{root}/stream", {**here, "backwards": str(not backwards).lower()}), order)
        ]
        if from_version is not None:
            links.append((url(f"{root}/stream", here), "newest" if backwards else "oldest"))
        if len(events) > limit:
            following = url(f"{root}/stream", {**here, "from_version": events[limit].version})
            links.append((following, "older events" if backwards else "newer events"))
        cards = [_card(root, event, admin.aggregates) for event in events[:limit]]
        return user_page(request, who, "stream.html", name, name=name, links=links, cards=cards)


async def _by_name(
    request: Request, category: str | None, after: str | None, limit: int
) -> dict[str, Any]:
    """A page of ``limit`` streams after the name ``after``, and the links to the first and
    the next page."""
    infos = await admin_of(request).store.list_streams(category, after, limit + 1)
    root = base(request)
    here = {"category": category, "limit": limit if limit != DEFAULT_LIMIT else None}
    links: list[tuple[str | None, str]] = []
    if after is not None:
        links.append((url(f"{root}/streams", here), "first streams"))
    if len(infos) > limit:
        following = url(f"{root}/streams", {**here, "after": infos[limit - 1].stream})
        links.append((following, "next streams"))
    return {"infos": infos[:limit], "links": links, "after": after}


async def _with_type(
    request: Request, kind: str, category: str | None, after: int
) -> dict[str, Any]:
    """The streams holding events of type ``kind``, in the order the log reached them."""
    rules.check_types([kind])
    store = admin_of(request).store
    page = await store.read_page(after, TYPE_SCAN, [kind], category)
    found: dict[str, list[RecordedEvent]] = {}
    for event in page.events:
        found.setdefault(event.stream, []).append(event)
    root = base(request)
    rows = [
        Found(name, len(events), events[0].position, events[-1].position, events[-1].recorded_at)
        for name, events in found.items()
    ]
    links: list[tuple[str | None, str]] = []
    if after:
        first = {"type": kind, "category": category}
        links.append((url(f"{root}/streams", first), "search from the start"))
    if rows and page.next_after < await store.last_position():
        following = {"type": kind, "category": category, "after_position": page.next_after}
        links.append((url(f"{root}/streams", following), "search further"))
    return {"found": rows, "links": links, "after_position": after}


@dataclasses.dataclass(frozen=True)
class Found:
    """A stream holding events of the type searched for (in the page read)."""

    stream: str
    events: int
    first_position: int
    last_position: int
    recorded_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class Card:
    """One event as the stream page shows it, with links to its trace and its aggregate."""

    event: RecordedEvent
    trace: str | None
    aggregate: str | None


def _card(root: str, event: RecordedEvent, aggregates: Mapping[str, Repository[Any]]) -> Card:
    correlation = event.metadata.get("correlation_id")
    trace = None
    if correlation is not None:
        trace = url(f"{root}/trace", {"correlation_id": correlation})
    kind = _aggregate_of(event.stream, aggregates)
    aggregate = None
    if kind is not None:
        at = {"kind": kind, "id": event.stream.split("-", 1)[1], "version": event.version}
        aggregate = url(f"{root}/aggregates", at)
    return Card(event, trace, aggregate)


def _aggregate_of(stream: str, aggregates: Mapping[str, Repository[Any]]) -> str | None:
    category, dash, _ = stream.partition("-")
    if not dash:
        return None
    return next((k for k, r in aggregates.items() if r.model.category == category), None)
