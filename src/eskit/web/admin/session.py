"""Who uses the admin UI: an admin token, given once on the login form and then kept in an
HttpOnly cookie that only ``/admin`` receives (or sent as ``Authorization: Bearer``).

The cookie is ``SameSite=Strict``, scripts cannot read it, and it holds the token itself,
checked against the token file on every request: revoking the token logs the browser out
at once. Every form that changes something carries a CSRF token (an HMAC of the session
by a secret of this server process) and must come from this server's own pages (the
``Origin`` header, when the browser sends one).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import urllib.parse
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from eskit.web.admin.site import HEADERS, Admin, LoginNeeded, admin_of, base, page
from eskit.web.auth import OPEN, grant_of
from eskit.web.context import context
from eskit.web.errors import ApiError, forbidden
from eskit.web.tokens import Grant

COOKIE: Final = "eskit_admin"
CSRF: Final = "csrf"
"""The form field holding the CSRF token."""
MAX_FIELDS: Final = 20


@dataclasses.dataclass(frozen=True)
class Visitor:
    """Who is asking, and how: ``token`` is the cookie's (None for a bearer header or an
    API without tokens)."""

    grant: Grant
    token: str | None = None
    by_header: bool = False

    @property
    def name(self) -> str:
        return self.grant.name


def visitor(request: Request) -> Visitor:
    """The admin asking; ``LoginNeeded`` without a valid session, 403 for a token that is
    not an admin's."""
    admin = admin_of(request)
    scheme = request.headers.get("authorization", "").partition(" ")[0]
    if scheme.lower() == "bearer":  # a script; a proxy's Basic credentials are not ours
        found = Visitor(context(request).authenticate(request), by_header=True)
    elif admin.tokens is None:
        found = Visitor(OPEN)
    else:
        token = request.cookies.get(COOKIE)
        if not token:
            raise LoginNeeded("log in with an admin token")
        grant = grant_of(admin.tokens, token)
        if grant is None:
            raise LoginNeeded("the token is not valid any more (revoked?): log in again")
        found = Visitor(grant, token)
    if not found.grant.admin:
        raise forbidden(f"token {found.name!r} may not use the admin UI: it needs the admin scope")
    return found


def csrf_token(admin: Admin, who: Visitor) -> str:
    """The CSRF token of ``who``'s session: only this server's pages can know it."""
    session = (who.token or "").encode()
    return hmac.new(admin.secret, b"csrf:" + session, hashlib.sha256).hexdigest()


async def posted(request: Request, who: Visitor | None) -> dict[str, str]:
    """The fields of a form POSTed from this server's pages; 403 for one that was not
    (another site's page, or a form from before the server restarted)."""
    _same_origin(request)
    fields = await _fields(request)
    if who is not None and not who.by_header:
        expected = csrf_token(admin_of(request), who)
        if not hmac.compare_digest(fields.get(CSRF, ""), expected):
            raise forbidden("the form is out of date (or not from this site): reload the page")
    return fields


def user_page(
    request: Request, who: Visitor, template: str, title: str, **context: Any
) -> Response:
    """A page for ``who``: their name and (for a cookie session) a logout button in the
    header; its forms carry ``who``'s CSRF token."""
    csrf = csrf_token(admin_of(request), who)
    logout = who.token is not None
    return page(request, template, title, user=who.name, csrf=csrf, logout=logout, **context)


def add_session_routes(router: APIRouter) -> None:
    @router.get("/login")
    async def login_form(request: Request, next: Annotated[str, Query()] = "") -> Response:
        if admin_of(request).tokens is None:
            return RedirectResponse(f"{base(request)}/", 303, headers=HEADERS)
        return _login_page(request, _target(request, next))

    @router.post("/login")
    async def login(request: Request) -> Response:
        admin = admin_of(request)
        fields = await posted(request, None)
        target = _target(request, fields.get("next", ""))
        if admin.tokens is None:
            return RedirectResponse(target, 303, headers=HEADERS)
        token = fields.get("token", "").strip()
        grant = grant_of(admin.tokens, token) if token else None
        if grant is None:
            problem = "that token is not valid (unknown or revoked)"
            return _login_page(request, target, problem, status=401)
        if not grant.admin:
            message = f"token {grant.name!r} has no admin scope: the admin UI needs one"
            return _login_page(request, target, message, status=403)
        response = RedirectResponse(target, 303, headers=HEADERS)
        response.set_cookie(
            COOKIE,
            token,
            path=base(request),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        await posted(request, visitor(request))
        response = RedirectResponse(f"{base(request)}/login", 303, headers=HEADERS)
        response.delete_cookie(COOKIE, path=base(request), httponly=True, samesite="strict")
        return response


def _login_page(
    request: Request, target: str, problem: str | None = None, status: int = 200
) -> Response:
    return page(request, "login.html", "Log in", status=status, target=target, problem=problem)


def _target(request: Request, wanted: str) -> str:
    """Where to go after logging in: an admin page, never another site."""
    root = base(request)
    if wanted.startswith(f"{root}/") and not wanted.startswith("//") and "\\" not in wanted:
        return wanted
    return f"{root}/"


def _same_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin is None:
        return  # not a browser, or an old one: the CSRF token still guards the form
    if urllib.parse.urlsplit(origin).netloc != request.headers.get("host"):
        raise forbidden("this form was sent from another site")


async def _fields(request: Request) -> dict[str, str]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise ApiError(415, "UnsupportedMediaType", "send the form as a web form")
    try:
        text = (await request.body()).decode()
        pairs = urllib.parse.parse_qsl(text, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "BadRequest", "the form could not be read") from None
    return dict(pairs)
