"""Every error leaves the API as JSON, ``{"error": {"type": ..., "message": ...}}``, with a
status that says whose fault it is: 4xx for the request, 503 for a service that is down,
500 only for a bug (logged without the request's data).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from typing import Final

import msgspec
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from eskit.errors import (
    AggregateNotFound,
    ConcurrencyError,
    IdempotencyConflict,
    ProjectionError,
    StoreClosed,
    StreamDeleted,
    Unavailable,
    WrongExpectedVersion,
)
from eskit.web.schemas import ErrorBody, ErrorDetail, JSONResponse

log = logging.getLogger("eskit.web")

STATUS_BY_ERROR: tuple[tuple[type[BaseException], int], ...] = (
    (WrongExpectedVersion, 409),
    (ConcurrencyError, 409),
    (IdempotencyConflict, 409),
    (StreamDeleted, 410),
    (AggregateNotFound, 404),
    (StoreClosed, 503),
    (Unavailable, 503),
    (ProjectionError, 503),  # a runner's projection is stuck; not an inline refusal: 409
    (ValueError, 422),  # eskit checks input before writing and says what is wrong
)
"""eskit's own errors and the status each becomes, the first match winning."""
REFUSED_BY_PROJECTION: Final = 409
"""An append an inline projection refused (``ProjectionError.refused``): a conflict with
the read model's rule (an e-mail address already taken), which a retry would meet again."""


class ApiError(Exception):
    """An error the API answers with ``status`` and a message for the client."""

    def __init__(
        self, status: int, kind: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return error_response(self.status, ErrorDetail(self.kind, self.message), self.headers)


def error_response(
    status: int, detail: ErrorDetail, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(ErrorBody(detail), status, dict(headers or {}))


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "Unauthorized", message, {"WWW-Authenticate": "Bearer"})


def forbidden(message: str) -> ApiError:
    return ApiError(403, "Forbidden", message)


def translate(
    error: Exception, domain: Mapping[type[BaseException], int], where: str
) -> JSONResponse:
    """The response for ``error`` raised while answering ``where`` (method and path).

    ``domain`` maps the application's own error classes (e.g. an aggregate's rule error)
    to statuses; they are looked up before eskit's. Anything unknown is a 500, logged with
    its traceback but without its message, which may quote the request's data.
    """
    if isinstance(error, ApiError):
        return error.response()
    if isinstance(error, RequestValidationError):
        return error_response(422, ErrorDetail("ValidationError", _validation(error)))
    if isinstance(error, HTTPException):
        return http_error(error)
    status = _status(error, domain)
    if status is None:
        frames = "".join(traceback.format_tb(error.__traceback__))
        log.error("%s: unexpected %s\n%s", where, type(error).__name__, frames)
        message = "unexpected error; the server log has the details"
        return error_response(500, ErrorDetail("InternalError", message))
    detail = ErrorDetail(type(error).__name__, str(error) or type(error).__name__)
    if isinstance(error, WrongExpectedVersion):
        detail = msgspec.structs.replace(
            detail, stream=error.stream, expected=_expected(error.expected), actual=error.actual
        )
    headers = {"Retry-After": "1"} if status == 503 else {}
    return error_response(status, detail, headers)


def http_error(error: HTTPException) -> JSONResponse:
    """Starlette's own errors (unknown path, method not allowed) in the API's format."""
    kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(error.status_code, "HTTPError")
    return error_response(error.status_code, ErrorDetail(kind, str(error.detail)), error.headers)


def _status(error: BaseException, domain: Mapping[type[BaseException], int]) -> int | None:
    for kind in type(error).__mro__:
        if kind in domain:
            return domain[kind]
    if isinstance(error, ProjectionError) and error.refused is not None:
        return REFUSED_BY_PROJECTION
    for kind, status in STATUS_BY_ERROR:
        if isinstance(error, kind):
            return status
    return None


def _expected(expected: object) -> str | int:
    """An expected version as the ``Expected-Version`` header writes it."""
    return expected if isinstance(expected, int) else str(getattr(expected, "value", expected))


def _validation(error: RequestValidationError) -> str:
    """FastAPI's validation errors as one line naming each bad parameter."""
    parts = []
    for problem in error.errors():
        where = [str(p) for p in problem.get("loc", ())]
        place = f"{where[0]} {'.'.join(where[1:])}" if len(where) > 1 else ".".join(where)
        parts.append(f"{place}: {problem.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"
