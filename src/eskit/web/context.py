"""What every endpoint reaches through the request: the store, the settings, who is asking,
and how to answer errors; plus the route class that turns every exception into JSON."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from eskit.application.commands import CommandBus
from eskit.store import rules
from eskit.store.base import EventStore
from eskit.web.errors import translate
from eskit.web.tokens import Grant


@dataclasses.dataclass(frozen=True)
class Settings:
    """Limits and timings of the API."""

    max_body: int = rules.DEFAULT_MAX_EVENT_SIZE
    """Largest request body in bytes (1 MiB, as the largest event); larger ones get 413."""
    default_limit: int = 100
    """Events per page when a request does not say."""
    max_limit: int = 1000
    """Most events one page may ask for."""
    heartbeat: float = 15.0
    """Seconds between comments on a quiet live feed, so that proxies keep it open."""
    wait_timeout: float = 5.0
    """Longest a query waits for ``Wait-For-Position``, in seconds."""
    live_buffer: int = 256
    """Events read ahead for one live feed while the client is slower."""
    archive: Path | None = None
    """An archive (``eskit archive``) that stream reads with ``through_archive=true`` read
    through to; without one, such reads are refused (422)."""

    def __post_init__(self) -> None:
        if self.max_body < 1 or self.default_limit < 1 or self.max_limit < self.default_limit:
            raise ValueError(f"invalid API settings: {self}")
        if self.heartbeat <= 0 or self.wait_timeout <= 0 or self.live_buffer < 1:
            raise ValueError(f"invalid API settings: {self}")


@dataclasses.dataclass
class Context:
    """One app's state, kept in ``app.state.eskit``."""

    store: EventStore
    settings: Settings
    authenticate: Callable[[Request], Grant]
    errors: Mapping[type[BaseException], int]
    wait_until: Callable[[int], Awaitable[None]] | None = None
    bus: CommandBus | None = None
    """The application's command bus: raw appends must decode through its event registry
    and apply to its aggregates (``eskit.web.raw_appends``)."""
    free_form: frozenset[str] = frozenset()
    """Stream categories whose raw appends take events of any type and shape."""
    closing: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    """Set when the server begins to shut down: live feeds end so that it can."""


def context(request: Request) -> Context:
    found: Context = request.app.state.eskit
    return found


class ApiRoute(APIRoute):
    """A route whose errors, whatever they are, become the API's JSON errors (raising
    them to the server would log them with their message and answer with plain text)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_or_explain(request: Request) -> Response:
            try:
                return await handle(request)
            except Exception as error:
                where = f"{request.method} {self.path}"
                return translate(error, context(request).errors, where)

        return handle_or_explain
