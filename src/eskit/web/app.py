"""The app factory: an HTTP API over one event store, its command bus and its queries.

The web layer only translates: HTTP in, the library's calls, JSON out. Rules (stream names,
expected versions, sizes) are the store's and the domain's; their errors become 4xx here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from eskit import __version__
from eskit.application.commands import CommandBus
from eskit.application.repository import Repository
from eskit.domain.catalog import Catalog
from eskit.store import rules
from eskit.store.base import EventStore
from eskit.web.aggregates import AggregateState, add_aggregate_routes
from eskit.web.auth import Tokens, authenticator
from eskit.web.catalog import add_catalog_route
from eskit.web.commands import add_command_routes
from eskit.web.context import ApiRoute, Context, Settings
from eskit.web.errors import http_error
from eskit.web.events import add_event_routes
from eskit.web.groups import GROUP_TYPES, add_group_routes
from eskit.web.limits import BodyLimit
from eskit.web.openapi import add_components, schemas_of
from eskit.web.queries import Query, add_query_routes
from eskit.web.schemas import REPLY_TYPES
from eskit.web.streams import add_stream_routes

Lifespan = Callable[[], contextlib.AbstractAsyncContextManager[object]]
"""What runs beside the API while it serves (e.g. opening the store, a projection runner)."""

bearer = HTTPBearer(auto_error=False, description="A token made by `eskit tokens create`.")


def create_app(
    store: EventStore,
    *,
    bus: CommandBus | None = None,
    queries: Mapping[str, Query] | None = None,
    tokens: Tokens = None,
    errors: Mapping[type[BaseException], int] | None = None,
    wait_until: Callable[[int], Awaitable[None]] | None = None,
    settings: Settings | None = None,
    lifespan: Lifespan | None = None,
    title: str = "eskit",
    free_form: Collection[str] = (),
    aggregates: Mapping[str, Repository[Any]] | None = None,
) -> FastAPI:
    """An HTTP API over ``store``.

    - ``bus``: its commands get ``POST /commands/{Name}``, and its event registry's
      catalog is served at ``GET /events/catalog``.
    - ``queries``: read-model queries by name, served at ``GET /queries/{name}``;
      ``wait_until(position)`` (e.g. ``runner.wait_until``) lets a query wait for the read
      models to reach a position.
    - ``tokens``: a ``TokenSet`` or ``TokenFile`` checked on every request; None runs the
      API open (anyone may do anything).
    - ``errors``: the application's own error classes and the status each means (e.g.
      ``{InvoiceError: 409}``); other unexpected errors are 500s.
    - ``lifespan``: entered while the app runs (the store is used open: open it here, or
      before creating the app).
    - ``free_form``: stream categories whose raw appends (``POST /streams``) take events
      of any type and shape. Elsewhere, when there is a ``bus``, a raw append must hold
      events its registry decodes (registered type, data that fits the class, through the
      upcasters) and, on an aggregate's stream, that the aggregate applies; else it is
      refused with 422 and nothing is written (``eskit.web.raw_appends``).
    - ``aggregates``: repositories by name, whose aggregates ``GET /aggregates/{kind}/{id}``
      loads now, at a version or at a moment (time travel).
    """
    settings = settings or Settings()
    ctx = Context(
        store,
        settings,
        authenticator(tokens),
        dict(errors or {}),
        wait_until,
        bus=bus,
        free_form=frozenset(rules.check_name(c, "category") for c in free_form),
    )

    @contextlib.asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        ctx.closing = asyncio.Event()
        try:
            async with lifespan() if lifespan is not None else contextlib.nullcontext():
                yield
        finally:
            ctx.closing.set()

    app = FastAPI(title=title, version=__version__, lifespan=run, redoc_url=None)
    app.state.eskit = ctx
    app.add_middleware(BodyLimit, max_body=settings.max_body)
    app.add_exception_handler(HTTPException, _http_error)
    router = app.router
    router.route_class = ApiRoute
    secured = [Depends(bearer)] if tokens is not None else []
    add_stream_routes(router, secured, settings.max_limit)
    if bus is not None:
        add_catalog_route(router, bus.events, secured)
    add_event_routes(router, secured, settings.max_limit)
    add_group_routes(router, secured, settings.max_limit)
    if aggregates:
        add_aggregate_routes(router, aggregates, secured)
    _, components = schemas_of((*REPLY_TYPES, *GROUP_TYPES, AggregateState, Catalog))
    if bus is not None:
        components.update(add_command_routes(router, bus, secured))
    if queries:
        components.update(add_query_routes(router, queries, secured))
    add_components(app, components)
    return app


def begin_shutdown(app: FastAPI) -> None:
    """Tell the app the server is stopping: live feeds end, so connections can close."""
    context_of(app).closing.set()


def context_of(app: FastAPI) -> Context:
    found: Context = app.state.eskit
    return found


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    if error.status_code == 405:  # Starlette names the methods of one route; list them all
        allowed = ", ".join(sorted(_methods_at(request)))
        error = HTTPException(405, error.detail, {**(error.headers or {}), "Allow": allowed})
    return http_error(error)


def _methods_at(request: Request) -> set[str]:
    """The methods of every route matching the request's path."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE and isinstance(route, Route):
            methods |= route.methods or set()
    return methods
