"""``/streams/{stream}``: read a stream a page at a time; append with the version the client
expects in the ``Expected-Version`` header."""

import contextlib
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.requests import Request

from eskit.store import rules
from eskit.store.archive import read_stream_through
from eskit.store.base import EventStore
from eskit.store.model import RecordedEvent
from eskit.web.auth import USER, require
from eskit.web.context import context
from eskit.web.inputs import (
    json_body,
    link_to,
    only_parameters,
    page_limit,
    parse_expected_version,
)
from eskit.web.openapi import request_body, responses
from eskit.web.raw_appends import check_raw_append
from eskit.web.schemas import AppendBody, AppendReply, JSONResponse, StreamPage


class StreamName(PathConvertor):
    """Any text, slashes and newlines included: the store, not the router, says which
    names are invalid (and answers 422 saying why)."""

    regex = "(?s:.*)"


register_url_convertor("stream_name", StreamName())


async def _read_through(
    store: EventStore,
    stream: str,
    archive: Path | None,
    from_version: int | None,
    backwards: bool,
    count: int,
) -> list[RecordedEvent]:
    """Up to ``count`` events of ``stream`` read through to ``archive``; ``ValueError``
    (422) without an archive or backwards."""
    if archive is None:
        raise ValueError("this server has no archive to read through to (eskit serve --archive)")
    if backwards:
        raise ValueError("through_archive reads forwards only: leave out backwards")
    events: list[RecordedEvent] = []
    async with contextlib.aclosing(
        read_stream_through(store, stream, archive, from_version)
    ) as reading:
        async for event in reading:
            events.append(event)
            if len(events) == count:
                break
    return events


def add_stream_routes(router: APIRouter, secured: Sequence[Any], max_limit: int) -> None:
    limit_query = page_limit(max_limit)

    @router.get(
        "/streams/{stream:stream_name}",
        tags=["streams"],
        operation_id="read_stream",
        dependencies=list(secured),
        response_class=JSONResponse,
        responses=responses(200, "StreamPage", 410, secured=bool(secured)),
    )
    async def read_stream(
        request: Request,
        stream: str,
        from_version: Annotated[
            int | None, Query(ge=0, le=rules.MAX_INT64, description="First version to read.")
        ] = None,
        backwards: Annotated[bool, Query(description="Newest first.")] = False,
        limit: int | None = limit_query,
        through_archive: Annotated[
            bool,
            Query(
                description="Read through to the server's archive (eskit serve --archive):"
                " the stream's archived events first, then the store's. Forwards only."
            ),
        ] = False,
    ) -> JSONResponse:
        """A page of the stream's events (a stream that never existed reads as empty; a
        tombstoned one answers 410)."""
        ctx = context(request)
        grant = ctx.authenticate(request)
        only_parameters(request, "from_version", "backwards", "limit", "through_archive")
        require(grant, "read", rules.category(rules.check_name(stream)))
        count = limit or ctx.settings.default_limit
        if through_archive:
            events = await _read_through(
                ctx.store, stream, ctx.settings.archive, from_version, backwards, count + 1
            )
        else:
            reading = ctx.store.read_stream(stream, from_version, backwards, count + 1)
            events = [event async for event in reading]
        following = events[count].version if len(events) > count else None
        next_page = None
        if following is not None:
            query: dict[str, Any] = {"from_version": following, "backwards": str(backwards).lower()}
            if through_archive:
                query["through_archive"] = "true"
            path = f"streams/{urllib.parse.quote(stream, safe='')}"
            next_page = link_to(request, path, {**query, "limit": count})
        return JSONResponse(StreamPage(stream, events[:count], following, next_page))

    @router.post(
        "/streams/{stream:stream_name}",
        tags=["streams"],
        operation_id="append_to_stream",
        status_code=201,
        dependencies=list(secured),
        response_class=JSONResponse,
        responses=responses(201, "AppendReply", 400, 409, 410, 413, 415, secured=bool(secured)),
        openapi_extra={"requestBody": request_body("AppendBody")},
    )
    async def append_to_stream(
        request: Request,
        stream: str,
        expected_version: Annotated[
            str | None,
            Header(
                alias="Expected-Version",
                description="any (default), no_stream, stream_exists, or the version of the"
                " stream's last event; a mismatch answers 409 with the actual version.",
            ),
        ] = None,
    ) -> JSONResponse:
        """Append events to the stream, all or none. Their metadata names the token that
        wrote them (``user``), whatever the body says. When the application has a command
        bus, each event must decode through its registry and apply to the stream's
        aggregate (422 otherwise), unless the category takes free-form events."""
        ctx = context(request)
        grant = ctx.authenticate(request)
        only_parameters(request)
        require(grant, "write", rules.category(rules.check_name(stream)))
        expected = parse_expected_version(expected_version)
        body = await json_body(request, AppendBody)
        await check_raw_append(ctx.bus, ctx.free_form, stream, body.events)
        events = [
            event.to_store({**(event.metadata or {}), USER: grant.name}) for event in body.events
        ]
        result = await ctx.store.append(stream, events, expected)
        reply = AppendReply(stream, result.last_version, result.last_position, result.count)
        return JSONResponse(reply, 201)
