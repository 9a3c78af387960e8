"""What every admin page shares: the admin's state on the app, the page layout, and the
route class that turns errors into HTML pages (and a missing login into the login form).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import string
from collections.abc import Callable, Coroutine, Mapping
from importlib import resources
from typing import Any, Final

import msgspec
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from eskit.application.repository import Repository
from eskit.projections.database import Database
from eskit.projections.runner import ProjectionRunner
from eskit.store.base import EventStore
from eskit.web.admin.html import Html, escape, join, link, tag, url
from eskit.web.admin.repair import RebuildJob
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
    ("streams", "Streams"),
    ("live", "Live tail"),
    ("projections", "Projections"),
    ("trace", "Trace"),
    ("aggregates", "Time travel"),
    ("audit", "Audit"),
)
LAYOUT = string.Template(
    resources.files("eskit.web.admin").joinpath("templates/layout.html").read_text("utf-8")
)


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

    async def close(self) -> None:
        """Stop the rebuilds in progress (they resume on the next rebuild) and release the
        database if it is the admin's own."""
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
    title: str,
    *content: object,
    user: str | None = None,
    logout: Html | None = None,
    status: int = 200,
) -> HTMLResponse:
    """A whole page in the admin's layout."""
    root = base(request)
    current = request.url.path.removeprefix(root).strip("/").split("/")[0]
    nav = join(
        link(f"{root}/{name}", label, class_="current" if name == current else None)
        for name, label in PAGES
    )
    who = join([tag("span", user, class_="user"), logout or ""]) if user else Html("")
    body = LAYOUT.substitute(
        title=escape(title), base=escape(root), nav=nav, who=who, content=join(content)
    )
    return HTMLResponse(body, status, headers=HEADERS)


def fragment(content: Html) -> HTMLResponse:
    """Part of a page, for the page's script to swap in."""
    return HTMLResponse(content, headers=HEADERS)


class LoginNeeded(Exception):
    """The request carries no valid admin session: show the login form."""


class AdminRoute(APIRoute):
    """A route whose errors become HTML pages saying what went wrong (with the status the
    JSON API would give), and whose missing login leads to the login form."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_or_show(request: Request) -> Response:
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
    return page(request, f"Error {status}", tag("p", message, class_="error"), status=status)


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
