"""Who is asking: the ``Authorization: Bearer <token>`` header checked against the tokens.

Without tokens (``tokens=None``) the API is open: every request may do everything.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request

from eskit.web.errors import forbidden, unauthorized
from eskit.web.tokens import Action, Grant, TokenFile, TokenSet

Tokens = TokenSet | TokenFile | None
"""What the API checks tokens against: a fixed set, a file it re-reads, or None (open)."""

OPEN = Grant("anyone", ["admin"])
USER = "user"
"""The metadata key naming the token that wrote an event ("anyone" on an open API): who did
what, for the audit view. Set by the server, so a client cannot write it in another's name."""
"""The grant of every request when the API runs without tokens."""


def authenticator(tokens: Tokens) -> Callable[[Request], Grant]:
    """A function from a request to its grant; raises 401 for a missing or unknown token."""
    if tokens is None:
        return lambda request: OPEN

    def authenticate(request: Request) -> Grant:
        header = request.headers.get("authorization")
        if header is None:
            raise unauthorized("this API needs a token: send 'Authorization: Bearer <token>'")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("the Authorization header must be 'Bearer <token>'")
        grant = grant_of(tokens, token.strip())
        if grant is None:
            raise unauthorized("the token is not valid (unknown or revoked)")
        return grant

    return authenticate


def grant_of(tokens: TokenSet | TokenFile, token: str) -> Grant | None:
    """What ``token`` may do, or None if it is unknown or revoked (a file is re-read when
    it changed)."""
    current = tokens.current() if isinstance(tokens, TokenFile) else tokens
    return current.grant(token)


def require(grant: Grant, action: Action, category: str | None = None) -> None:
    """Raise 403 unless ``grant`` may ``action`` on ``category`` (None: on everything)."""
    if grant.allows(action, category):
        return
    limited = grant.categories(action)
    what = f"{action} on category {category!r}" if category is not None else f"{action} everything"
    if limited:
        shown = ", ".join(limited)
        raise forbidden(f"token {grant.name!r} may not {what}: it may {action} only {shown}")
    raise forbidden(f"token {grant.name!r} may not {what}: it has no {action} scope")


def require_some(grant: Grant, action: Action) -> None:
    """Raise 403 unless ``grant`` may ``action`` on at least one category (checked before
    the request is read; the category is checked once it is known)."""
    if not grant.allows_some(action):
        raise forbidden(f"token {grant.name!r} has no {action} scope")
