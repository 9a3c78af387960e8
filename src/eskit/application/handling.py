"""Command handling, written once: load, decide, append with the expected version, retry on
conflict, idempotency, correlation metadata. IO-free: ``BusCore.handling`` is a flow
(``eskit.application.effects``) that both faces' ``CommandBus`` drive.

A handler receives the command and the aggregate's state and either returns the new events
(decider style) or calls command methods on an ``Aggregate``, which records them. The bus
then appends them with the version it loaded; on ``WrongExpectedVersion`` it reloads and
decides again, a bounded number of times with jittered backoff, then raises
``ConcurrencyError``.

A command registered with ``creates=True`` is decided against the initial state without
loading, and appended with ``NO_STREAM``: one round trip to the store instead of two. If
the stream exists after all (or the handler refuses, or decides nothing), the guess is
dropped and the command runs as any other (load, decide), so what it does to an existing
aggregate is unchanged. A state the bus kept (``state_cache``) is guessed the same way: the
command is decided on it unread, its append made untouched (refused unless the stream is
still at that version and never hid an event); refused, the command catches up or loads.

Idempotency: with a ``command_id``, event ids are derived from it (uuid5), and a command
already handled returns its original result without deciding again, so a client may safely
retry after a lost reply. The events record what the id was used for (type and a digest of
the arguments, ``eskit.application.idempotency``): the id sent again with any other command
raises ``IdempotencyConflict`` instead of dropping that command. Every event gets
``correlation_id`` (flows through a whole chain), ``causation_id`` (the command, or the
event, that caused it) and the command's type in its metadata.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeAlias, TypeVar

import msgspec

from eskit.application import idempotency
from eskit.application.effects import Await, CatchUp, FindEvent, FindRemoved, Flow, awaitable
from eskit.application.repository import Loaded, RepositoryCore
from eskit.application.state_cache import StateCache
from eskit.domain.aggregate import Aggregate, decided_events
from eskit.domain.events import EventRegistry
from eskit.domain.model import Decider, Model
from eskit.drivers import Pause
from eskit.errors import ConcurrencyError, DomainError, IdempotencyConflict, WrongExpectedVersion
from eskit.retry import backoff
from eskit.store.ids import new_event_ids
from eskit.store.model import ANY, NO_STREAM, ExpectedVersion

C = TypeVar("C")
S = TypeVar("S")

_set = object.__setattr__

COMMAND_NAMESPACE = uuid.UUID("6f2c7d9e-58a4-4d8b-9a57-0c3f5e0e7a11")
"""Namespace of the event ids derived from command ids (never change it)."""


@dataclasses.dataclass(frozen=True)
class CommandContext:
    """Who and what a command belongs to; middleware may add to ``metadata``."""

    command: object
    command_id: uuid.UUID
    correlation_id: str
    causation_id: str
    metadata: dict[str, Any]
    idempotent: bool

    def __init__(
        self,
        command: object,
        command_id: uuid.UUID,
        correlation_id: str,
        causation_id: str,
        metadata: dict[str, Any],
        idempotent: bool,
        command_id_text: str | None = None,
    ) -> None:
        """``command_id_text``: ``str(command_id)`` if the caller has it already (``send``
        made it for the correlation ids); else the property makes it when first read."""
        # Frozen: the generated __init__ sets each field through object.__setattr__ (half
        # the cost of a command's context); its __dict__ set at once costs one such call.
        fields = {
            "command": command,
            "command_id": command_id,
            "correlation_id": correlation_id,
            "causation_id": causation_id,
            "metadata": metadata,
            "idempotent": idempotent,
        }
        if command_id_text is not None:
            fields["command_id_text"] = command_id_text  # what the property would make
        _set(self, "__dict__", fields)

    @functools.cached_property
    def command_id_text(self) -> str:
        """``str(command_id)``, made once (or given to ``__init__``) and held by every
        attempt's metadata. Not a field: ``dataclasses.replace`` makes it again from the new
        id."""
        return _text(self.command_id)


@dataclasses.dataclass(frozen=True, slots=True)
class AlsoAppend:
    """Part of a decision: typed events for another stream, appended in the same atomic
    transaction as the aggregate's own events (for invariants that span aggregates, e.g.
    claiming ``email-<address>`` with ``NO_STREAM`` so an e-mail is used once).

    A conflict on such a stream is not retried: it is raised as ``WrongExpectedVersion``.
    """

    stream: str
    events: Sequence[object]
    expected_version: ExpectedVersion = ANY


@dataclasses.dataclass(frozen=True)
class CommandResult:
    """What a command did: the events it appended (none if it decided nothing)."""

    stream: str
    version: int | None
    position: int | None
    events: list[Any]
    replayed: bool = False
    """True when the command had been handled before and this is the original result."""

    def __init__(
        self,
        stream: str,
        version: int | None,
        position: int | None,
        events: list[Any],
        replayed: bool = False,
    ) -> None:
        _set(  # as CommandContext's
            self,
            "__dict__",
            {
                "stream": stream,
                "version": version,
                "position": position,
                "events": events,
                "replayed": replayed,
            },
        )


Handler: TypeAlias = Callable[[Any, Any], Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """Where one command type goes, and how it is handled."""

    repository: RepositoryCore[Any]
    aggregate_id: Callable[[Any], str]
    stream: Callable[[str], str]
    """The stream of an aggregate id: the model's ``stream``, bound once (a frame less than
    the repository's, for every command)."""
    handle: Handler
    retry_may_change: frozenset[str]
    creates: bool


class BusCore:
    """What both faces' command buses share: the routes, and handling a command as a flow.

    A face adds ``send`` (running its middleware around ``handling``) and the repositories
    of its face (``_new_repository``)."""

    def __init__(
        self,
        events: EventRegistry,
        *,
        max_attempts: int = 5,
        backoff: float = 0.002,
        state_cache: int = 0,
    ) -> None:
        self.events = events
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.states = StateCache(state_cache)
        """Aggregates' states kept between commands (``eskit.application.state_cache``)."""
        self.on_retry: Callable[[CommandContext, int], None] | None = None
        """Called before a command is decided again after a conflict (metrics)."""
        self._routes: dict[type[Any], Route] = {}
        self._repositories: dict[int, RepositoryCore[Any]] = {}
        self.middleware: list[Any] = []
        """Run around every command, the first outermost (each face types its own)."""
        self._chained: tuple[list[Any] | None, Callable[[CommandContext], Any]] = (None, self._run)
        """``middleware`` as it was when the chain ``_run`` inside it was built, and that."""

    def register(
        self,
        command_type: type[C],
        target: Model[Any] | type[Aggregate],
        *,
        aggregate_id: Callable[[C], str],
        handle: Handler | None = None,
        retry_may_change: Collection[str] = ("now",),
        creates: bool = False,
    ) -> None:
        """Route ``command_type`` to the aggregate ``target`` (a Decider, Model or Aggregate
        class) whose id ``aggregate_id(command)`` gives.

        ``handle(command, state)`` returns the new events or, for an Aggregate, calls its
        command methods (the async face also takes an ``async def``). A Decider's
        ``decide`` is the default handler. ``retry_may_change`` names the fields a retry of
        the command may send differently (the time it is sent): they do not count when a
        command id is sent again. ``creates=True`` says the command usually makes a new
        aggregate: it is decided against the initial state and appended without loading
        first (one round trip), falling back to load and decide when the stream exists.
        """
        if command_type in self._routes:
            raise ValueError(f"{command_type.__qualname__} already has a handler")
        model = target.model() if isinstance(target, type) else target
        if handle is None:
            if not isinstance(model, Decider):
                raise TypeError(f"{command_type.__qualname__}: give `handle=` (no Decider to use)")
            handle = model.decide
        self._check_handler(command_type, handle)
        self._routes[command_type] = Route(
            self._repository(model),
            aggregate_id,
            model.stream,
            handle,
            frozenset(retry_may_change),
            creates,
        )

    def handles(
        self,
        command_type: type[C],
        target: Model[Any] | type[Aggregate],
        *,
        aggregate_id: Callable[[C], str],
        retry_may_change: Collection[str] = ("now",),
        creates: bool = False,
    ) -> Callable[[Handler], Handler]:
        """Decorator form of ``register``."""

        def add(handle: Handler) -> Handler:
            self.register(
                command_type,
                target,
                aggregate_id=aggregate_id,
                handle=handle,
                retry_may_change=retry_may_change,
                creates=creates,
            )
            return handle

        return add

    @property
    def command_types(self) -> list[type[Any]]:
        """The command classes this bus handles, in the order they were registered."""
        return list(self._routes)

    def stream_of(self, command: object) -> str:
        """The stream of the aggregate ``command`` goes to (e.g. to check who may send it)."""
        route = self._routes.get(type(command))
        if route is None:
            raise DomainError(f"no handler for command {type(command).__qualname__}")
        return route.stream(route.aggregate_id(command))

    def _repository_for(self, stream: str) -> RepositoryCore[Any] | None:
        category, dash, _ = stream.partition("-")
        if not dash:
            return None
        found = (r for r in self._repositories.values() if r.model.category == category)
        return next(found, None)

    def _repository(self, model: Model[Any]) -> RepositoryCore[Any]:
        repository = self._repositories.get(id(model))
        if repository is None:
            repository = self._repositories[id(model)] = self._new_repository(model)
        return repository

    def _new_repository(self, model: Model[Any]) -> RepositoryCore[Any]:
        raise NotImplementedError

    def _check_handler(self, command_type: type[Any], handle: Handler) -> None:
        """Refuse a handler this face cannot run (the blocking face: an async one)."""

    def _run(self, context: CommandContext) -> Any:
        """Run ``handling`` with this face's driver."""
        raise NotImplementedError

    def _wrap(self, middleware: Any, call_next: Callable[[CommandContext], Any]) -> Any:
        """``call_next`` inside ``middleware``, as this face calls it."""
        raise NotImplementedError

    def _chain(self) -> Callable[[CommandContext], Any]:
        """``_run`` inside the middleware, kept until ``middleware`` changes."""
        middleware = list(self.middleware)
        run: Callable[[CommandContext], Any] = self._run
        for each in reversed(middleware):
            run = self._wrap(each, run)
        self._chained = (middleware, run)
        return run

    def _context(
        self,
        command: object,
        command_id: uuid.UUID | None,
        correlation_id: str | None,
        causation_id: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> tuple[CommandContext, Callable[[CommandContext], Any]]:
        """The context ``send`` hands its middleware, and the chain to run it through (one
        call: the chain is looked up for every command); ``DomainError`` for an unknown
        command."""
        if type(command) not in self._routes:
            raise DomainError(f"no handler for command {type(command).__qualname__}")
        if command_id is None:
            the_id, id_text = _new_command_id()
        else:
            the_id, id_text = command_id, _text(command_id)
        # Positional: a class called with keywords builds a dict of them (twice the cost).
        context = CommandContext(
            command,
            the_id,
            correlation_id or id_text,
            causation_id or id_text,
            dict(metadata) if metadata else {},
            command_id is not None,  # idempotent
            id_text,  # command_id_text
        )
        chained = self._chained
        return context, chained[1] if self.middleware == chained[0] else self._chain()

    def handling(self, context: CommandContext) -> Flow[CommandResult]:
        """Handle the command of ``context``: load, decide, append, retry (the flow both
        faces' ``send`` run inside their middleware)."""
        route = self._routes[type(context.command)]
        repository = route.repository
        aggregate_id = route.aggregate_id(context.command)
        stream = route.stream(aggregate_id)
        digest = (
            idempotency.command_digest(context.command, route.retry_may_change)
            if context.idempotent
            else None
        )
        guess_new = route.creates  # until the store says the stream exists
        # A kept state is decided on unread, its append made untouched, until it is refused
        # (a command id keeps the read: its append may replay an original decided otherwise)
        kept = None if guess_new or digest is not None else self._kept(stream)
        dropped = None  # a kept entry given up, for _loading to catch up from
        if kept is not None and kept[1] is _HIDDEN:
            dropped, kept = kept, None
        foldable = True  # whether to keep the state after: the stream never hid an event
        attempt = 0
        while True:
            if guess_new:
                state, version = repository.model.initial_state(), None
            elif kept is not None:
                version, state = kept
            else:
                state, version, foldable = yield from self._loading(
                    repository, aggregate_id, stream, dropped
                )
                dropped = None
            # A command id costs a lookup before deciding: the store's idempotent-append rule
            # would catch a retry only after the handler decided it again (its events may lie
            # before a snapshot, be hidden, or be on another stream), and a retry is replayed
            # without deciding again. Checked after loading: a racing original is then seen.
            if digest is not None:
                earlier = yield from self._earlier_result(stream, context, digest)
                if earlier is not None:
                    return earlier
            try:
                decision = route.handle(context.command, state)  # in the flow: no request
                # an async handler's decision is awaited (by the async face)
                if decision is not None and awaitable(decision):
                    decision = yield Await(decision, route.handle)
            except Exception:
                if guess_new or kept is not None:  # on the aggregate as it is, it may decide
                    guess_new, dropped, kept = False, _reusable(kept), None  # otherwise
                    continue
                raise
            events, others = _split(decided_events(state, decision))
            if (not events and not others) or (others and kept is not None):
                if guess_new or kept is not None:  # (an untouched append has one stream)
                    guess_new, dropped, kept = False, _reusable(kept), None
                    continue
                return CommandResult(stream, version, None, [])
            if not isinstance(state, Aggregate):  # an Aggregate's methods applied the events
                state = repository.model.replay(events, state)
            used_for = (
                {} if digest is None else self._used_for(context, digest, stream, events, others)
            )
            try:
                result = yield from repository.saving(
                    aggregate_id,
                    events,
                    NO_STREAM if version is None else version,
                    metadata=_metadata(context, used_for),
                    ids=_event_ids(context, events, others) if context.idempotent else None,
                    state=state,
                    also=others,
                    stream=stream,
                    own_metadata=True,  # made for this attempt: the events may share it
                    untouched=kept is not None,
                )
            except WrongExpectedVersion as conflict:
                if conflict.stream != stream:
                    raise  # another stream's rule (e.g. an e-mail already claimed): no retry
                if guess_new or kept is not None:  # the aggregate is not as guessed: load it,
                    guess_new, dropped, kept = False, _reusable(kept), None  # as any command
                    continue
            except IdempotencyConflict:
                if guess_new or kept is not None:
                    guess_new, dropped, kept = False, _reusable(kept), None
                    continue
                # the same command ran concurrently: the next attempt replays it
            else:
                if result is None:  # only other streams were written
                    return CommandResult(stream, version, None, [])
                if foldable and not context.idempotent:  # a retry's append may be the
                    self._keep(stream, result.last_version, state)  # original's replay
                return CommandResult(stream, result.last_version, result.last_position, events)
            attempt += 1
            if attempt == self.max_attempts:
                raise ConcurrencyError(stream, attempt)
            if self.on_retry is not None:
                self.on_retry(context, attempt)
            yield Pause(backoff(self.backoff, attempt, cap=1.0))

    def _kept(self, stream: str) -> tuple[int, Any] | None:
        """The kept (version, state) of ``stream``, taken out, to decide on without reading
        the stream (its append made untouched), or None."""
        if not self.states.size or self.events.opener() is not None:
            return None
        return self.states.take(stream)

    def _loading(
        self,
        repository: RepositoryCore[Any],
        aggregate_id: str,
        stream: str,
        entry: tuple[int, Any] | None = None,
    ) -> Flow[tuple[Any, int | None, bool]]:
        """The aggregate now, and whether the stream never hid an event as far as the store
        told (its state worth keeping): its kept state (``entry``, or the one kept) caught up
        when the store vouches for it (see ``state_cache``), else loaded."""
        if entry is None and self.states.size:
            entry = self.states.take(stream)
        foldable = True
        if entry is not None and self.events.opener() is None:
            version, state = entry
            if state is not _HIDDEN:
                newer = yield CatchUp(stream, version)
                if newer:  # events another process appended since: fold them in
                    fold = repository.folder()
                    for recorded in newer:
                        state, version = fold(state, recorded), recorded.version
                if newer is not None:
                    return state, version, True
            foldable = False  # it hid events, for ever (state_cache): say so at once, for
            self.states.put(stream, version, _HIDDEN)  # the next command, whatever this does
        loaded: Loaded[Any] = yield from repository.loading(aggregate_id, missing_ok=True)
        return loaded.state, loaded.version, foldable

    def _keep(self, stream: str, version: int, state: Any) -> None:
        """Keep the state a command appended from, for the next command on it."""
        if self.states.size and self.events.opener() is None:
            self.states.put(stream, version, state)

    def _used_for(
        self,
        context: CommandContext,
        digest: str,
        stream: str,
        events: list[Any],
        others: list[tuple[str, Sequence[object], ExpectedVersion]],
    ) -> dict[str, Any]:
        """What the events record of the command their command id was used for: its
        digest sealed with a data subject's key when they hold personal data."""
        written = [(stream, e) for e in events] + [(s, e) for s, more, _ in others for e in more]
        recorded: Any = digest
        subject = self._first_subject(written)
        if subject is not None:
            first = (written[0][0], command_event_id(context.command_id, 0))
            recorded = idempotency.seal(self.events.cipher, digest, subject, *first)
        return idempotency.used_for(recorded, None if events else stream)

    def _first_subject(self, written: list[tuple[str, object]]) -> str | None:
        """The subject whose key seals a command's digest: that of the first sensitive
        field of the first event holding one, in the order the events are written."""
        for stream, event in written:
            subject = self.events.first_subject(event, stream)
            if subject is not None:
                return subject
        return None

    def _earlier_result(
        self, stream: str, context: CommandContext, digest: str
    ) -> Flow[CommandResult | None]:
        """The original result of this command if it ran before (its first event exists).

        Events are found by their derived ids, so the result is found even when the stream
        has since hidden them (deleted, truncated). A command id reused for another command
        (type or arguments) raises ``IdempotencyConflict`` rather than replaying someone
        else's result and dropping this command.
        """
        command_id = context.command_id
        first = yield FindEvent(command_event_id(command_id, 0))
        if first is None:
            return (yield from self._scavenged_result(stream, context, digest))
        idempotency.check_reuse(
            first, context.command, stream, digest, command_id, self.events.cipher
        )
        if first.stream != stream:  # it only wrote other streams
            return CommandResult(stream, None, None, [], replayed=True)
        recorded = [first]
        while (
            found := (yield FindEvent(command_event_id(command_id, len(recorded))))
        ) and found.stream == stream:
            recorded.append(found)
        typed = [e for r in recorded for e in self.events.decode(r)]
        last = recorded[-1]
        return CommandResult(stream, last.version, last.position, typed, replayed=True)

    def _scavenged_result(
        self, stream: str, context: CommandContext, digest: str
    ) -> Flow[CommandResult | None]:
        """The original result of a command whose events a scavenge removed (their ids,
        places and what the command id was used for are recorded, their contents are gone:
        the result has no events), or None if it never ran. A reused command id is judged
        as before the removal; one removed before eskit recorded its use replays."""
        command_id = context.command_id
        gone = yield FindRemoved(command_event_id(command_id, 0))
        if gone is None:
            return None
        if gone.used_for is not None:
            idempotency.check_reuse(
                idempotency.removed_first(gone, command_event_id(command_id, 0)),
                context.command,
                stream,
                digest,
                command_id,
                self.events.cipher,
            )
        if gone.stream != stream:
            return CommandResult(stream, None, None, [], replayed=True)
        version, position, index = gone.version, gone.position, 1
        while True:
            id_ = command_event_id(command_id, index)
            found = (yield FindRemoved(id_)) or (yield FindEvent(id_))
            if found is None or found.stream != stream:
                return CommandResult(stream, version, position, [], replayed=True)
            version, position, index = found.version, found.position, index + 1


_HIDDEN: Any = object()
"""Kept in place of the state of a stream that hid events (``state_cache``): a state kept of
it could never be used, and deciding on one would only have its append refused."""


def _reusable(entry: tuple[int, Any] | None) -> tuple[int, Any] | None:
    """A kept entry given up, if it may still be caught up from: not an ``Aggregate``, whose
    handler may have changed it in place (a decider's state is immutable)."""
    if entry is None or isinstance(entry[1], Aggregate):
        return None
    return entry


def command_event_id(command_id: uuid.UUID, index: int) -> uuid.UUID:
    """The id of the ``index``-th event (from 0) a command sent with ``command_id`` appends."""
    return uuid.uuid5(COMMAND_NAMESPACE, f"{command_id}:{index}")


_uuid_of = msgspec.msgpack.Decoder(uuid.UUID).decode
_BIN16 = b"\xc4\x10"  # msgpack: 16 bytes of binary follow
_canonical = msgspec.to_builtins


def _new_command_id() -> tuple[uuid.UUID, str]:
    """A fresh UUIDv7 for a command sent without an id, and its text (``_text``'s, without
    its check: it is a UUID), made in C by msgspec (``uuid.UUID(bytes=...)`` costs three
    times as much, on every command)."""
    the_id: uuid.UUID = _uuid_of(_BIN16 + new_event_ids(1)[0])
    text: str = _canonical(the_id)
    return the_id, text


def _text(command_id: uuid.UUID) -> str:
    """``str(command_id)``, made in C by msgspec for a UUID (a command's correlation and
    causation ids and its events' metadata hold it: ``str`` costs three times as much)."""
    if type(command_id) is uuid.UUID:
        text: str = _canonical(command_id)
        return text
    return str(command_id)


def _split(decided: list[Any]) -> tuple[list[Any], list[tuple[str, Sequence[object], Any]]]:
    """A decision's events for the aggregate's own stream, and those for other streams
    (``AlsoAppend``) as ``(stream, events, expected version)``."""
    for each in decided:  # a loop, not a comprehension: no frame for the usual none
        if isinstance(each, AlsoAppend):
            break
    else:
        return decided, []
    others = [
        (o.stream, o.events, o.expected_version) for o in decided if isinstance(o, AlsoAppend)
    ]
    return [e for e in decided if not isinstance(e, AlsoAppend)], others


def _event_ids(
    context: CommandContext, events: list[Any], others: list[tuple[str, Sequence[object], Any]]
) -> list[uuid.UUID]:
    """The ids of an idempotent command's events, derived from its command id."""
    count = len(events) + sum(len(o[1]) for o in others)
    return [command_event_id(context.command_id, i) for i in range(count)]


def _metadata(context: CommandContext, used_for: dict[str, str]) -> dict[str, Any]:
    return {
        **context.metadata,
        "correlation_id": context.correlation_id,
        "causation_id": context.causation_id,
        idempotency.COMMAND: type(context.command).__qualname__,
        "command_id": context.command_id_text,
        **used_for,
    }
