"""What an application gives the HTTP API: its command bus, its queries, the statuses of
its own errors, what must run while it serves (its projection runner), and what the admin
UI may show (its aggregates).

``serving_app`` adds to the API what a running server needs: ``/health/live`` and
``/health/ready``, ``/metrics`` (the store, bus and runner instrumented) and the admin UI.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any

from fastapi import FastAPI

from eskit.application.commands import CommandBus
from eskit.application.repository import Repository
from eskit.projections.runner import ProjectionRunner
from eskit.store.base import EventStore
from eskit.web.admin import Admin, add_admin
from eskit.web.app import Lifespan, create_app
from eskit.web.auth import Tokens
from eskit.web.context import Settings
from eskit.web.health import add_health_routes
from eskit.web.metrics import add_metrics_route, attach, server_metrics
from eskit.web.queries import Query
from eskit.web.readiness import DEFAULT_MAX_LAG


@dataclasses.dataclass(frozen=True)
class AppSpec:
    """An application, as ``eskit serve --app module:function`` finds it: the function
    takes the (not yet open) store and returns this."""

    bus: CommandBus | None = None
    queries: Mapping[str, Query] = dataclasses.field(default_factory=dict)
    errors: Mapping[type[BaseException], int] = dataclasses.field(default_factory=dict)
    """The application's own error classes and the HTTP status each means."""
    running: Lifespan | None = None
    """Entered once the store is open, left before it closes (default: the ``runner``)."""
    wait_until: Callable[[int], Awaitable[None]] | None = None
    """Returns once the read models applied the log up to a position."""
    runner: ProjectionRunner | None = None
    """The projection runner: ``/health/ready`` checks its lag, ``/metrics`` samples it,
    the admin UI rebuilds its projections."""
    aggregates: Mapping[str, Repository[Any]] = dataclasses.field(default_factory=dict)
    """Repositories by name, whose aggregates the admin UI and ``GET /aggregates/{kind}/{id}``
    load at any version (e.g. ``{"invoice": bus.repository(Invoice.model())}``)."""
    free_form_categories: Collection[str] = ()
    """Stream categories whose raw appends (``POST /streams``) take events of any type and
    shape (e.g. ``{"audit", "import"}``). In every other category, an app with a ``bus``
    refuses (422) a raw append that its event registry does not decode (an unregistered
    type, data that does not fit the class) or, on an aggregate's stream, that the
    aggregate does not apply."""


def serving_app(
    store: EventStore,
    spec: AppSpec | None = None,
    *,
    tokens: Tokens = None,
    settings: Settings | None = None,
    ready_max_lag: int = DEFAULT_MAX_LAG,
    admin: bool = True,
) -> FastAPI:
    """The API over ``store`` and ``spec``, with the health endpoints, ``/metrics`` and
    (unless ``admin=False``) the admin UI: the store is opened when the app starts (and
    closed when it stops), then the application's ``running`` part is entered.

    ``ready_max_lag``: events a projection of ``spec.runner`` may be behind before
    ``/health/ready`` answers 503.
    """
    spec = spec or AppSpec()
    metrics = server_metrics()
    if metrics is not None:  # once: the lifespan may run more than once (tests)
        attach(metrics, store=store, bus=spec.bus)
    ui: Admin | None = None

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[Any]:
        async with store:
            sampling = None if metrics is None else attach(metrics, runner=spec.runner)
            try:
                async with running_part(spec):
                    try:
                        yield
                    finally:
                        if ui is not None:
                            await ui.close()
            finally:
                if sampling is not None:
                    sampling.cancel()
                    await asyncio.gather(sampling, return_exceptions=True)

    app = create_app(
        store,
        bus=spec.bus,
        queries=spec.queries,
        tokens=tokens,
        errors=spec.errors,
        wait_until=spec.wait_until,
        settings=settings,
        lifespan=lifespan,
        free_form=spec.free_form_categories,
        aggregates=spec.aggregates,
    )
    add_health_routes(app, spec.runner, ready_max_lag)
    if metrics is not None:
        add_metrics_route(app.router, metrics, secured=tokens is not None)
    if admin:
        ui = add_admin(app, store, tokens=tokens, runner=spec.runner, aggregates=spec.aggregates)
    return app


def running_part(spec: AppSpec) -> contextlib.AbstractAsyncContextManager[object]:
    """What runs while the server does: the spec's ``running``, else its runner."""
    if spec.running is not None:
        return spec.running()
    if spec.runner is not None:
        return spec.runner
    return contextlib.nullcontext()
