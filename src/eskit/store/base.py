"""The event store contract, with the logic every backend shares written once.

A backend subclasses ``EventStore`` and implements a handful of primitives (``_append_many``,
``_read_stream_page``, ``_read_all_page``, ...). Validation, paging, subscriptions and the
``async with`` lifecycle live here, so the backends cannot disagree on them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractContextManager, suppress
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

from eskit.errors import StoreClosed, StoreError, StoreUnavailable
from eskit.store import arguments, rules
from eskit.store.arguments import LogCursor, StreamCursor
from eskit.store.engine import Clock
from eskit.store.engine_primitives import EnginePrimitives
from eskit.store.model import (
    ANY,
    Append,
    AppendResult,
    ExpectedVersion,
    NewEvent,
    Page,
    RecordedEvent,
    Snapshot,
    StreamInfo,
    StreamMetadata,
)
from eskit.store.read_ahead import drop, read_ahead
from eskit.store.rules import PreparedAppend

if TYPE_CHECKING:
    from eskit.projections.database import Database
    from eskit.store.backup import BackupEngine
    from eskit.store.migrations import Migrated
    from eskit.store.scavenge import Removal, Scavenger


def utc_now() -> dt.datetime:
    """The default clock: the current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


class AppendObserver(Protocol):
    """Watches appends (metrics, traces): entered before an append, left when it commits
    or fails (see ``eskit.observability``)."""

    def append(self, appends: Sequence[PreparedAppend]) -> AbstractContextManager[None]: ...


class EventStore(EnginePrimitives):
    """An append-only log of events grouped in streams, with optimistic concurrency.

    Guarantees, on every backend:

    - Versions are per stream, zero-based and contiguous; positions are global, start at 1,
      strictly increase in the order readers see events and are never reused. The events
      of one append get consecutive positions.
    - An append is atomic: all its events are written or none. ``expected_version`` is
      checked in the same transaction; a mismatch raises ``WrongExpectedVersion``.
      ``append_many`` extends this to several streams: all of its appends or none.
    - Appending events whose ids were already written to the stream, as the same batch at
      the same place, succeeds again without writing anything and returns the original
      result. A partial overlap raises ``IdempotencyConflict``.
    - Arguments are checked before anything is read or written, by one rule: a value of
      the wrong type raises ``TypeError`` (a str or bool for a version, a bare string for
      a list of types), a value of the right type that breaks a rule raises ``ValueError``
      (a negative limit, an invalid name). Event data and metadata that are not JSON
      objects, nested deeper than ``rules.MAX_NESTING`` or oversized raise ``ValueError``;
      payloads given as ``RawData`` are kept as bytes, exactly (``RecordedEvent.raw``).
    - A subscription delivers every event once, in position order, catching up first and
      then following live; it resumes from any checkpoint (a position).
    - Snapshots are kept beside the streams, the newest ``rules.SNAPSHOTS_KEPT`` per stream
      and snapshot_version; they never change what a read of the stream returns.
    """

    page_size: int = 1000
    """Events fetched per round trip by reads and subscriptions (memory stays bounded)."""
    poll_interval: float = 0.1
    """Seconds between checks for events written by other processes."""
    observer: AppendObserver | None = None
    """Told of every append, when set (``eskit.observability.instrument``)."""
    grants_roles: bool = False
    """Whether ``migrate`` can grant an application role (``app_role``)."""
    read_models_in_sqlite: bool = True
    """Whether the database ``read_model_database`` offers is a SQLite one (the store's file,
    or in memory); False: the store's own server database, which speaks another SQL."""

    def __init__(
        self,
        *,
        max_event_size: int = rules.DEFAULT_MAX_EVENT_SIZE,
        clock: Clock = utc_now,
        readonly: bool = False,
    ):
        self.max_event_size = max_event_size
        self.clock = clock
        self.readonly = bool(readonly)
        """To inspect: the store must exist (else ``StoreNotFound``), nothing is created,
        every write raises ``StoreError`` (``open_store``)."""
        self._open = False
        self._waiters: set[asyncio.Future[None]] = set()

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Open connections and create the schema if needed (a ``readonly`` store: raise
        ``StoreNotFound`` if there is none, and create nothing). Opening twice is harmless."""
        if not self._open:
            await self._open_backend()
            self._open = True

    async def close(self) -> None:
        """Finish pending appends, end subscriptions and release every resource."""
        if self._open:
            self._open = False
            self._notify_waiters()
            await self._close_backend()

    @property
    def is_open(self) -> bool:
        return self._open

    def _check_open(self) -> None:
        if not self._open:
            raise StoreClosed("the store is not open: use `async with eskit.open_store(url)`")

    def _check_writable(self) -> None:
        """Every write checks this first: a store opened to inspect never changes."""
        if self.readonly:
            raise StoreError("the store is open read-only (readonly=True): nothing was written")

    # -- writing --------------------------------------------------------------------------

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: ExpectedVersion = ANY,
        *,
        deleted_keeps_revision: bool = False,
    ) -> AppendResult:
        """Append ``events`` to ``stream`` atomically if it is at ``expected_version``.

        A soft-deleted stream counts as empty; with ``deleted_keeps_revision`` it also counts
        as still at its last version before the delete (KurrentDB's view: the gRPC layer
        asks for it), so either expectation matches. Decided under the write lock.

        Raises ``WrongExpectedVersion`` (nothing written), ``StreamDeleted`` for a
        tombstoned stream, ``IdempotencyConflict`` for partly repeated ids, ``TypeError`` for
        an argument of the wrong type and ``ValueError`` for invalid input (data or metadata
        that is not a JSON object or ``RawData``, nested too deep or too large; see
        ``rules.prepare``).
        """
        prepared = rules.prepare_append(
            stream, events, expected_version, self.max_event_size, deleted_keeps_revision
        )
        if not self._open or self.readonly:  # checked inline: this runs once per append
            self._check_open()
            self._check_writable()
        if self.observer is None:  # the engine's coroutine awaited here: a frame less
            (result,) = await self._append_many([prepared])
        else:
            (result,) = await self._append_observed([prepared])
        return result

    async def append_many(self, appends: Sequence[Append]) -> list[AppendResult]:
        """Append to several streams atomically: every append is written or none is.

        Each append is checked as ``append`` checks it (tombstone, idempotent retry, expected
        version), all before anything is written; the first that fails raises its error and
        nothing of any of them is written. An append that is a retry writes nothing and
        gets its original result. Results come in the order given, and the events written
        get consecutive positions in that order.

        Raises ``TypeError`` or ``ValueError`` as ``append`` does before anything is written,
        and ``ValueError`` for no appends and for a stream or event id that appears twice in
        the call.
        """
        prepared = rules.prepare_many(appends, self.max_event_size)
        self._check_open()
        self._check_writable()
        return await self._append_observed(prepared)

    async def _append_observed(self, prepared: list[PreparedAppend]) -> list[AppendResult]:
        observer = self.observer
        if observer is None:
            return await self._append_many(prepared)
        with observer.append(prepared):
            return await self._append_many(prepared)

    async def _append_untouched(
        self, stream: str, events: Sequence[NewEvent], expected_version: ExpectedVersion
    ) -> AppendResult:
        """``append``, refused (``planner.StreamTouched``, a ``WrongExpectedVersion``) unless
        the stream never hid an event: the command bus's append from a state it kept
        (``effects.AppendUntouched``). Internal: ``append`` has no keyword for it."""
        prepared = rules.prepare_append(
            stream, events, expected_version, self.max_event_size, if_untouched=True
        )
        if not self._open or self.readonly:  # as in ``append``: the calls only to raise
            self._check_open()
            self._check_writable()
        (result,) = await self._append_observed([prepared])
        return result

    async def delete_stream(
        self,
        stream: str,
        expected_version: ExpectedVersion = ANY,
        *,
        deleted_keeps_revision: bool = False,
    ) -> None:
        """Soft-delete: the stream reads as empty and absent; a later append continues its
        version numbers and only the new events are visible. ``read_all`` still shows the old
        events (nothing is removed from the log). ``deleted_keeps_revision``: as ``append``."""
        rules.check_name(stream)
        expected = rules.check_expected_version(expected_version)
        self._check_open()
        self._check_writable()
        await self._delete(stream, expected, False, deleted_keeps_revision)

    async def tombstone_stream(
        self,
        stream: str,
        expected_version: ExpectedVersion = ANY,
        *,
        deleted_keeps_revision: bool = False,
    ) -> None:
        """Hard-delete: from now on every read of and append to the stream raises
        ``StreamDeleted``, for ever. ``read_all`` still shows the old events.
        ``deleted_keeps_revision``: as ``append``."""
        rules.check_name(stream)
        expected = rules.check_expected_version(expected_version)
        self._check_open()
        self._check_writable()
        await self._delete(stream, expected, True, deleted_keeps_revision)

    async def set_stream_metadata(self, stream: str, metadata: StreamMetadata) -> None:
        """Replace the stream's read rules (truncate_before, max_count, max_age) and custom
        keys (``custom``, kept exactly as set)."""
        rules.check_name(stream)
        rules.check_metadata(metadata)
        self._check_open()
        self._check_writable()
        await self._set_metadata(stream, metadata)

    async def get_stream_metadata(self, stream: str) -> StreamMetadata:
        """The stream's read rules; all unset for a stream that never had any."""
        rules.check_name(stream)
        self._check_open()
        return await self._get_metadata(stream)

    # -- snapshots ------------------------------------------------------------------------

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store ``snapshot``, replacing one of the same stream, snapshot_version and version;
        ``recorded_at`` is set from the store's clock (a value given is ignored).

        Retention: only the newest ``rules.SNAPSHOTS_KEPT`` (5) snapshots of each stream and
        snapshot_version are kept; saving deletes older ones (by version).

        Raises ``StreamDeleted`` for a tombstoned stream, ``TypeError`` for a snapshot, name
        or version of the wrong type, and ``ValueError`` for an invalid name or version, or
        a state that is not a JSON object nested at most ``rules.MAX_NESTING`` deep within
        ``max_event_size``.
        """
        prepared = rules.prepare_snapshot(snapshot, self.max_event_size)
        self._check_open()
        self._check_writable()
        await self._save_snapshot(prepared, self.clock())

    async def load_snapshot(
        self, stream: str, snapshot_version: int, max_version: int | None = None
    ) -> Snapshot | None:
        """The newest snapshot of ``stream`` with exactly this ``snapshot_version`` and a
        version up to ``max_version``; None if there is none.

        Snapshots taken before a soft delete (a version below the stream's
        ``truncate_before``) are hidden, like the events they fold in. Raises
        ``StreamDeleted`` for a tombstoned stream.
        """
        bound = arguments.snapshot(stream, snapshot_version, max_version)
        self._check_open()
        return await self._load_snapshot(stream, snapshot_version, bound)

    # -- reading --------------------------------------------------------------------------

    async def stream_version(self, stream: str) -> int | None:
        """Version of the stream's last event; None if it has none or was soft-deleted.

        Raises ``StreamDeleted`` for a tombstoned stream.
        """
        rules.check_name(stream)
        self._check_open()
        return await self._stream_version(stream)

    async def find_event(self, event_id: uuid.UUID) -> RecordedEvent | None:
        """The event with this id, wherever it is, or None.

        Events hidden from their stream are found until a scavenge removes them (then see
        ``find_removed``). Command handling recognises a command it already ran by it.
        """
        arguments.event_id(event_id)
        self._check_open()
        return await self._find_event(event_id)

    async def find_removed(self, event_id: uuid.UUID) -> Removal | None:
        """The record of the event with this id if a scavenge removed it, else None."""
        arguments.event_id(event_id)
        self._check_open()
        return await self.engine.call_async(self.engine.find_removed, event_id)

    async def last_position(self) -> int:
        """Position of the newest event a reader can see; 0 when the store is empty."""
        self._check_open()
        return await self._last_position()

    async def written_position(self) -> int:
        """The newest position written: ``last_position`` may lag it on a replica."""
        return await self.engine.call_async(self.engine.written_position)

    async def list_streams(
        self, category: str | None = None, after: str | None = None, limit: int = 100
    ) -> list[StreamInfo]:
        """Up to ``limit`` streams that have events, in name order, with their last event;
        only those of ``category`` if given. Page on with ``after`` = the last name seen.

        Soft-deleted and tombstoned streams are included and flagged by ``status``. Streams
        that never had an event (only metadata, or tombstoned while empty) are not listed.
        Costs a few index lookups per stream listed, whatever the streams' lengths.
        """
        possible = arguments.list_streams(category, after, limit)
        self._check_open()
        return await self._list_streams(category, after, limit) if possible else []

    async def read_stream(
        self,
        stream: str,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """Yield the stream's visible events from ``from_version`` (default: the first going
        forwards, the last going backwards), at most ``limit`` of them.

        A stream that does not exist reads as empty; a tombstoned one raises
        ``StreamDeleted``. Stream metadata (truncate_before, max_count, max_age) hides events.
        """
        arguments.read_stream(stream, from_version, backwards, limit)
        self._check_open()
        # at least one page, so that a tombstoned stream raises even for limit=0
        async for event in self._stream_events(stream, backwards, (from_version, limit)):
            yield event

    async def read_from_snapshot(
        self, stream: str, snapshot_version: int, max_version: int | None = None
    ) -> tuple[Snapshot | None, AsyncIterator[RecordedEvent]]:
        """``load_snapshot``, and the stream's events after the snapshot (all of them if
        there is none) up to ``max_version``, as ``read_stream`` yields them, fetched
        together: loading an aggregate costs one round trip to the database, not two."""
        bound = arguments.snapshot(stream, snapshot_version, max_version)
        self._check_open()
        snapshot, page = await self._snapshot_and_page(
            stream, snapshot_version, bound, self.page_size
        )
        taken_at = None if snapshot is None else snapshot.version
        cursor = arguments.events_after_snapshot(taken_at, max_version)
        events = self._stream_events(stream, False, cursor, page)
        return snapshot, events

    async def _stream_events(
        self,
        stream: str,
        backwards: bool,
        cursor: StreamCursor,
        first: list[RecordedEvent] | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """The events of ``stream`` from ``cursor`` on, page by page (``first``: the first
        page, already read)."""

        async def read(cursor: StreamCursor) -> tuple[list[RecordedEvent], StreamCursor | None]:
            start, remaining = cursor
            count = arguments.page_count(remaining, self.page_size)
            if given:
                page = given.pop()
            else:
                self._check_open()  # every backend stops a read the same way when closed
                page = await self._read_stream_page(stream, start, backwards, count)
            return page, arguments.next_stream_cursor(page, cursor, count, backwards)

        given = [] if first is None else [first]
        async for page in read_ahead(read, cursor):
            for event in page:
                yield event

    async def read_all(
        self,
        after: int = 0,
        limit: int | None = None,
        types: Iterable[str] | None = None,
        category: str | None = None,
        *,
        backwards: bool = False,
        before: int | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """Yield events with position > ``after`` in position order, optionally only those
        of the given ``types`` or stream ``category``, at most ``limit`` of them.

        ``backwards=True`` yields them newest first, from the end of the log or, with
        ``before``, from the event just below that position (``before`` is exclusive, as
        ``after`` is; pass the last position seen to read the next page). ``after`` still
        bounds the read from below. ``before`` without ``backwards`` is a ``ValueError``.
        """
        rules.check_optional_count("limit", limit, minimum=0)
        type_filter = self._check_log_filter(after, types, category)
        if arguments.read_backwards(backwards, before):
            async for event in self._log_backwards(after, before, limit, type_filter, category):
                yield event
            return
        if limit == 0:
            return

        async def read(cursor: LogCursor) -> tuple[list[RecordedEvent], LogCursor | None]:
            checkpoint, remaining = cursor
            count = arguments.page_count(remaining, self.page_size)
            self._check_open()
            page, checkpoint = await self._read_all_page(checkpoint, count, type_filter, category)
            return page, arguments.next_log_cursor(page, checkpoint, remaining, count)

        async for page in read_ahead(read, (after, limit)):
            for event in page:
                yield event

    async def _log_backwards(
        self,
        after: int,
        before: int | None,
        limit: int | None,
        types: tuple[str, ...] | None,
        category: str | None,
    ) -> AsyncIterator[RecordedEvent]:
        async def read(cursor: LogCursor) -> tuple[list[RecordedEvent], LogCursor | None]:
            below, remaining = cursor
            count = arguments.page_count(remaining, self.page_size)
            self._check_open()
            page = await self._read_all_page_backwards(below, after, count, types, category)
            return page, arguments.next_backwards_cursor(page, remaining, count)

        first = arguments.backwards_cursor(after, before, limit)
        if first is not None:
            async for page in read_ahead(read, first):
                for event in page:
                    yield event

    async def read_page(
        self,
        after: int = 0,
        limit: int | None = None,
        types: Iterable[str] | None = None,
        category: str | None = None,
    ) -> Page:
        """One page of ``read_all`` (at most ``limit``, default ``page_size`` events) and the
        position to continue from: what projections and relays checkpoint."""
        rules.check_optional_count("limit", limit, minimum=1)
        type_filter = self._check_log_filter(after, types, category)
        events, next_after = await self._read_all_page(
            after, self.page_size if limit is None else limit, type_filter, category
        )
        return Page(events, next_after)

    def _check_log_filter(
        self, after: int, types: Iterable[str] | None, category: str | None
    ) -> tuple[str, ...] | None:
        """Check the arguments that select events of the log; the type filter to use."""
        type_filter = arguments.log_filter(after, types, category)
        self._check_open()
        return type_filter

    async def wait_for_events(
        self,
        after: int,
        timeout: float | None = None,  # noqa: ASYNC109 - the blocking twin needs it too
    ) -> None:
        """Return once an event past position ``after`` exists, the store closed, or
        ``timeout`` seconds passed (if given).

        Appends of this process wake the wait at once, other processes' within
        ``poll_interval``.
        """
        rules.check_count("after", after)
        with suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._open and await self._last_position() <= after:
                    await self._wait_for_events_after(after)

    async def subscribe(
        self,
        after: int = 0,
        types: Iterable[str] | None = None,
        category: str | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """Yield every event with position > ``after`` (optionally filtered), catching up
        first and then following live, until the store closes or the caller stops.

        Exactly once and in position order; new events from this process arrive at once,
        from other processes within ``poll_interval``. Resume by passing the position of the
        last event handled as ``after``.
        """
        type_filter = self._check_log_filter(after, types, category)
        checkpoint = after
        pause = self.poll_interval
        ahead: asyncio.Future[tuple[list[RecordedEvent], int]] | None = None
        try:
            while self._open:
                try:
                    page, checkpoint = await (
                        ahead
                        or self._read_all_page(checkpoint, self.page_size, type_filter, category)
                    )
                except StoreUnavailable:  # the database comes back: go on from the checkpoint
                    ahead = None
                    await asyncio.sleep(pause)
                    pause = min(5.0, pause * 2)
                    continue
                pause = self.poll_interval
                caught_up = len(page) < self.page_size
                ahead = None  # catching up: read the next page while the caller works
                if not caught_up:
                    ahead = asyncio.ensure_future(
                        self._read_all_page(checkpoint, self.page_size, type_filter, category)
                    )
                for event in page:
                    yield event
                if caught_up:
                    await self._wait_for_events_after(checkpoint)
        finally:  # the caller stopped, or the store closed
            drop(ahead)

    async def _wait_for_events_after(self, position: int) -> None:
        """Return once an event past ``position`` may exist, the store closed, or a poll
        interval passed (events committed by other processes are only found by polling)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)  # registered before looking, so no wake-up is missed
        try:
            if self._open and await self._last_position() <= position:
                # not asyncio.wait_for: on Python 3.11 it swallows a cancellation that comes
                # as the waiter is woken, and a caller's timeout then never ends the wait
                async with asyncio.timeout(self.poll_interval):
                    await waiter
        except TimeoutError:
            pass
        except StoreUnavailable:  # the caller's next read finds out whether it is back
            await asyncio.sleep(self.poll_interval)
        finally:
            self._waiters.discard(waiter)

    def _notify_waiters(self) -> None:
        """Wake every subscription waiting for new events (call on the store's loop)."""
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    # -- capabilities: what a backend offers beyond the contract (no caller checks its type) --

    def read_model_database(self) -> Database | None:
        """The database projections of this store keep their read models and checkpoints in
        when they are given none (``database_for``): the store's own file or database, where
        a batch reads the log in the transaction that applies it. None: the store offers
        none (give the runner one)."""
        return None

    def backup_engine(self) -> BackupEngine | None:
        """How it copies and restores itself whole (``eskit.store.backup``); None: never."""
        return None

    async def migrate(self, app_role: str | None = None, login: bool = False) -> Migrated | None:
        """Bring the store's schema to this eskit's version without opening the store: each
        pending migration once, in order, in one transaction; what it applied, or None if the
        store keeps nothing to migrate. ``app_role``: also create (``login``: with LOGIN) or
        take that role and grant it only what eskit needs at run time; a store that does not
        ``grants_roles`` raises ``ValueError`` for it before changing anything."""
        self._check_no_role(app_role)
        return None

    def scavenger(self) -> Scavenger | None:
        """Blocking scavenging primitives (``eskit.store.scavenge``), None if none."""
        return None

    def _check_no_role(self, app_role: str | None) -> None:
        if app_role is not None and not self.grants_roles:
            raise ValueError(f"app_role is for PostgreSQL stores; {type(self).__name__} has none")

    # -- what a backend implements: by default, calls into its engine (EnginePrimitives) ---

    async def _open_backend(self) -> None:
        await self.engine.call_async(self.engine.open)
        self.engine.listen(self._notify_waiters, asyncio.get_running_loop())

    async def _close_backend(self) -> None:
        self.engine.unlisten(self._notify_waiters)
        await self.engine.call_async(self.engine.close)
