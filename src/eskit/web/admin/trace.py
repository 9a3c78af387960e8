"""The causal trace of one correlation id, as a tree: the commands of the chain hold the
events they wrote, and an event holds the commands it caused (``eskit trace``'s tree).

The trace scans the whole log (``eskit.application.trace``): on a large log it takes as
long as reading it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from eskit.application.trace import Trace, TraceCommand, TraceEvent, trace
from eskit.cli.common import when
from eskit.web.admin.html import Html, field, link, search_form, tag, url
from eskit.web.admin.session import user_page, visitor
from eskit.web.admin.site import admin_of, base


def add_trace_routes(router: APIRouter) -> None:
    @router.get("/trace")
    async def show(
        request: Request, correlation_id: Annotated[str, Query(max_length=200)] = ""
    ) -> Response:
        who = visitor(request)
        root = base(request)
        form = search_form(
            f"{root}/trace",
            "Trace",
            field("Correlation id", "correlation_id", correlation_id, size=40, required=True),
        )
        if not correlation_id:
            return user_page(request, who, "Trace", form)
        found = await trace(admin_of(request).store, correlation_id)
        return user_page(request, who, "Trace", form, render(root, found))


def render(root: str, found: Trace) -> Html:
    """The trace as nested lists."""
    if not found.count:
        return tag("p", f"no events with correlation id {found.correlation_id!r}")
    events = "event" if found.count == 1 else "events"
    summary = tag("p", f"correlation {found.correlation_id} · {found.count} {events}")
    return Html(summary + tag("ul", *(_node(root, n) for n in found.roots), class_="trace"))


def _node(root: str, node: TraceCommand | TraceEvent) -> Html:
    if isinstance(node, TraceCommand):
        label = tag("span", tag("strong", node.type, class_="command"), f" command {node.id}")
        children: list[TraceCommand | TraceEvent] = list(node.events)
    else:
        stream = url(f"{root}/stream", {"name": node.stream, "from_version": node.version,
                                        "backwards": "false"})  # fmt: skip
        label = tag(
            "span",
            f"#{node.position} ",
            link(stream, f"{node.stream} v{node.version}"),
            " ",
            tag("strong", node.type, class_="type"),
            f" {when(node.recorded_at)}",
        )
        children = node.caused
    nested = tag("ul", *(_node(root, c) for c in children)) if children else ""
    return tag("li", label, nested)
