"""The command bus, async face: ``send`` runs the middleware around the one command-handling
flow (``eskit.application.handling``, where load, decide, append, retry and idempotency are
written) against an ``EventStore``. ``eskit.sync.CommandBus`` is the same bus, blocking.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeAlias, TypeVar, cast

from eskit.application.effects import catches_up, is_async, run_async, run_threaded
from eskit.application.handling import (
    COMMAND_NAMESPACE,
    AlsoAppend,
    BusCore,
    CommandContext,
    CommandResult,
    Handler,
    command_event_id,
)
from eskit.application.repository import Repository, RepositoryCore
from eskit.application.state_cache import STATE_CACHE
from eskit.domain.events import EventRegistry
from eskit.domain.model import Model
from eskit.store.base import EventStore
from eskit.store.blocking import BorrowedStore

__all__ = [
    "COMMAND_NAMESPACE",
    "AlsoAppend",
    "CommandBus",
    "CommandContext",
    "CommandResult",
    "Handler",
    "Middleware",
    "command_event_id",
]

S = TypeVar("S")

Middleware: TypeAlias = Callable[
    [CommandContext, Callable[[CommandContext], Awaitable[CommandResult]]],
    Awaitable[CommandResult],
]


class CommandBus(BusCore):
    """Routes commands to handlers and runs them against the event store.

    ``state_cache``: how many aggregates' states the bus keeps between commands, checked
    by the store when a command appends from one (``eskit.application.state_cache``; 0: none).
    """

    def __init__(
        self,
        store: EventStore,
        events: EventRegistry,
        *,
        max_attempts: int = 5,
        backoff: float = 0.002,
        middleware: Sequence[Middleware] = (),
        state_cache: int = STATE_CACHE,
    ) -> None:
        super().__init__(
            events,
            max_attempts=max_attempts,
            backoff=backoff,
            state_cache=state_cache if catches_up(store) else 0,
        )
        self.store = store
        self.middleware: list[Middleware] = list(middleware)
        engine = getattr(store, "engine", None)
        self._blocking = None if engine is None or engine.runs_on_loop else BorrowedStore(store)
        """Where a plain handler's command does all its IO in one hand-off (None: on the
        loop, for an engine that never waits on IO)."""
        self._plain: dict[type[Any], bool] = {}

    def repository(self, model: Model[S]) -> Repository[S]:
        """The repository the bus uses for ``model`` (one per model, shared)."""
        return cast(Repository[S], self._repository(model))

    def repository_for(self, stream: str) -> Repository[Any] | None:
        """The repository of the aggregate whose stream this is (``category-id``, by a model
        the bus routes commands to), or None."""
        return cast(Repository[Any] | None, self._repository_for(stream))

    def _new_repository(self, model: Model[Any]) -> RepositoryCore[Any]:
        return Repository(self.store, self.events, model)

    async def send(
        self,
        command: object,
        *,
        command_id: uuid.UUID | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> CommandResult:
        """Handle ``command`` and return what it appended.

        Give ``command_id`` (e.g. from the client's request) to make retries safe; give the
        ``correlation_id``/``causation_id`` of the event that caused the command when a
        process reacts to events. Raises the handler's own errors, ``ConcurrencyError``
        after ``max_attempts`` conflicts, ``DomainError`` for an unknown command, and
        ``IdempotencyConflict`` when ``command_id`` was used by another command (another
        type, or the same type with other arguments).
        """
        context, run = self._context(command, command_id, correlation_id, causation_id, metadata)
        result: CommandResult = await run(context)
        return result

    async def _run(self, context: CommandContext) -> CommandResult:
        flow = self.handling(context)
        if self._blocking is not None and self._is_plain(type(context.command)):
            return await run_threaded(self.store, self._blocking, flow)
        return await run_async(self.store, flow)

    def _wrap(
        self,
        middleware: Middleware,
        call_next: Callable[[CommandContext], Awaitable[CommandResult]],
    ) -> Callable[[CommandContext], Awaitable[CommandResult]]:
        return _wrap(middleware, call_next)

    def _is_plain(self, command_type: type[Any]) -> bool:
        """Whether the command's handler is a plain function (its IO can run in a thread)."""
        plain = self._plain.get(command_type)
        if plain is None:
            plain = self._plain[command_type] = not is_async(self._routes[command_type].handle)
        return plain


def _wrap(
    middleware: Middleware, call_next: Callable[[CommandContext], Awaitable[CommandResult]]
) -> Callable[[CommandContext], Awaitable[CommandResult]]:
    async def run(context: CommandContext) -> CommandResult:
        return await middleware(context, call_next)

    return run
