"""The live tail: the global log as it is written, the page's script adding each event the
server sends (the API's own live feed, served under ``/admin`` so the login cookie, which
only ``/admin`` receives, authenticates it)."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Header, Query
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from eskit.store import rules
from eskit.web.admin.session import user_page, visitor
from eskit.web.admin.site import admin_of, base, url
from eskit.web.context import context
from eskit.web.events import live_response

BACKLOG: Final = 20
"""Events already written that the tail shows when it opens."""
Filter = Annotated[str, Query(max_length=200)]


def add_live_routes(router: APIRouter) -> None:
    @router.get("/live")
    async def tail(request: Request, category: Filter = "", type: Filter = "") -> Response:
        """The page: a filter form and the table the script fills."""
        who = visitor(request)
        root = base(request)
        after = max(0, await admin_of(request).store.last_position() - BACKLOG)
        source = url(f"{root}/live/feed", {"after": after, "category": category, "types": type})
        return user_page(
            request, who, "live.html", "Live tail", category=category, type=type, feed=source
        )

    @router.get("/live/feed")
    async def follow(
        request: Request,
        after: Annotated[int, Query(ge=0, le=rules.MAX_INT64)] = 0,
        category: Filter = "",
        types: Annotated[list[str] | None, Query()] = None,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    ) -> StreamingResponse:
        """The log after ``after`` as Server-Sent Events (resumes at ``Last-Event-ID``)."""
        visitor(request)
        wanted = [t for t in types or [] if t] or None
        return live_response(context(request), after, wanted, category or None, last_event_id)
