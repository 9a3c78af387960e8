"""Who is calling: KurrentDB's Basic credentials checked against eskit's tokens.

A KurrentDB client sends ``authorization: Basic base64(username:password)``; eskit reads the
username as a token's name and the password as the token (``eskit tokens create``), so a
connection string ``kurrentdb://ci:eskit_...@host:2113`` carries the token ``ci``. The
token's scopes apply as on the HTTP API: ``read`` to read and subscribe, ``write`` to append,
delete and set stream metadata, each optionally limited to categories.

Without tokens every call may do everything. With tokens, a call without credentials or with
wrong ones gets ``UNAUTHENTICATED``, except gossip and server features, which say nothing
about the data and which clients ask before they send credentials.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeAlias

import grpc

from eskit.grpc.protos import SERVER_FEATURES_SERVICE
from eskit.web.tokens import Grant, TokenFile, TokenSet

Tokens = TokenSet | TokenFile | None
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
OPEN = Grant("anyone", ["admin"])
"""The grant of every call when the server runs without tokens."""
ANONYMOUS_SERVICES = ("event_store.client.gossip.Gossip/", f"{SERVER_FEATURES_SERVICE}/")


class Unauthenticated(Exception):
    """The call's credentials are missing or wrong (``UNAUTHENTICATED``)."""


class Authenticator:
    """Reads a call's credentials and says what it may do."""

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens

    def grant(self, metadata: Iterable[tuple[str, Any]] | None) -> Grant:
        """The grant of a call with this invocation metadata; ``Unauthenticated`` if it
        has none or a wrong one while tokens are required."""
        if self.tokens is None:
            return OPEN
        header = next((v for k, v in metadata or () if k == "authorization"), None)
        if header is None:
            raise Unauthenticated(
                "this server needs credentials: connect with username = the token's name and"
                " password = the token (kurrentdb://NAME:TOKEN@host:port, TLS on)"
            )
        name, token = _basic(header)
        current = self.tokens.current() if isinstance(self.tokens, TokenFile) else self.tokens
        grant = current.grant(token)
        if grant is None or grant.name != name:
            raise Unauthenticated(f"bad credentials for {name!r}: unknown, revoked or mismatched")
        return grant


def _basic(header: str | bytes) -> tuple[str, str]:
    """Username and password of a ``Basic`` authorization header."""
    text = header.decode("latin-1") if isinstance(header, bytes) else header
    scheme, _, encoded = text.partition(" ")
    if scheme.lower() != "basic":
        raise Unauthenticated("credentials must be Basic (username = token name, password = token)")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthenticated(
            "the Basic credentials are not valid base64 of 'name:token'"
        ) from None
    name, colon, token = decoded.partition(":")
    if not colon:
        raise Unauthenticated("the Basic credentials must be 'name:token'")
    return name, token


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses, before any service runs, a call whose credentials are missing or wrong."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method = (handler_call_details.method or "").lstrip("/")
        metadata: Any = handler_call_details.invocation_metadata
        sent = any(key == "authorization" for key, _ in metadata or ())
        if sent or not method.startswith(ANONYMOUS_SERVICES):
            try:
                self.authenticator.grant(metadata)
            except Unauthenticated as error:
                return refusing(await continuation(handler_call_details), str(error))
        return await continuation(handler_call_details)


def refusing(handler: Handler | None, message: str) -> Handler:
    """A handler of the same kind as ``handler`` that answers ``UNAUTHENTICATED``."""

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator

    deserializer = None if handler is None else handler.request_deserializer
    serializer = None if handler is None else handler.response_serializer
    if handler is not None and handler.response_streaming:
        if handler.request_streaming:
            return grpc.stream_stream_rpc_method_handler(streaming, deserializer, serializer)
        return grpc.unary_stream_rpc_method_handler(streaming, deserializer, serializer)
    if handler is not None and handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, deserializer, serializer)
    return grpc.unary_unary_rpc_method_handler(unary, deserializer, serializer)
