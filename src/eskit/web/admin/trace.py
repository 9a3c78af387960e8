"""The causal trace of one correlation id, as a tree: the commands of the chain hold the
events they wrote, and an event holds the commands it caused (``eskit trace``'s tree).

The trace scans the whole log (``eskit.application.trace``): on a large log it takes as
long as reading it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from eskit.application.trace import TraceCommand, trace
from eskit.web.admin.session import user_page, visitor
from eskit.web.admin.site import admin_of


def add_trace_routes(router: APIRouter) -> None:
    @router.get("/trace")
    async def show(
        request: Request, correlation_id: Annotated[str, Query(max_length=200)] = ""
    ) -> Response:
        who = visitor(request)
        found = await trace(admin_of(request).store, correlation_id) if correlation_id else None
        return user_page(
            request,
            who,
            "trace.html",
            "Trace",
            correlation_id=correlation_id,
            found=found,
            is_command=lambda node: isinstance(node, TraceCommand),
        )
