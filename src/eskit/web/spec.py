"""What an application gives the HTTP API: its command bus, its queries, the statuses of
its own errors, and what must run while it serves (its projection runner)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI

from eskit.application.commands import CommandBus
from eskit.store.base import EventStore
from eskit.web.app import Lifespan, create_app
from eskit.web.auth import Tokens
from eskit.web.context import Settings
from eskit.web.queries import Query


@dataclasses.dataclass(frozen=True)
class AppSpec:
    """An application, as ``eskit serve --app module:function`` finds it: the function
    takes the (not yet open) store and returns this."""

    bus: CommandBus | None = None
    queries: Mapping[str, Query] = dataclasses.field(default_factory=dict)
    errors: Mapping[type[BaseException], int] = dataclasses.field(default_factory=dict)
    """The application's own error classes and the HTTP status each means."""
    running: Lifespan | None = None
    """Entered once the store is open, left before it closes (e.g. ``lambda: runner``)."""
    wait_until: Callable[[int], Awaitable[None]] | None = None
    """Returns once the read models applied the log up to a position."""


def serving_app(
    store: EventStore,
    spec: AppSpec | None = None,
    *,
    tokens: Tokens = None,
    settings: Settings | None = None,
) -> FastAPI:
    """The API over ``store`` and ``spec``: the store is opened when the app starts (and
    closed when it stops), then the application's ``running`` part is entered."""
    spec = spec or AppSpec()

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[Any]:
        async with store:
            running = spec.running() if spec.running is not None else contextlib.nullcontext()
            async with running:
                yield

    return create_app(
        store,
        bus=spec.bus,
        queries=spec.queries,
        tokens=tokens,
        errors=spec.errors,
        wait_until=spec.wait_until,
        settings=settings,
        lifespan=lifespan,
    )
