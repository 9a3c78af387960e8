"""The store's blocking face (``eskit.sync.SyncStore``): the engine, called in your thread.

Every method checks its arguments as the async face does (``arguments``, ``rules``) and calls
the backend's engine (``engine.Engine``) directly: no event loop, no thread hand-off. An
append that finds nobody committing commits in the caller's thread; appends from other
threads meanwhile join the next group commit. Reads run in the caller's thread on a
connection of the engine's reader pool. Safe to share between the threads of a WSGI server.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Generator, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

from eskit.errors import StoreClosed, StoreUnavailable
from eskit.store import arguments, rules
from eskit.store.arguments import LogCursor, StreamCursor
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
from eskit.store.rules import PreparedAppend

if TYPE_CHECKING:
    from eskit.projections.database import Database
    from eskit.store.base import EventStore
    from eskit.store.engine import Clock, Engine
    from eskit.store.migrations import Migrated
    from eskit.store.scavenge import Removal, Scavenger


class SyncStore:
    """The ``EventStore`` API, blocking, over the same backend (``eskit.sync.open_store``).

    Same method names, arguments, results and errors as the async store. Reads and
    subscriptions are generators that fetch ``page_size`` events at a time (memory stays
    bounded); their argument errors surface at the first ``next()``. Closing the store
    ends a subscription that is waiting for events; any other use of a closed store raises
    ``StoreClosed``.
    """

    def __init__(self, store: EventStore) -> None:
        self._store = store
        engine: Engine | None = getattr(store, "engine", None)
        if engine is None:
            raise TypeError(
                f"{type(store).__name__} has no engine (eskit.store.engine.Engine): the"
                " blocking face calls a backend's engine directly"
            )
        self.engine = engine
        self._open = False
        self._lock = threading.Lock()  # serialises open() and close()

    @property
    def page_size(self) -> int:
        """Events fetched per visit to the database by reads and subscriptions (the
        store's ``page_size``)."""
        return self._store.page_size

    @page_size.setter
    def page_size(self, value: int) -> None:
        self._store.page_size = value

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Connect and create the schema if needed (see ``EventStore.open``). Opening
        twice is harmless."""
        with self._lock:
            if not self._open:
                self.engine.open()
                self._open = True

    def close(self) -> None:
        """Commit pending appends, end subscriptions and release every connection.
        Closing twice is harmless."""
        with self._lock:
            if self._open:
                self._open = False
                self.engine.close()

    @property
    def is_open(self) -> bool:
        """Whether ``open()`` ran and ``close()`` did not since."""
        return self._open

    def migrate(self, app_role: str | None = None, login: bool = False) -> Migrated | None:
        """Blocking ``EventStore.migrate``; the store need not be open."""
        return asyncio.run(self._store.migrate(app_role, login))

    @property
    def readonly(self) -> bool:
        """Whether the store was opened read-only (``readonly=True``)."""
        return self._store.readonly

    @property
    def clock(self) -> Clock:
        """The store's clock (``clock=``); scavenges and archives read it."""
        return self._store.clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self._store.clock = clock

    def scavenger(self) -> Scavenger | None:
        """The backend's scavenging primitives (``EventStore.scavenger``): what
        ``eskit.sync.scavenge``, ``archive`` and ``restore`` run."""
        self._check_open()
        return self._store.scavenger()

    def _check_open(self) -> None:
        if not self._open:
            raise StoreClosed("the store is not open: use `with eskit.sync.open_store(url)`")

    def _check_writable(self) -> None:
        self._check_open()
        self._store._check_writable()

    # -- writing --------------------------------------------------------------------------

    def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: ExpectedVersion = ANY,
        *,
        deleted_keeps_revision: bool = False,
    ) -> AppendResult:
        """Blocking ``EventStore.append``."""
        prepared = rules.prepare_append(
            stream, events, expected_version, self._store.max_event_size, deleted_keeps_revision
        )
        if not self._open or self._store.readonly:  # inline: the calls only to raise
            self._check_writable()
        if self._store.observer is None:  # the engine called here: a frame less
            (result,) = self.engine.append_many([prepared])
        else:
            (result,) = self._append_observed([prepared])
        return result

    def append_many(self, appends: Sequence[Append]) -> list[AppendResult]:
        """Blocking ``EventStore.append_many``."""
        prepared = rules.prepare_many(appends, self._store.max_event_size)
        self._check_writable()
        return self._append_observed(prepared)

    def _append_observed(self, prepared: list[PreparedAppend]) -> list[AppendResult]:
        observer = self._store.observer
        if observer is None:
            return self.engine.append_many(prepared)
        with observer.append(prepared):
            return self.engine.append_many(prepared)

    def _append_untouched(
        self, stream: str, events: Sequence[NewEvent], expected_version: ExpectedVersion
    ) -> AppendResult:
        """Blocking ``EventStore._append_untouched`` (the command bus's append from a kept
        state)."""
        prepared = rules.prepare_append(
            stream, events, expected_version, self._store.max_event_size, if_untouched=True
        )
        if not self._open or self._store.readonly:  # as in ``append``
            self._check_writable()
        (result,) = self._append_observed([prepared])
        return result

    def delete_stream(
        self,
        stream: str,
        expected_version: ExpectedVersion = ANY,
        *,
        deleted_keeps_revision: bool = False,
    ) -> None:
        """Blocking ``EventStore.delete_stream``."""
        rules.check_name(stream)
        expected = rules.check_expected_version(expected_version)
        self._check_writable()
        self.engine.delete(stream, expected, False, deleted_keeps_revision)

    def tombstone_stream(
        self,
        stream: str,
        expected_version: ExpectedVersion = ANY,
        *,
        deleted_keeps_revision: bool = False,
    ) -> None:
        """Blocking ``EventStore.tombstone_stream``."""
        rules.check_name(stream)
        expected = rules.check_expected_version(expected_version)
        self._check_writable()
        self.engine.delete(stream, expected, True, deleted_keeps_revision)

    def set_stream_metadata(self, stream: str, metadata: StreamMetadata) -> None:
        """Blocking ``EventStore.set_stream_metadata``."""
        rules.check_name(stream)
        rules.check_metadata(metadata)
        self._check_writable()
        self.engine.set_metadata(stream, metadata)

    def get_stream_metadata(self, stream: str) -> StreamMetadata:
        """Blocking ``EventStore.get_stream_metadata``."""
        rules.check_name(stream)
        self._check_open()
        return self.engine.get_metadata(stream)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Blocking ``EventStore.save_snapshot``."""
        prepared = rules.prepare_snapshot(snapshot, self._store.max_event_size)
        self._check_writable()
        self.engine.save_snapshot(prepared, self._store.clock())

    # -- reading --------------------------------------------------------------------------

    def load_snapshot(
        self, stream: str, snapshot_version: int, max_version: int | None = None
    ) -> Snapshot | None:
        """Blocking ``EventStore.load_snapshot``."""
        bound = arguments.snapshot(stream, snapshot_version, max_version)
        self._check_open()
        return self.engine.load_snapshot(stream, snapshot_version, bound)

    def stream_version(self, stream: str) -> int | None:
        """Blocking ``EventStore.stream_version``."""
        rules.check_name(stream)
        self._check_open()
        return self.engine.stream_version(stream)

    def find_event(self, event_id: uuid.UUID) -> RecordedEvent | None:
        """Blocking ``EventStore.find_event``."""
        arguments.event_id(event_id)
        self._check_open()
        return self.engine.find_event(event_id)

    def find_removed(self, event_id: uuid.UUID) -> Removal | None:
        """Blocking ``EventStore.find_removed``."""
        arguments.event_id(event_id)
        self._check_open()
        return self.engine.find_removed(event_id)

    def last_position(self) -> int:
        """Blocking ``EventStore.last_position``."""
        self._check_open()
        return self.engine.last_position()

    def written_position(self) -> int:
        """Blocking ``EventStore.written_position``."""
        self._check_open()
        return self.engine.written_position()

    def list_streams(
        self, category: str | None = None, after: str | None = None, limit: int = 100
    ) -> list[StreamInfo]:
        """Blocking ``EventStore.list_streams``."""
        possible = arguments.list_streams(category, after, limit)
        self._check_open()
        return self.engine.list_streams(category, after, limit) if possible else []

    def read_page(
        self,
        after: int = 0,
        limit: int | None = None,
        types: Iterable[str] | None = None,
        category: str | None = None,
    ) -> Page:
        """Blocking ``EventStore.read_page``."""
        rules.check_optional_count("limit", limit, minimum=1)
        type_filter = arguments.log_filter(after, types, category)
        self._check_open()
        count = self.page_size if limit is None else limit
        events, next_after = self.engine.read_all_page(after, count, type_filter, category)
        return Page(events, next_after)

    def read_stream(
        self,
        stream: str,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> Generator[RecordedEvent, None, None]:
        """Blocking ``EventStore.read_stream``; errors surface at the first ``next()``."""
        arguments.read_stream(stream, from_version, backwards, limit)
        self._check_open()
        yield from self._stream_events(stream, backwards, (from_version, limit))

    def read_from_snapshot(
        self, stream: str, snapshot_version: int, max_version: int | None = None
    ) -> tuple[Snapshot | None, Generator[RecordedEvent, None, None]]:
        """Blocking ``EventStore.read_from_snapshot``: the snapshot, and the events after it,
        read together (loading an aggregate is one visit to the database)."""
        bound = arguments.snapshot(stream, snapshot_version, max_version)
        self._check_open()
        snapshot, page = self.engine.snapshot_and_page(
            stream, snapshot_version, bound, self.page_size
        )
        taken_at = None if snapshot is None else snapshot.version
        cursor = arguments.events_after_snapshot(taken_at, max_version)
        return snapshot, self._stream_events(stream, False, cursor, page)

    def _stream_events(
        self,
        stream: str,
        backwards: bool,
        cursor: StreamCursor | None,
        first: list[RecordedEvent] | None = None,
    ) -> Generator[RecordedEvent, None, None]:
        """The events of ``stream`` from ``cursor`` on, page by page (``first``: the first
        page, already read)."""
        while cursor is not None:
            start, remaining = cursor
            count = arguments.page_count(remaining, self.page_size)
            if first is not None:
                page, first = first, None
            else:
                self._check_open()
                page = self.engine.read_stream_page(stream, start, backwards, count)
            cursor = arguments.next_stream_cursor(page, cursor, count, backwards)
            yield from page

    def read_all(
        self,
        after: int = 0,
        limit: int | None = None,
        types: Iterable[str] | None = None,
        category: str | None = None,
        *,
        backwards: bool = False,
        before: int | None = None,
    ) -> Generator[RecordedEvent, None, None]:
        """Blocking ``EventStore.read_all``; errors surface at the first ``next()``."""
        rules.check_optional_count("limit", limit, minimum=0)
        type_filter = arguments.log_filter(after, types, category)
        self._check_open()
        if arguments.read_backwards(backwards, before):
            below = arguments.backwards_cursor(after, before, limit)
            while below is not None:
                position, remaining = below
                count = arguments.page_count(remaining, self.page_size)
                self._check_open()
                page = self.engine.read_all_page_backwards(
                    position, after, count, type_filter, category
                )
                below = arguments.next_backwards_cursor(page, remaining, count)
                yield from page
            return
        cursor: LogCursor | None = None if limit == 0 else (after, limit)
        while cursor is not None:
            searched, remaining = cursor
            count = arguments.page_count(remaining, self.page_size)
            self._check_open()
            page, searched = self.engine.read_all_page(searched, count, type_filter, category)
            cursor = arguments.next_log_cursor(page, searched, remaining, count)
            yield from page

    def wait_for_events(self, after: int, timeout: float | None = None) -> None:
        """Blocking ``EventStore.wait_for_events``."""
        rules.check_count("after", after)
        poll = self._store.poll_interval
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._open:
            seen = self.engine.commit_count()
            if self.engine.last_position() > after:
                return
            left = poll if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return
            self.engine.wait_for_commit(seen, min(poll, left))

    def subscribe(
        self,
        after: int = 0,
        types: Iterable[str] | None = None,
        category: str | None = None,
    ) -> Generator[RecordedEvent, None, None]:
        """Blocking ``EventStore.subscribe``: catches up, then yields live events as they
        are committed, until the store closes or the caller leaves the loop."""
        type_filter = arguments.log_filter(after, types, category)
        self._check_open()
        checkpoint, pause = after, self._store.poll_interval
        while self._open:
            seen = self.engine.commit_count()  # before reading: no commit slips between
            try:
                page, checkpoint = self.engine.read_all_page(
                    checkpoint, self.page_size, type_filter, category
                )
            except StoreUnavailable:  # the database comes back: go on from the checkpoint
                time.sleep(pause)
                pause = min(5.0, pause * 2)
                continue
            pause = self._store.poll_interval
            yield from page
            if len(page) < self.page_size and self._open:
                self.engine.wait_for_commit(seen, self._store.poll_interval)

    def read_model_database(self) -> Database | None:
        """The database the store offers projections (``EventStore.read_model_database``),
        for the blocking ``ProjectionRunner`` (its ``blocking()`` face)."""
        return self._store.read_model_database()


class BorrowedStore(SyncStore):
    """The blocking face of an async store, open while it is: what a command bus on the
    async face runs a command's reads and append with, in a worker thread (one hand-off for
    the whole command, ``eskit.application.effects.run_threaded``). It never opens or
    closes the engine itself."""

    def open(self) -> None:
        raise TypeError("a borrowed blocking face opens with its async store")

    def close(self) -> None:
        raise TypeError("a borrowed blocking face closes with its async store")

    @property
    def is_open(self) -> bool:
        return self._store.is_open

    def _check_open(self) -> None:
        if not self._store.is_open:
            raise StoreClosed("the store is not open: use `async with eskit.open_store(url)`")
