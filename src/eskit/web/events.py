"""``/events``: the global log a page at a time, and ``/events/live``, the same log followed
as Server-Sent Events."""

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from starlette.requests import Request
from starlette.responses import StreamingResponse

from eskit.store import rules
from eskit.web.auth import require
from eskit.web.context import Context, context
from eskit.web.inputs import link_to, only_parameters, page_limit, parse_position
from eskit.web.live import feed
from eskit.web.openapi import responses
from eskit.web.schemas import JSONResponse, LogPage

After = Annotated[
    int, Query(ge=0, le=rules.MAX_INT64, description="Only events past this position.")
]
Types = Annotated[list[str] | None, Query(description="Only events of these types (repeat).")]
Category = Annotated[
    str | None,
    Query(min_length=1, description="Only events of streams of this category (e.g. invoice)."),
]
LIVE = {
    "type": "string",
    "description": "Server-Sent Events: `id:` is the event's position, `data:` the event as"
    " JSON (the schema RecordedEvent); comment lines are heartbeats.",
}


def add_event_routes(router: APIRouter, secured: Sequence[Any], max_limit: int) -> None:
    limit_query = page_limit(max_limit)

    @router.get(
        "/events",
        tags=["events"],
        operation_id="read_log",
        dependencies=list(secured),
        response_class=JSONResponse,
        responses=responses(200, "LogPage", secured=bool(secured)),
    )
    async def read_log(
        request: Request,
        after: After = 0,
        limit: int | None = limit_query,
        types: Types = None,
        category: Category = None,
    ) -> JSONResponse:
        """A page of the global log, in position order; ``next`` links to the next page."""
        ctx = context(request)
        require(ctx.authenticate(request), "read", category)
        only_parameters(request, "after", "limit", "types", "category")
        count = limit or ctx.settings.default_limit
        page = await ctx.store.read_page(after, count, types, category)
        query: dict[str, Any] = {"after": page.next_after, "limit": count}
        query.update({"types": types} if types else {})
        query.update({"category": category} if category is not None else {})
        return JSONResponse(
            LogPage(page.events, page.next_after, link_to(request, "events", query))
        )

    @router.get(
        "/events/live",
        tags=["events"],
        operation_id="follow_log",
        dependencies=list(secured),
        response_class=StreamingResponse,
        responses=responses(200, LIVE, 400, secured=bool(secured), media_type="text/event-stream"),
    )
    async def follow_log(
        request: Request,
        after: After = 0,
        types: Types = None,
        category: Category = None,
        last_event_id: Annotated[
            str | None,
            Header(
                alias="Last-Event-ID",
                description="Resume after this position (what a reconnecting client sends);"
                " wins over `after`.",
            ),
        ] = None,
    ) -> StreamingResponse:
        """Every event past ``after`` as it is written: catches up, then follows live."""
        ctx = context(request)
        require(ctx.authenticate(request), "read", category)
        only_parameters(request, "after", "types", "category")
        return live_response(ctx, after, types, category, last_event_id)


def live_response(
    ctx: Context,
    after: int,
    types: list[str] | None,
    category: str | None,
    last_event_id: str | None,
) -> StreamingResponse:
    """The log after ``after`` (or ``Last-Event-ID``) as Server-Sent Events: the API's
    live feed, and the admin UI's live tail."""
    rules.check_types(types)
    if category is not None:
        rules.check_name(category, "category")
    resume = parse_position(last_event_id, "Last-Event-ID")
    frames = feed(
        ctx.store,
        after if resume is None else resume,
        types,
        category,
        closing=ctx.closing,
        heartbeat=ctx.settings.heartbeat,
        buffer=ctx.settings.live_buffer,
    )
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(frames, media_type="text/event-stream", headers=headers)
