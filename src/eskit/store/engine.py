"""A backend's engine: the blocking primitives both faces of the store call.

An engine is blocking where its driver is (``sqlite3``, sync psycopg) and safe to call from
any thread. The blocking face (``eskit.sync``) calls it in the caller's thread; the async
face (``EventStore``) reaches it with at most one hand-off a call (``call_async``), and
appends through ``append_many_async``, which queues the write for the next group commit
without blocking a thread per caller (``group_commit``).

Arguments reach an engine checked (``rules``): the faces validate, the engine does IO.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import datetime as dt
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from eskit.store.chain import ChainRow, ChainStart
from eskit.store.model import (
    AppendResult,
    ExpectedVersion,
    RecordedEvent,
    Snapshot,
    StreamInfo,
    StreamMetadata,
)
from eskit.store.rules import PreparedAppend, PreparedSnapshot

if TYPE_CHECKING:
    from eskit.store.scavenge import Removal

T = TypeVar("T")
Clock = Callable[[], dt.datetime]


class Engine(abc.ABC):
    """Blocking, thread-safe primitives of one backend (see the module docstring)."""

    runs_on_loop: bool = False
    """True: calls never wait on IO (memory), so the async face makes them on its loop."""
    catches_up: bool = False
    """True: ``events_after`` can tell a stream that never hid an event (the command bus
    then keeps aggregates' states between commands, ``eskit.application.state_cache``)."""

    def __init__(self, *, clock: Clock, readonly: bool) -> None:
        self.clock = clock
        self.readonly = readonly
        self._commit_lock = threading.Lock()
        """``_committed``'s lock: ``committed`` takes it directly (a Condition's ``with`` is
        two calls of Python code on every commit)."""
        self._committed = threading.Condition(self._commit_lock)
        self._commits = 0
        self._waiting = 0  # threads in wait_for_commit: without any, nobody is notified
        self._listeners: list[tuple[asyncio.AbstractEventLoop | None, Callable[[], None]]] = []

    # -- lifecycle ------------------------------------------------------------------------

    @abc.abstractmethod
    def open(self) -> None:
        """Connect, create or migrate the schema (not when ``readonly``; then raise
        ``StoreNotFound`` if there is no store), start whatever runs in the background."""

    @abc.abstractmethod
    def close(self) -> None:
        """Commit what is queued, then release every connection and thread."""

    # -- the async face's way in ----------------------------------------------------------

    async def call_async(self, run: Callable[..., T], *args: Any) -> T:
        """Run a blocking primitive for the event loop: on it when the engine never waits
        on IO, otherwise in a worker thread (one hand-off)."""
        if self.runs_on_loop:
            return run(*args)
        return await asyncio.to_thread(run, *args)

    def append_many_async(self, appends: list[PreparedAppend]) -> Awaitable[list[AppendResult]]:
        """``append_many`` for the event loop. Engines with group commit queue it without
        blocking a thread (``GroupCommit.call``) and return the group's future itself."""
        return self.call_async(self.append_many, appends)

    async def write_async(self, write: Callable[..., T], *args: Any) -> T:
        """A write other than an append (delete, metadata, snapshot) for the event loop."""
        return await self.call_async(write, *args)

    # -- commit notifications (subscriptions) ---------------------------------------------

    def listen(
        self, listener: Callable[[], None], loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        """Call ``listener`` after every commit that wrote something: on ``loop`` if given
        (the async face's subscriptions), else in the committing thread."""
        with self._committed:  # replaced, never changed in place: committed reads it as is
            self._listeners = [*self._listeners, (loop, listener)]

    def unlisten(self, listener: Callable[[], None]) -> None:
        with self._committed:
            self._listeners = [(lp, fn) for lp, fn in self._listeners if fn is not listener]

    def commit_count(self) -> int:
        """How many commits this process has seen so far (pass it to ``wait_for_commit``)."""
        return self._commits

    def committed(self) -> None:
        """The engine calls this after every commit that wrote (or when another process
        did, or the engine closes), in any thread: wakes both faces' waiters."""
        self._commit_lock.acquire()  # not `with`: ~1,000 instructions less, every commit
        try:
            self._commits += 1
            if self._waiting:
                self._committed.notify_all()
            listeners = self._listeners
        finally:
            self._commit_lock.release()
        for loop, listener in listeners:
            if loop is None or _running_loop() is loop:
                listener()
            else:
                with contextlib.suppress(RuntimeError):  # its loop closed: nobody waits
                    loop.call_soon_threadsafe(listener)

    def wait_for_commit(self, seen: int, timeout: float) -> None:
        """Block until a commit after ``seen`` (``commit_count``), or ``timeout`` seconds."""
        with self._committed:
            self._waiting += 1
            try:
                self._committed.wait_for(lambda: self._commits != seen, timeout)
            finally:
                self._waiting -= 1

    # -- writes -----------------------------------------------------------------------------

    @abc.abstractmethod
    def append_many(self, appends: list[PreparedAppend]) -> list[AppendResult]:
        """Write every append or none (``append`` is the case of one), decided by the
        planner (``planner``); results in order, positions consecutive in that order."""

    @abc.abstractmethod
    def delete(
        self, stream: str, expected: ExpectedVersion, hard: bool, keeps_revision: bool = False
    ) -> None:
        """Soft-delete (or tombstone: ``hard``) ``stream`` if it is at ``expected``
        (``rules.check_version_matches``, ``keeps_revision`` its ``deleted_keeps_revision``)."""

    @abc.abstractmethod
    def set_metadata(self, stream: str, metadata: StreamMetadata) -> None: ...

    @abc.abstractmethod
    def save_snapshot(self, snapshot: PreparedSnapshot, recorded_at: dt.datetime) -> None:
        """Store or replace it unless the stream is tombstoned; keep the newest few."""

    # -- reads ------------------------------------------------------------------------------

    @abc.abstractmethod
    def get_metadata(self, stream: str) -> StreamMetadata: ...

    @abc.abstractmethod
    def load_snapshot(
        self, stream: str, snapshot_version: int, max_version: int
    ) -> Snapshot | None: ...

    def snapshot_and_page(
        self, stream: str, snapshot_version: int, max_version: int, count: int
    ) -> tuple[Snapshot | None, list[RecordedEvent]]:
        """The newest visible snapshot and the first page after it (at most ``count``
        events, none past ``max_version``); an engine that can read both in one visit to
        its database does so."""
        snapshot = self.load_snapshot(stream, snapshot_version, max_version)
        start = None if snapshot is None else snapshot.version + 1
        count = min(count, versions_up_to(max_version, start))
        return snapshot, self.read_stream_page(stream, start, False, count)

    def events_after(self, stream: str, version: int, count: int) -> list[RecordedEvent] | None:
        """The events of ``stream`` after ``version`` when no event of it was ever hidden
        (it never had read rules, was never deleted) and they are at most ``count``, else
        None; raises
        ``StreamDeleted`` if tombstoned. What a state folded from the stream's first
        ``version + 1`` events needs to be current (``catches_up``); by default None."""
        return None

    @abc.abstractmethod
    def stream_version(self, stream: str) -> int | None: ...

    @abc.abstractmethod
    def last_position(self) -> int: ...

    def written_position(self) -> int:
        """The newest position written: ``last_position`` unless reads go to a replica."""
        return self.last_position()

    @abc.abstractmethod
    def find_event(self, event_id: uuid.UUID) -> RecordedEvent | None: ...

    def find_removed(self, event_id: uuid.UUID) -> Removal | None:
        """The record of the event with this id if a scavenge removed it (None: it was
        not, or the store removes nothing)."""
        return None

    @abc.abstractmethod
    def list_streams(
        self, category: str | None, after: str | None, limit: int
    ) -> list[StreamInfo]: ...

    @abc.abstractmethod
    def read_stream_page(
        self, stream: str, from_version: int | None, backwards: bool, count: int
    ) -> list[RecordedEvent]: ...

    @abc.abstractmethod
    def read_all_page(
        self, after: int, count: int, types: tuple[str, ...] | None, category: str | None
    ) -> tuple[list[RecordedEvent], int]: ...

    @abc.abstractmethod
    def read_all_page_backwards(
        self,
        before: int,
        after: int,
        count: int,
        types: tuple[str, ...] | None,
        category: str | None,
    ) -> list[RecordedEvent]:
        """Up to ``count`` matching events with ``after < position < before``, newest
        first (a full page: the next one is before its last event's position)."""

    def chain_page(self, after: int, limit: int) -> list[ChainRow]:
        raise NotImplementedError(f"{type(self).__name__} keeps no hash chain")

    def chain_start(self) -> ChainStart | None:
        raise NotImplementedError(f"{type(self).__name__} keeps no hash chain")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def versions_up_to(max_version: int, start: int | None) -> int:
    """How many versions lie from ``start`` (None: 0) to ``max_version``: a read of at most
    that many events from ``start`` ends at or before it."""
    return max(0, max_version - (start or 0) + 1)
