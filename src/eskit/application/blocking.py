"""The application layer's blocking face: ``CommandBus`` and ``Repository`` over a
``eskit.sync.SyncStore``, for Django, Flask, scripts and Celery tasks.

Same constructors, methods and behaviour as the async ones (``eskit.application``): they run
the same flows (``handling``, ``repository``) with the blocking driver, in the calling
thread. Aggregates, deciders, upcasters and events' registries are shared unchanged;
handlers and middleware must be plain functions (an ``async def`` is refused with
``TypeError`` when it is registered, or when it is called if that could not be seen). A
snapshot that falls due is stored in the caller's thread right after the append, and a
failing one is logged and counted, never raised. One bus may serve many threads at once.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, cast

from eskit.application.effects import catches_up, is_async, performer, plain_result, run_blocking
from eskit.application.handling import BusCore, CommandContext, CommandResult, Handler
from eskit.application.repository import Loaded, RepositoryCore
from eskit.application.state_cache import STATE_CACHE
from eskit.domain.events import EventRegistry
from eskit.domain.model import Model
from eskit.drivers import drive_blocking
from eskit.store.model import AppendResult, ExpectedVersion

if TYPE_CHECKING:
    from eskit.sync import SyncStore

S = TypeVar("S")

Middleware: TypeAlias = Callable[
    [CommandContext, Callable[[CommandContext], CommandResult]], CommandResult
]
"""``middleware(context, call_next)``: a plain function around every command."""


class Repository(RepositoryCore[S]):
    """Loads and saves the aggregates of one ``Model`` in a blocking store."""

    def __init__(self, store: SyncStore, events: EventRegistry, model: Model[S]) -> None:
        super().__init__(events, model)
        self.store = store

    def load(
        self,
        aggregate_id: str,
        *,
        version: int | None = None,
        at: dt.datetime | None = None,
        missing_ok: bool = False,
    ) -> Loaded[S]:
        """The aggregate now, or as it was at ``version`` or at time ``at`` (time travel).

        Raises ``AggregateNotFound`` when it has no events (unless ``missing_ok``, which
        returns the initial state at version None).
        """
        return run_blocking(self.store, self.loading(aggregate_id, version, at, missing_ok))

    def save(
        self,
        aggregate_id: str,
        events: Sequence[object],
        expected_version: ExpectedVersion,
        *,
        metadata: Mapping[str, Any] | None = None,
        ids: Sequence[Any] | None = None,
        state: S | None = None,
        also: Sequence[tuple[str, Sequence[object], ExpectedVersion]] = (),
    ) -> AppendResult | None:
        """Append ``events`` if the aggregate is still at ``expected_version``; as the async
        ``Repository.save``, but a snapshot that falls due is stored before it returns."""
        flow = self.saving(aggregate_id, events, expected_version, metadata, ids, state, also)
        return run_blocking(self.store, flow)

    def wait_for_snapshots(self) -> None:
        """Nothing to wait for: the blocking face stores snapshots before ``save`` returns
        (kept so that code written for either face reads the same)."""


class CommandBus(BusCore):
    """Routes commands to handlers and runs them against a blocking store.

    ``state_cache``: how many aggregates' states the bus keeps between commands, checked
    by the store when a command appends from one (``eskit.application.state_cache``; 0: none).
    """

    def __init__(
        self,
        store: SyncStore,
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
        self._perform = performer(store)
        for each in middleware:
            _refuse_async(each, "middleware")
        self.middleware: list[Middleware] = list(middleware)

    def repository(self, model: Model[S]) -> Repository[S]:
        """The repository the bus uses for ``model`` (one per model, shared)."""
        return cast(Repository[S], self._repository(model))

    def repository_for(self, stream: str) -> Repository[Any] | None:
        """The repository of the aggregate whose stream this is (``category-id``, by a model
        the bus routes commands to), or None."""
        return cast(Repository[Any] | None, self._repository_for(stream))

    def _new_repository(self, model: Model[Any]) -> RepositoryCore[Any]:
        return Repository(self.store, self.events, model)

    def _check_handler(self, command_type: type[Any], handle: Handler) -> None:
        _refuse_async(handle, f"the handler of {command_type.__qualname__}")

    def send(
        self,
        command: object,
        *,
        command_id: uuid.UUID | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> CommandResult:
        """Handle ``command`` and return what it appended; as the async ``CommandBus.send``
        (same arguments, results and errors), blocking."""
        context, run = self._context(command, command_id, correlation_id, causation_id, metadata)
        result: CommandResult = run(context)
        return result

    def _run(self, context: CommandContext) -> CommandResult:
        return drive_blocking(self.handling(context), self._perform)

    def _wrap(
        self, middleware: Middleware, call_next: Callable[[CommandContext], CommandResult]
    ) -> Callable[[CommandContext], CommandResult]:
        return _wrap(middleware, call_next)


def _wrap(
    middleware: Middleware, call_next: Callable[[CommandContext], CommandResult]
) -> Callable[[CommandContext], CommandResult]:
    def run(context: CommandContext) -> CommandResult:
        result = middleware(context, call_next)
        if type(result) is CommandResult:  # what it returns but for an error: not awaitable
            return result
        checked: CommandResult = plain_result(middleware, result)
        return checked

    return run


def _refuse_async(function: Callable[..., Any], what: str) -> None:
    if is_async(function):
        raise TypeError(
            f"{what} ({getattr(function, '__qualname__', function)!r}) is async: the"
            " blocking face (eskit.sync) runs plain functions; give it a `def`, or use the"
            " async CommandBus"
        )
