"""``GET /events/catalog``: the application's event catalog (``eskit.domain.catalog``),
every event type with its versions, upcasters and the JSON Schema of each version's data.

It describes shapes, not events: any token that may read some category may read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request

from eskit.domain.catalog import Catalog, Schemas, catalog
from eskit.domain.events import EventRegistry
from eskit.web.auth import require_some
from eskit.web.context import context
from eskit.web.inputs import only_parameters
from eskit.web.openapi import responses
from eskit.web.schemas import JSONResponse


def add_catalog_route(
    router: APIRouter,
    events: EventRegistry,
    secured: Sequence[Any],
    recorded: Schemas | None = None,
) -> None:
    found: list[Catalog] = []  # built on the first request: every type is registered then

    @router.get(
        "/events/catalog",
        tags=["events"],
        operation_id="event_catalog",
        dependencies=list(secured),
        response_class=JSONResponse,
        responses=responses(200, "Catalog", secured=bool(secured)),
    )
    async def event_catalog(request: Request) -> JSONResponse:
        """Every event type the application reads: its versions (oldest first), the
        upcaster that reads each old one, and the JSON Schema of each version's data."""
        ctx = context(request)
        require_some(ctx.authenticate(request), "read")
        only_parameters(request)
        if not found:
            found.append(catalog(events, recorded))
        return JSONResponse(found[0])
