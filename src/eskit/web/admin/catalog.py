"""The event catalog page: every event type the application's registry reads, its current
version and sensitive fields, each version with the class or upcaster that reads it and
the JSON Schema of its data (``eskit.domain.catalog``, as ``GET /events/catalog`` serves
it and ``eskit events catalog`` prints it).

The registry is the command bus's (``AppSpec.bus``): an app without one has no catalog to
show. Old versions' schemas are not known to the server (they are recorded in golden
fixtures, which ``eskit events catalog --fixtures`` reads), so the page says so.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from eskit.domain.catalog import catalog
from eskit.web.admin.session import user_page, visitor
from eskit.web.context import context


def add_catalog_routes(router: APIRouter) -> None:
    @router.get("/catalog")
    async def show(request: Request) -> Response:
        who = visitor(request)
        bus = context(request).bus
        found = None if bus is None else catalog(bus.events)
        return user_page(request, who, "catalog.html", "Event catalog", found=found)
