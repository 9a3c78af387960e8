"""Every error leaves the server as a gRPC status with a message, in the form KurrentDB's
clients recognise: a wrong expected version on delete, a deleted stream, refused access.
Never a crash: an unexpected error is logged and answered ``INTERNAL``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeAlias, TypeVar

import grpc
from google.protobuf import any_pb2
from kurrentdbclient.protos.google.rpc import code_pb2
from kurrentdbclient.protos.v1 import status_pb2
from kurrentdbclient.protos.v2.streams import errors_pb2

from eskit.errors import (
    IdempotencyConflict,
    StoreClosed,
    StreamDeleted,
    Unavailable,
    WrongExpectedVersion,
)
from eskit.grpc.auth import Unauthenticated

log = logging.getLogger("eskit.grpc")

S = TypeVar("S")
Q = TypeVar("Q")
R = TypeVar("R")
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class Refused(Exception):
    """A call eskit refuses on purpose, with the status to answer."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        trailers: tuple[tuple[str, str | bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.trailers = code, message, trailers


def denied(message: str) -> Refused:
    return Refused(grpc.StatusCode.PERMISSION_DENIED, message)


def invalid(message: str) -> Refused:
    return Refused(grpc.StatusCode.INVALID_ARGUMENT, message)


def deleted(stream: str) -> Refused:
    """KurrentDB's answer for a tombstoned stream: the message and trailers of its v1 API,
    and the rich status detail of its newer one (clients read either)."""
    message = f"Event stream '{stream}' is deleted."
    detail = any_pb2.Any()
    detail.Pack(errors_pb2.StreamTombstonedErrorDetails(stream=stream))
    # google.rpc.Status, which kurrentdbclient's copy matches field for field
    status = status_pb2.Status(
        code=code_pb2.Code.FAILED_PRECONDITION, message=message, details=detail
    )
    return Refused(
        grpc.StatusCode.FAILED_PRECONDITION,
        message,
        (
            ("exception", "stream-deleted"),
            ("stream-name", stream),
            ("grpc-status-details-bin", status.SerializeToString()),
        ),
    )


def refusal(error: BaseException) -> Refused:
    """The status that answers ``error``."""
    if isinstance(error, Refused):
        return error
    if isinstance(error, Unauthenticated):
        return Refused(grpc.StatusCode.UNAUTHENTICATED, str(error))
    if isinstance(error, StreamDeleted):
        return deleted(error.stream)
    if isinstance(error, WrongExpectedVersion):  # delete and tombstone (append answers in-band)
        actual = -1 if error.actual is None else error.actual
        expected = error.expected if isinstance(error.expected, int) else -2
        return Refused(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"WrongExpectedVersion. Stream: {error.stream}, Expected version: {expected},"
            f" Actual version: {actual}",
            (("exception", "wrong-expected-version"), ("stream-name", error.stream)),
        )
    if isinstance(error, IdempotencyConflict | ValueError):
        return invalid(str(error))
    if isinstance(error, StoreClosed | Unavailable):
        return Refused(grpc.StatusCode.UNAVAILABLE, str(error))
    log.exception("gRPC call failed", exc_info=error)
    return Refused(grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}); see log")


async def abort(context: Context, error: BaseException) -> NoReturn:
    refused = refusal(error)
    if refused.trailers:
        context.set_trailing_metadata(refused.trailers)
    await context.abort(refused.code, refused.message)
    raise AssertionError("unreachable")  # pragma: no cover - abort raises


def answered(
    method: Callable[[S, Q, Context], Awaitable[R]],
) -> Callable[[S, Q, Context], Awaitable[R]]:
    """A unary handler whose errors become statuses."""

    @functools.wraps(method)
    async def handle(self: S, request: Q, context: Context) -> R:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await abort(context, error)

    return handle


def streamed(
    method: Callable[[S, Q, Context], AsyncIterator[R]],
) -> Callable[[S, Q, Context], AsyncIterator[R]]:
    """A streaming handler whose errors become statuses."""

    @functools.wraps(method)
    async def handle(self: S, request: Q, context: Context) -> AsyncIterator[R]:
        try:
            async for response in method(self, request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await abort(context, error)

    return handle
