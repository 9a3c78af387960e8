"""The admin UI at ``/admin``: server-rendered pages (Jinja2 templates, no front-end build,
one small script and uPlot for the charts) showing throughput and lag on a dashboard, to
browse streams, follow the log live, watch and repair projections, trace a correlation
id, load an aggregate at any version, see who did what, and read the event catalog.

Every page needs a token with the admin scope (see ``session``); without tokens the API,
and so the admin UI, is open. ``serving_app`` (``eskit serve``) mounts it; to mount it on
an app of your own, call ``add_admin`` and ``await admin.close()`` when the app stops.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from typing import Any, Final

from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from eskit.application.repository import Repository
from eskit.projections.database import Database, database_for
from eskit.projections.runner import ProjectionRunner
from eskit.store.base import EventStore
from eskit.web.admin.aggregates import add_aggregate_routes
from eskit.web.admin.audit import add_audit_routes
from eskit.web.admin.catalog import add_catalog_routes
from eskit.web.admin.dashboard import add_dashboard_routes
from eskit.web.admin.live import add_live_routes
from eskit.web.admin.projections import add_projection_routes
from eskit.web.admin.session import add_session_routes, visitor
from eskit.web.admin.site import HEADERS, Admin, AdminRoute, base
from eskit.web.admin.streams import add_stream_routes
from eskit.web.admin.subscriptions import add_subscription_routes
from eskit.web.admin.trace import add_trace_routes
from eskit.web.auth import Tokens
from eskit.web.errors import ApiError

__all__ = ["Admin", "add_admin"]

STATIC: Final = {
    name: (resources.files(__name__).joinpath(f"static/{name}").read_bytes(), kind)
    for name, kind in (
        ("admin.css", "text/css"),
        ("admin.js", "text/javascript"),
        ("favicon.svg", "image/svg+xml"),
        ("uPlot.iife.min.js", "text/javascript"),
        ("uPlot.min.css", "text/css"),
    )
}


def add_admin(
    app: FastAPI,
    store: EventStore,
    *,
    tokens: Tokens = None,
    runner: ProjectionRunner | None = None,
    aggregates: Mapping[str, Repository[Any]] | None = None,
) -> Admin:
    """Serve the admin UI of ``store`` at ``/admin`` on ``app`` (made by ``create_app``
    with the same ``tokens``). ``runner``: the projections it can rebuild; ``aggregates``:
    the repositories it can time-travel, by name."""
    database: Database | None = runner.database if runner is not None else None
    own = False
    if database is None:
        try:
            database, own = database_for(store), True
        except ValueError:  # a store kind without a projection database
            database = None
    admin = Admin(store, tokens, runner, dict(aggregates or {}), database, own)
    app.state.eskit_admin = admin
    router = APIRouter(prefix="/admin", route_class=AdminRoute, include_in_schema=False)
    add_session_routes(router)
    add_dashboard_routes(router)
    add_stream_routes(router)
    add_live_routes(router)
    add_projection_routes(router)
    add_subscription_routes(router)
    add_trace_routes(router)
    add_aggregate_routes(router)
    add_audit_routes(router)
    add_catalog_routes(router)

    @router.get("/")
    async def home(request: Request) -> Response:
        visitor(request)
        return RedirectResponse(f"{base(request)}/dashboard", 303, headers=HEADERS)

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        """The stylesheet and the scripts (public: they hold no data)."""
        if name not in STATIC:
            raise ApiError(404, "NotFound", f"no file {name[:100]!r}")
        content, kind = STATIC[name]
        return Response(content, media_type=kind, headers={"Cache-Control": "max-age=300"})

    @router.get("/{path:path}")
    async def unknown(request: Request, path: str) -> Response:
        """Any other path under /admin: the error page, in the layout."""
        visitor(request)
        raise ApiError(404, "NotFound", f"the admin UI has no page /admin/{path[:100]}")

    app.include_router(router)  # /admin itself redirects to /admin/ (Starlette)
    return admin
