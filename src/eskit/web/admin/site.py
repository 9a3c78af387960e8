"""What every admin page shares: the admin's state on the app, the Jinja2 templates (with
autoescaping: whatever the store holds is shown as text), and the route class that turns
errors into pages of the layout (and a missing login into the login form).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import urllib.parse
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, Final

import jinja2
import msgspec
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from eskit.application.repository import Repository
from eskit.cli.common import when
from eskit.projections.database import Database
from eskit.projections.runner import ProjectionRunner
from eskit.store.base import EventStore
from eskit.store.model import readable
from eskit.web.admin.history import History
from eskit.web.admin.repair import RebuildJob, dashboard
from eskit.web.auth import Tokens
from eskit.web.context import context
from eskit.web.errors import ApiError, translate

log = logging.getLogger("eskit.web.admin")

HEADERS: Final = {
    # No inline script or style, nothing from elsewhere: injected markup could not run.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self';"
    " img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none';"
    " frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
PAGES: Final = (
    ("dashboard", "Dashboard"),
    ("streams", "Streams"),
    ("live", "Live tail"),
    ("projections", "Projections"),
    ("subscriptions", "Subscriptions"),
    ("trace", "Trace"),
    ("aggregates", "Time travel"),
    ("audit", "Audit"),
    ("catalog", "Catalog"),
)


def url(path: str, query: Mapping[str, Any] | None = None) -> str:
    """``path`` with the query's non-empty values (lists repeat the key)."""
    kept = {k: v for k, v in (query or {}).items() if v not in (None, "", [])}
    return f"{path}?{urllib.parse.urlencode(kept, doseq=True)}" if kept else path


def pretty_json(value: object) -> str:
    """``value`` as indented JSON (anything JSON cannot hold is shown as its ``str``)."""
    return msgspec.json.format(msgspec.json.encode(value, enc_hook=str), indent=2).decode()


def _environment() -> jinja2.Environment:
    """The templates beside this module, every value escaped unless a template says not."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.globals["url"] = url
    environment.filters["when"] = when
    environment.filters["pretty_json"] = pretty_json
    environment.filters["repr"] = repr
    environment.filters["readable"] = readable
    return environment


TEMPLATES: Final = Jinja2Templates(env=_environment())


@dataclasses.dataclass
class Admin:
    """The admin UI's view of the server: the store, who may log in, the projection
    runner and database, the aggregates to time-travel, and the rebuilds it started."""

    store: EventStore
    tokens: Tokens
    runner: ProjectionRunner | None
    aggregates: Mapping[str, Repository[Any]]
    database: Database | None
    """Where projections keep their state (the runner's, or the store's own)."""
    own_database: bool
    secret: bytes = dataclasses.field(default_factory=lambda: secrets.token_bytes(32))
    """Signs the forms' CSRF tokens; new at every start (open forms are then refused)."""
    jobs: dict[str, RebuildJob] = dataclasses.field(default_factory=dict)
    history: History = dataclasses.field(default_factory=History)
    """What the dashboard's charts show: throughput and the projections' lag over time."""

    def start_sampling(self) -> None:
        """Sample the projections' lag in the background from now on (the dashboard's
        chart; done at the first request, in the server's event loop)."""
        if self.database is None and self.runner is None:
            return

        async def lags() -> dict[str, int]:
            _, rows = await dashboard(self.store, self.runner, self.database)
            return {row.name: row.lag for row in rows}

        self.history.sample_in_background(lags)

    async def close(self) -> None:
        """Stop the rebuilds in progress (they resume on the next rebuild) and the lag
        sampler, and release the database if it is the admin's own."""
        await self.history.close()
        tasks = [j.task for j in self.jobs.values() if j.task is not None and not j.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.own_database and self.database is not None:
            await self.database.close()


def admin_of(request: Request) -> Admin:
    found: Admin = request.app.state.eskit_admin
    return found


def base(request: Request) -> str:
    """The admin's path prefix (behind a proxy, with the server's root path)."""
    return f"{request.scope.get('root_path', '')}/admin"


def page(
    request: Request,
    template: str,
    title: str,
    *,
    user: str | None = None,
    csrf: str | None = None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A whole page: ``template`` (which extends the layout) with ``context``. ``user``:
    who is logged in (shown in the header); ``csrf``: the token the page's forms carry (and
    the logout button, if given)."""
    root = base(request)
    current = request.url.path.removeprefix(root).strip("/").split("/")[0]
    shared = {"title": title, "base": root, "pages": PAGES, "current": current, "user": user}
    response: HTMLResponse = TEMPLATES.TemplateResponse(
        request,
        template,
        {**shared, "csrf": csrf, "logout": False, **context},
        status_code=status,
        headers=HEADERS,
    )
    return response


def fragment(request: Request, template: str, **context: Any) -> HTMLResponse:
    """Part of a page, for the page's script to swap in."""
    response: HTMLResponse = TEMPLATES.TemplateResponse(
        request, template, {"base": base(request), **context}, headers=HEADERS
    )
    return response


class LoginNeeded(Exception):
    """The request carries no valid admin session: show the login form."""


class AdminRoute(APIRoute):
    """A route whose errors become HTML pages saying what went wrong (with the status the
    JSON API would give), and whose missing login leads to the login form."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_or_show(request: Request) -> Response:
            admin_of(request).start_sampling()
            try:
                return await handle(request)
            except LoginNeeded as needed:
                if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                    target = url(f"{base(request)}/login", {"next": _here(request)})
                    return RedirectResponse(target, 303, headers=HEADERS)
                return error_page(request, 401, str(needed))
            except Exception as error:
                status, message = _explain(error, request, f"{request.method} {self.path}")
                return error_page(request, status, message)

        return handle_or_show


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    """The error inside the layout, with a way back: the page the browser came from (if it
    is one of the admin's), else the dashboard."""
    who: dict[str, Any] = {}
    if status != 401:  # a logged-in visitor: the header names them, with the logout button
        from eskit.web.admin.session import csrf_token, visitor  # (session imports this)

        with contextlib.suppress(Exception):
            found = visitor(request)
            csrf = csrf_token(admin_of(request), found)
            who = {"user": found.name, "csrf": csrf, "logout": found.token is not None}
    back = _back(request)
    title = f"Error {status}"
    return page(request, "error.html", title, status=status, message=message, back=back, **who)


def _back(request: Request) -> str | None:
    """The admin page that linked here (from ``Referer``), or None."""
    referer = urllib.parse.urlsplit(request.headers.get("referer", ""))
    here = request.url
    if referer.netloc != here.netloc or not referer.path.startswith(f"{base(request)}/"):
        return None
    target = referer.path + (f"?{referer.query}" if referer.query else "")
    return None if target == _here(request) else target


def _explain(error: Exception, request: Request, where: str) -> tuple[int, str]:
    """The status and message the JSON API would answer ``error`` with."""
    if isinstance(error, ApiError):
        return error.status, error.message
    response = translate(error, context(request).errors, where)
    body = msgspec.json.decode(response.body)
    return response.status_code, str(body["error"]["message"])


def _here(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")
