"""The streams pages: list and search streams (by category, or those holding events of a
type), and one stream's events with their metadata and data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from eskit.application.repository import Repository
from eskit.cli.common import when
from eskit.store import rules
from eskit.store.model import RecordedEvent
from eskit.web.admin.html import Html, field, link, pretty_json, search_form, table, tag, url
from eskit.web.admin.session import user_page, visitor
from eskit.web.admin.site import admin_of, base

TYPE_SCAN: Final = 1000
"""Events of the type read per page when searching streams by event type."""
Text = Annotated[str, Query(max_length=200)]
Count = Annotated[int, Query(ge=1, le=1000)]


def add_stream_routes(router: APIRouter) -> None:
    @router.get("/streams")
    async def streams(
        request: Request,
        category: Text = "",
        type: Text = "",
        after: Text = "",
        after_position: Annotated[int, Query(ge=0, le=rules.MAX_INT64)] = 0,
        limit: Count = 50,
    ) -> Response:
        """Streams by name (of one category), or those with events of one type."""
        who = visitor(request)
        root = base(request)
        search = search_form(
            f"{root}/streams",
            "Search",
            field("Category", "category", category, placeholder="invoice"),
            field("Event type", "type", type, placeholder="InvoicePaid"),
        )
        go = search_form(
            f"{root}/stream",
            "Open",
            field("Stream", "name", placeholder="invoice-42", required=True),
        )
        if type:
            found = await _with_type(request, type, category or None, after_position)
        else:
            found = await _by_name(request, category or None, after or None, limit)
        return user_page(request, who, "Streams", search, go, found)

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
        links = [
            link(url(f"{root}/stream", {**here, "backwards": str(not backwards).lower()}), order)
        ]
        if len(events) > limit:
            following = url(f"{root}/stream", {**here, "from_version": events[limit].version})
            links.append(link(following, "older events" if backwards else "newer events"))
        cards = [_card(root, event, admin.aggregates) for event in events[:limit]]
        empty = tag("p", f"stream {name!r} has no events") if not events else ""
        return user_page(
            request, who, name, tag("p", *_spaced(links), class_="pager"), empty, *cards
        )


async def _by_name(request: Request, category: str | None, after: str | None, limit: int) -> Html:
    infos = await admin_of(request).store.list_streams(category, after, limit + 1)
    root = base(request)
    rows = [
        (
            link(url(f"{root}/stream", {"name": i.stream}), i.stream),
            i.category,
            i.event_count,
            i.last_type,
            i.last_position,
            when(i.last_recorded_at),
            tag("span", i.status, class_=f"status {i.status}"),
        )
        for i in infos[:limit]
    ]
    headings = ("stream", "category", "events", "last type", "last position", "last written")
    listed = table((*headings, "status"), rows, class_="streams")
    if not infos:
        return tag("p", "no streams" + (f" of category {category!r}" if category else ""))
    if len(infos) <= limit:
        return listed
    following = {"category": category, "after": infos[limit - 1].stream, "limit": limit}
    return Html(listed + tag("p", link(url(f"{root}/streams", following), "next streams")))


async def _with_type(request: Request, kind: str, category: str | None, after: int) -> Html:
    """The streams holding events of type ``kind``, in the order the log reached them."""
    rules.check_types([kind])
    store = admin_of(request).store
    page = await store.read_page(after, TYPE_SCAN, [kind], category)
    found: dict[str, list[RecordedEvent]] = {}
    for event in page.events:
        found.setdefault(event.stream, []).append(event)
    root = base(request)
    rows = [
        (
            link(url(f"{root}/stream", {"name": name}), name),
            len(events),
            events[0].position,
            events[-1].position,
            when(events[-1].recorded_at),
        )
        for name, events in found.items()
    ]
    scope = f" of category {category!r}" if category else ""
    heading = tag("h2", f"streams with {kind} events{scope}, after position {after}")
    if not rows:
        return Html(heading + tag("p", "none found"))
    headings = ("stream", f"{kind} events", "first position", "last position", "last written")
    listed = table(headings, rows, class_="streams")
    if page.next_after >= await store.last_position():
        return Html(heading + listed)
    following = {"type": kind, "category": category, "after_position": page.next_after}
    more = tag("p", link(url(f"{root}/streams", following), "search further"))
    return Html(heading + listed + more)


def _card(root: str, event: RecordedEvent, aggregates: Mapping[str, Repository[Any]]) -> Html:
    """One event: where it is, what it says, and links to its trace and its aggregate."""
    metadata = event.metadata
    facts: list[object] = [
        f"position {event.position}",
        when(event.recorded_at),
        f"id {event.id}",
    ]
    correlation = metadata.get("correlation_id")
    if correlation is not None:
        facts.append(link(url(f"{root}/trace", {"correlation_id": correlation}), "trace"))
    kind = _aggregate_of(event.stream, aggregates)
    if kind is not None:
        at = {"kind": kind, "id": event.stream.split("-", 1)[1], "version": event.version}
        facts.append(link(url(f"{root}/aggregates", at), "state after this event"))
    return tag(
        "article",
        tag("h2", f"v{event.version} ", tag("span", event.type, class_="type")),
        tag("p", *_spaced(facts), class_="facts"),
        tag("div", tag("h3", "metadata"), pretty_json(metadata), class_="metadata"),
        tag("div", tag("h3", "data"), pretty_json(event.data), class_="data"),
        class_="event",
        data_version=event.version,
    )


def _aggregate_of(stream: str, aggregates: Mapping[str, Repository[Any]]) -> str | None:
    category, dash, _ = stream.partition("-")
    if not dash:
        return None
    return next((k for k, r in aggregates.items() if r.model.category == category), None)


def _spaced(parts: Sequence[object]) -> list[object]:
    """The parts separated by a middle dot."""
    spaced: list[object] = []
    for part in parts:
        spaced += [" · ", part] if spaced else [part]
    return spaced
