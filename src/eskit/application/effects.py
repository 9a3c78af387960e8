"""What the application logic asks of the store, and the two drivers that do it.

Loading, saving and handling a command are written once, as generators that never touch
the store: they ``yield`` a request (``ReadStream``, ``AppendEvents``, ``FindEvent``,
``Pause``...) and are sent its result, or thrown its exception, by a driver
(``eskit.drivers``, shared with the projection engine). ``run_async`` does the IO with an
``EventStore`` (the async face); ``run_blocking`` does it with a ``SyncStore`` in the calling
thread (the blocking face, ``eskit.sync``). Nothing else differs
between the faces, so a rule of command handling cannot be fixed in one and not the other.

A read is streamed, not gathered: ``ReadStream`` returns the store's iterator as it is, and
``Consume(source, step)`` has the driver feed its items to ``step`` (plain code of the
logic) until ``step`` returns False, so a long stream is folded in constant memory.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import uuid
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar

import msgspec

from eskit.drivers import Pause, drive, drive_blocking
from eskit.store.base import EventStore
from eskit.store.model import Append, ExpectedVersion, NewEvent, RecordedEvent, Snapshot

if TYPE_CHECKING:
    from eskit.sync import SyncStore

T = TypeVar("T")


class _Effect(msgspec.Struct, frozen=True):
    """A request of a flow: a frozen record made in C (a command makes several), compared
    and matched by its fields as a dataclass would be."""


class ReadStream(_Effect, frozen=True):
    """``store.read_stream(stream, from_version)``: returns the (unstarted) iterator."""

    stream: str
    from_version: int | None


class ReadFromSnapshot(_Effect, frozen=True):
    """``store.read_from_snapshot``: returns the snapshot (or None) and the events after it."""

    stream: str
    snapshot_version: int
    max_version: int | None


class CatchUp(_Effect, frozen=True):
    """``engine.events_after``: the events of ``stream`` after ``version`` (a page at most)
    if it never hid one, else None (``eskit.application.state_cache``)."""

    stream: str
    version: int


class Consume(_Effect, frozen=True):
    """Feed the items of ``source`` (from a read) to ``step`` until it returns False."""

    source: Any
    step: Callable[[RecordedEvent], bool]


class AppendEvents(_Effect, frozen=True):
    """``store.append``: returns the ``AppendResult``."""

    stream: str
    events: Sequence[NewEvent]
    expected_version: ExpectedVersion


class AppendUntouched(_Effect, frozen=True):
    """``store.append``, refused (``planner.StreamTouched``, a ``WrongExpectedVersion``)
    unless the stream never hid an event: what the command bus appends from a state it kept
    without reading the stream (``eskit.application.state_cache``). Returns the
    ``AppendResult``. An internal request: ``store.append`` has no keyword for it."""

    stream: str
    events: Sequence[NewEvent]
    expected_version: ExpectedVersion


class AppendMany(_Effect, frozen=True):
    """``store.append_many``: returns the list of ``AppendResult``."""

    appends: Sequence[Append]


class FindEvent(_Effect, frozen=True):
    """``store.find_event``: returns the ``RecordedEvent`` or None."""

    event_id: uuid.UUID


class FindRemoved(_Effect, frozen=True):
    """``store.find_removed``: returns the removal record (``scavenge.Removal``) or None."""

    event_id: uuid.UUID


class LoadSnapshot(_Effect, frozen=True):
    """``store.load_snapshot``: returns the ``Snapshot`` or None."""

    stream: str
    snapshot_version: int


class SaveSnapshot(_Effect, frozen=True):
    """``store.save_snapshot``."""

    snapshot: Snapshot


class Await(_Effect, frozen=True):
    """What user code (``function``, a command handler the flow called itself) returned,
    awaitable: the async face awaits it and returns its result; the blocking face refuses
    it (``TypeError``). A plain result needs no request: the flow just uses it."""

    awaitable: Any
    function: Callable[..., Any]


class Later(_Effect, frozen=True):
    """Run ``flow`` after the caller is answered, ignoring its result: the async face in a
    task added to ``tasks`` (until it ends), the blocking face at once, in the caller's
    thread. ``flow`` must not raise (a snapshot logs its own failure)."""

    flow: Flow[None]
    tasks: set[Any]


Request: TypeAlias = (
    ReadStream
    | ReadFromSnapshot
    | CatchUp
    | Consume
    | AppendEvents
    | AppendUntouched
    | AppendMany
    | FindEvent
    | FindRemoved
    | LoadSnapshot
    | SaveSnapshot
    | Await
    | Pause
    | Later
)
Flow: TypeAlias = Generator[Request, Any, T]
"""Logic that does IO only by yielding requests; it returns a ``T``."""


async def run_async(store: EventStore, flow: Flow[T]) -> T:
    """Run ``flow`` against an async store: its result, or the exception it lets out."""
    return await drive(flow, functools.partial(_perform_async, store))


async def _perform_async(store: EventStore, request: Request) -> Any:
    match request:  # a command's requests first: each case is a type test
        case AppendEvents(stream, events, expected_version):
            return await store.append(stream, events, expected_version)
        case AppendUntouched(stream, events, expected_version):
            return await store._append_untouched(stream, events, expected_version)
        case CatchUp(stream, version):
            engine = store.engine
            return await engine.call_async(engine.events_after, stream, version, store.page_size)
        case ReadStream(stream, from_version):
            return store.read_stream(stream, from_version=from_version)
        case ReadFromSnapshot(stream, snapshot_version, max_version):
            return await store.read_from_snapshot(stream, snapshot_version, max_version)
        case Consume(source, step):
            async for item in source:
                if not step(item):
                    break
            return None
        case AppendMany(appends):
            return await store.append_many(appends)
        case FindEvent(event_id):
            return await store.find_event(event_id)
        case FindRemoved(event_id):
            return await store.find_removed(event_id)
        case LoadSnapshot(stream, snapshot_version):
            return await store.load_snapshot(stream, snapshot_version)
        case SaveSnapshot(snapshot):
            return await store.save_snapshot(snapshot)
        case Await(returned, _):
            return await returned
        case Later(flow, tasks):
            task = asyncio.create_task(run_async(store, flow))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            return None


async def run_threaded(store: EventStore, blocking: SyncStore, flow: Flow[T]) -> T:
    """Run ``flow`` for the async face with one hand-off for all its IO: from its first
    read on, its reads, calls and appends are made in one worker thread visit, with
    ``blocking`` (the blocking face of ``store``'s engine), and only what needs the event
    loop comes back to it (a ``Pause``, a ``Later``, an awaitable a handler returned). A flow
    that reads nothing (a create, a command on a kept state) runs on the loop and appends as
    ``run_async`` does: one hand-off at most either way. The loop never waits on a read
    (an append may commit on an idle loop: ``GroupCommit.call``).

    Cancelled while the thread works, the flow goes on there only up to its next write,
    which it does not make: as on the loop, a command cancelled before its append appends
    nothing."""
    caller = _Caller()
    result: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                effect = flow.throw(error) if error is not None else flow.send(result)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            result, error = None, None
            step: Any = effect
            if type(effect) in _READS:  # the flow's own errors (and a cancellation) go up
                done, step = await asyncio.to_thread(_in_thread, blocking, flow, effect, caller)
                if done:
                    return step  # type: ignore[no-any-return]
            try:
                if type(step) is Pause:
                    await asyncio.sleep(step.seconds)
                else:
                    result = await _perform_async(store, step)
            except BaseException as raised:
                error = raised
                if not isinstance(raised, Exception):
                    flow.close()
                    raise
    except asyncio.CancelledError:
        caller.cancelled = True
        raise


class _Caller:
    """Whether the caller of a flow running in a worker thread was cancelled: written on
    the loop, read in the thread (one attribute: a ``threading.Event`` costs a lock and a
    condition on every command)."""

    cancelled = False


_READS: Final = frozenset({ReadStream, ReadFromSnapshot, CatchUp, FindEvent, LoadSnapshot})
_WRITES: Final = frozenset({AppendEvents, AppendUntouched, AppendMany, SaveSnapshot})
_FOR_THE_LOOP: Final = frozenset({Pause, Later, Await})
"""Effects told apart by their exact types (never subclassed), in C: a failing
``isinstance`` against a tuple of Struct classes costs ~300 ns, on every command."""


def _in_thread(
    blocking: SyncStore, flow: Flow[T], effect: Request, caller: _Caller
) -> tuple[bool, Any]:
    """Perform ``effect`` and drive ``flow`` on in this worker thread until it ends (True,
    its value) or needs the event loop (False, what for); its ``caller`` cancelled: stop
    before a write."""
    result: Any = None
    error: BaseException | None = None
    try:
        while True:
            if type(effect) in _WRITES and caller.cancelled:
                raise asyncio.CancelledError  # nobody waits: the flow is closed, unwritten
            try:
                result = _perform_blocking(blocking, effect)
            except Exception as raised:
                error = raised
            try:
                effect = flow.throw(error) if error is not None else flow.send(result)
            except StopIteration as stop:
                return True, stop.value
            result, error = None, None
            if type(effect) in _FOR_THE_LOOP:
                return False, effect
    except BaseException:
        flow.close()
        raise


def run_blocking(store: SyncStore, flow: Flow[T]) -> T:
    """Run ``flow`` against a blocking store, in this thread: its result, or the exception
    it lets out."""
    return drive_blocking(flow, performer(store))


def performer(store: SyncStore) -> Callable[[Request], Any]:
    """What performs a flow's requests with ``store`` (``drive_blocking``'s ``perform``):
    made once by a long-lived caller (the command bus), not once per flow."""
    return functools.partial(_perform_blocking, store)


def _perform_blocking(store: SyncStore, request: Request) -> Any:
    match request:  # a command's requests first: each case is a type test
        case AppendEvents(stream, events, expected_version):
            return store.append(stream, events, expected_version)
        case AppendUntouched(stream, events, expected_version):
            return store._append_untouched(stream, events, expected_version)
        case CatchUp(stream, version):
            return store.engine.events_after(stream, version, store.page_size)
        case ReadStream(stream, from_version):
            return store.read_stream(stream, from_version=from_version)
        case ReadFromSnapshot(stream, snapshot_version, max_version):
            return store.read_from_snapshot(stream, snapshot_version, max_version)
        case Consume(source, step):
            try:
                for item in source:
                    if not step(item):
                        break
            finally:
                source.close()  # release the read now, not when it is collected
            return None
        case AppendMany(appends):
            return store.append_many(appends)
        case FindEvent(event_id):
            return store.find_event(event_id)
        case FindRemoved(event_id):
            return store.find_removed(event_id)
        case LoadSnapshot(stream, snapshot_version):
            return store.load_snapshot(stream, snapshot_version)
        case SaveSnapshot(snapshot):
            return store.save_snapshot(snapshot)
        case Await(returned, function):
            return plain_result(function, returned)  # raises: the blocking face awaits nothing
        case Later(flow, _):
            return run_blocking(store, flow)


def catches_up(store: EventStore | SyncStore) -> bool:
    """Whether ``store`` answers ``CatchUp`` (else the command bus keeps no states)."""
    engine = getattr(store, "engine", None)
    return bool(getattr(engine, "catches_up", False))


def plain_result(function: Callable[..., Any], returned: Any) -> Any:
    """What user code (``function``) returned to the blocking face, refused if it is
    awaitable: an ``async def``, or a function returning an awaitable, would silently never
    run."""
    if awaitable(returned):
        if inspect.iscoroutine(returned):
            returned.close()  # never started: no "was never awaited" warning
        raise TypeError(
            f"{_name(function)} returned an awaitable: the blocking face (eskit.sync) runs"
            " plain functions; give it a `def`, or use the async CommandBus"
        )
    return returned


def awaitable(returned: object) -> bool:
    """``inspect.isawaitable``, answered at once for what handlers return most (None, a
    list of events, a result)."""
    return returned is not None and type(returned) not in _PLAIN and inspect.isawaitable(returned)


_PLAIN: Final = frozenset({list, tuple})


def is_async(function: Callable[..., Any]) -> bool:
    """Whether calling ``function`` gives a coroutine (an ``async def``, or an object whose
    ``__call__`` is one), so that the blocking face can refuse it when it is registered."""
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - a callable object's method
    )


def _name(function: Callable[..., Any]) -> str:
    return getattr(function, "__qualname__", None) or repr(function)
