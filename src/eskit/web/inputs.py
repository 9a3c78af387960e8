"""Reading what a request sends: JSON bodies, the headers eskit defines, and links to the
next page."""

from __future__ import annotations

import urllib.parse
from typing import Any, TypeVar

import msgspec
from fastapi import Query
from starlette.requests import Request

from eskit.store import rules
from eskit.store.model import ExpectedVersion, StreamState
from eskit.store.nesting import may_nest_too_deep, too_deep_at
from eskit.web.errors import ApiError
from eskit.web.schemas import JSON

T = TypeVar("T")
STATES = {state.value: state for state in StreamState}


async def json_body(request: Request, kind: type[T], max_nesting: int | None = None) -> T:
    """The request's JSON body as ``kind``: 415 unless its Content-Type is
    ``application/json``; 422 naming the path if it nests deeper than ``max_nesting``
    (when given); then as ``decode`` reads it."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != JSON:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"the body must be JSON, sent with Content-Type: {JSON}"
            f" (got {media_type[:60] or 'none'})",
        )
    body = await request.body()
    if max_nesting is not None and may_nest_too_deep(body, max_nesting):
        path = too_deep_at(body.decode(errors="replace"), max_nesting)
        if path is not None:
            raise ApiError(
                422, "ValidationError", f"body: nested deeper than {max_nesting} levels, at {path}"
            )
    return decode(body, kind)


def decode(body: bytes, kind: type[T]) -> T:
    """The body as ``kind``: 400 if it is not JSON, 422 naming the field that is wrong or
    the path where it nests deeper than the parser reads."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as error:
        raise ApiError(422, "ValidationError", f"body: {error}") from None
    except msgspec.DecodeError as error:
        raise ApiError(400, "InvalidJSON", f"the body is not valid JSON: {error}") from None
    except RecursionError:  # the parser recurses: a body nested thousands deep stops it
        path = too_deep_at(body.decode(errors="replace"), rules.MAX_NESTING) or "body"
        raise ApiError(
            422,
            "ValidationError",
            f"body: nested too deep to read, at {path} (event data and metadata may nest"
            f" {rules.MAX_NESTING} levels)",
        ) from None


def parse_expected_version(header: str | None) -> ExpectedVersion:
    """The ``Expected-Version`` header as an expected version (absent: any); 400 if it is
    not one."""
    if header is None:
        return StreamState.ANY
    text = header.strip().lower()
    if text in STATES:
        return STATES[text]
    if text.isascii() and text.isdigit() and int(text) <= rules.MAX_INT64:
        return int(text)
    raise ApiError(
        400,
        "BadHeader",
        "Expected-Version must be any, no_stream, stream_exists or a version >= 0,"
        f" got {header[:40]!r}",
    )


def parse_position(header: str | None, name: str) -> int | None:
    """A header holding a log position (``Last-Event-ID``); 400 if it is not one."""
    if header is None:
        return None
    text = header.strip()
    if text.isascii() and text.isdigit() and int(text) <= rules.MAX_INT64:
        return int(text)
    raise ApiError(400, "BadHeader", f"{name} must be a position >= 0, got {header[:40]!r}")


def link_to(request: Request, path: str, query: dict[str, Any]) -> str:
    """A link, relative to the server, to ``path`` with ``query`` (lists repeat the key)."""
    root = request.scope.get("root_path", "")
    return f"{root}/{path}?{urllib.parse.urlencode(query, doseq=True)}"


def only_parameters(request: Request, *known: str) -> None:
    """422 for a query parameter the endpoint does not take (a typo would otherwise be
    ignored silently: ``?catgory=invoice`` would read every category)."""
    unknown = sorted(set(request.query_params) - set(known))
    if unknown:
        takes = ", ".join(sorted(known)) or "no parameters"
        raise ApiError(422, "ValidationError", f"unknown parameter {unknown[0]!r}; takes {takes}")


def page_limit(max_limit: int) -> Any:
    """The ``limit`` query parameter of paged reads (its default): 1 to ``max_limit``."""
    return Query(None, ge=1, le=max_limit, description="Events per page (default 100).")
