"""The request size limit: a body over ``max_body`` bytes gets 413 before it is read whole."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eskit.web.errors import ApiError


def too_large(max_body: int) -> ApiError:
    return ApiError(413, "PayloadTooLarge", f"the request body is over {max_body} bytes")


class BodyLimit:
    """ASGI middleware: refuse a declared ``Content-Length`` over the limit at once, and
    stop a body sent in chunks as soon as it passes the limit (the endpoint reading it
    gets ``ApiError(413)``)."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            error = too_large(self.max_body)
            if not declared.isdigit():
                error = ApiError(400, "BadRequest", "Content-Length must be a number of bytes")
            await error.response()(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise too_large(self.max_body)
            return message

        await self.app(scope, limited, send)
