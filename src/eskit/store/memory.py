"""The in-memory reference backend: the executable specification of the contract.

Everything lives in Python lists and dicts, and every operation runs under one lock
without waiting on anything, so each append (and each append to several streams) is
trivially atomic and the engine is safe from any thread; the async face calls it on its
loop (``runs_on_loop``). The SQLite and PostgreSQL backends must behave exactly like this
one (the conformance suite and a model-based test check it).
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import functools
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

import msgspec

from eskit.errors import StoreNotFound, StreamDeleted
from eskit.store import rules
from eskit.store.base import EventStore, utc_now
from eskit.store.chain import ChainRow, ChainStart, audit_key, chain_start_hash
from eskit.store.engine import Clock, Engine
from eskit.store.model import (
    AppendResult,
    ExpectedVersion,
    RecordedEvent,
    Snapshot,
    StreamInfo,
    StreamMetadata,
    StreamStatus,
    raw_data,
)
from eskit.store.planner import (
    LIVE,
    SOFT_DELETED,
    TOMBSTONED,
    UNTOUCHED,
    Head,
    Planner,
    lookups,
)
from eskit.store.rules import ExistingEvent, PreparedAppend, PreparedSnapshot
from eskit.store.sqlite_writer import micros

if TYPE_CHECKING:
    from eskit.projections.database import SQLiteDatabase


P = ParamSpec("P")
T = TypeVar("T")


def _locked(
    method: Callable[Concatenate[MemoryEngine, P], T],
) -> Callable[Concatenate[MemoryEngine, P], T]:
    """Run an engine method under the engine's lock: the blocking face calls from threads."""

    @functools.wraps(method)
    def run(engine: MemoryEngine, /, *args: P.args, **kwargs: P.kwargs) -> T:
        with engine._lock:
            return method(engine, *args, **kwargs)

    return run


@dataclasses.dataclass
class _Stream:
    events: list[RecordedEvent] = dataclasses.field(default_factory=list)
    metadata: StreamMetadata = dataclasses.field(default_factory=StreamMetadata)
    deleted: bool = False
    tombstoned: bool = False
    touched: bool = False
    """Whether it has what the SQL stores keep a ``streams`` row for (read rules, a
    delete): it may have hidden an event (``planner.UNTOUCHED``)."""
    snapshots: dict[int, dict[int, tuple[str, dt.datetime]]] = dataclasses.field(
        default_factory=dict
    )
    """snapshot_version -> version -> (state as JSON, recorded_at): kept as JSON so that
    nobody holding a loaded snapshot can change the stored one."""

    @property
    def version(self) -> int | None:
        """The version expected-version checks see: None when empty or soft-deleted."""
        return None if self.deleted or not self.events else self.events[-1].version


class MemoryEngine(Engine):
    """The memory backend's state and primitives (see the module docstring)."""

    runs_on_loop = True

    def __init__(self, *, clock: Clock = utc_now, readonly: bool = False) -> None:
        super().__init__(clock=clock, readonly=readonly)
        self._lock = threading.RLock()
        self._log: list[RecordedEvent] = []
        self._streams: dict[str, _Stream] = {}
        self._ids: dict[uuid.UUID, RecordedEvent] = {}
        self._chain: list[ChainRow] = []
        """The log as a SQL backend stores it, with its links (``eskit verify``)."""
        self._links: dict[str, bytes] = {}
        self._audit_key = audit_key()
        self._start: ChainStart | None = ChainStart(1, chain_start_hash(1, self._audit_key))
        """Every event of a memory store is linked in the current format."""

    def open(self) -> None:
        if self.readonly and not (self._log or self._streams):  # it lives in this object
            raise StoreNotFound("memory://", "nothing was ever written to this memory store")

    def close(self) -> None:
        self.committed()  # blocking subscriptions see the store close at once

    def _live(self, stream: str) -> _Stream:
        found = self._streams.get(stream) or _Stream()
        if found.tombstoned:
            raise StreamDeleted(stream)
        return found

    @_locked
    def append_many(self, appends: list[PreparedAppend]) -> list[AppendResult]:
        """Decided by the planner like every backend's appends: a group of one request."""
        streams, ids, fresh = lookups([appends])
        heads = {stream: self._head(stream) for stream in streams}
        earlier = {id_: self._where(found) for id_ in ids if (found := self._ids.get(id_))}
        now = self.clock()
        planner = Planner(heads, earlier, len(self._log) + 1, micros(now), self._audit_key, fresh)
        plan = planner.plan(appends)
        if plan.error is not None:
            raise plan.error
        assert plan.results is not None
        for stream in plan.revived:
            self._streams[stream].deleted = False
        for row in plan.rows:
            self._write(ChainRow(*row), now)
        if plan.rows:
            self.committed()
        return plan.results

    def _head(self, stream: str) -> Head:
        """The stream as the planner needs it: last version, state and last link."""
        state = self._streams.get(stream) or _Stream()
        status = (
            TOMBSTONED
            if state.tombstoned
            else SOFT_DELETED
            if state.deleted
            else LIVE
            if state.touched
            else UNTOUCHED
        )
        last = state.events[-1].version if state.events else None
        return Head(last, status, self._links.get(stream))

    @staticmethod
    def _where(event: RecordedEvent) -> ExistingEvent:
        return ExistingEvent(event.stream, event.version, event.position)

    def _write(self, row: ChainRow, now: dt.datetime) -> None:
        """Keep one planned event: in the log, its stream, the id index and the chain."""
        recorded = RecordedEvent(
            id=uuid.UUID(bytes=row.id),
            stream=row.stream,
            version=row.version,
            position=row.position,
            type=row.type,
            data=msgspec.json.decode(row.data),
            metadata=msgspec.json.decode(row.metadata),
            recorded_at=now,
            raw=raw_data(row.content_type, row.raw_data),
            raw_metadata=row.raw_metadata,
        )
        self._log.append(recorded)
        self._streams.setdefault(row.stream, _Stream()).events.append(recorded)
        self._ids[recorded.id] = recorded
        self._chain.append(row)
        assert row.hash is not None
        self._links[row.stream] = row.hash

    @_locked
    def chain_page(self, after: int, limit: int) -> list[ChainRow]:
        first = bisect.bisect_right(self._chain, after, key=lambda row: row.position)
        return self._chain[first : first + limit]

    @_locked
    def chain_start(self) -> ChainStart | None:
        return self._start

    @_locked
    def delete(
        self, stream: str, expected: ExpectedVersion, hard: bool, keeps_revision: bool = False
    ) -> None:
        state = self._live(stream)
        last = state.events[-1].version if state.events else None
        rules.check_version_matches(stream, expected, last, state.deleted, keeps_revision)
        self._streams[stream] = state
        if hard:
            state.tombstoned = state.touched = True
            state.snapshots.clear()  # unreachable for ever
        elif state.events and not state.deleted:
            state.deleted = state.touched = True
            truncate_before = state.events[-1].version + 1
            state.metadata = msgspec.structs.replace(
                state.metadata, truncate_before=truncate_before
            )

    @_locked
    def set_metadata(self, stream: str, metadata: StreamMetadata) -> None:
        stored = rules.loaded_metadata(*rules.stored_metadata(metadata))  # nobody shares it
        found = self._streams.setdefault(stream, _Stream())
        found.metadata, found.touched = stored, True

    @_locked
    def get_metadata(self, stream: str) -> StreamMetadata:
        found = self._streams.get(stream, _Stream()).metadata
        if found.custom is None:
            return found
        return rules.loaded_metadata(*rules.stored_metadata(found))  # a copy: nobody shares it

    @_locked
    def save_snapshot(self, snapshot: PreparedSnapshot, recorded_at: dt.datetime) -> None:
        state = self._live(snapshot.stream)
        self._streams[snapshot.stream] = state
        kept = state.snapshots.setdefault(snapshot.snapshot_version, {})
        kept[snapshot.version] = (snapshot.state, recorded_at)
        for version in sorted(kept)[: -rules.SNAPSHOTS_KEPT]:
            del kept[version]

    @_locked
    def load_snapshot(
        self, stream: str, snapshot_version: int, max_version: int
    ) -> Snapshot | None:
        state = self._live(stream)
        lowest = rules.lowest_snapshot_version(state.metadata)
        kept = state.snapshots.get(snapshot_version, {})
        version = max((v for v in kept if lowest <= v <= max_version), default=None)
        if version is None:
            return None
        data, recorded_at = kept[version]
        return Snapshot(stream, version, snapshot_version, msgspec.json.decode(data), recorded_at)

    @_locked
    def stream_version(self, stream: str) -> int | None:
        return self._live(stream).version

    @_locked
    def find_event(self, event_id: uuid.UUID) -> RecordedEvent | None:
        return self._ids.get(event_id)

    @_locked
    def last_position(self) -> int:
        return len(self._log)

    @_locked
    def list_streams(self, category: str | None, after: str | None, limit: int) -> list[StreamInfo]:
        names = (
            name
            for name in sorted(self._streams)
            if (after is None or name > after)
            and (category is None or rules.category(name) == category)
            and self._streams[name].events
        )
        return [self._info(name) for _, name in zip(range(limit), names, strict=False)]

    def _info(self, name: str) -> StreamInfo:
        state = self._streams[name]
        last = state.events[-1]
        status: StreamStatus = (
            "tombstoned" if state.tombstoned else "deleted" if state.deleted else "live"
        )
        return StreamInfo(name, last.version, last.position, last.type, last.recorded_at, status)

    @_locked
    def read_stream_page(
        self, stream: str, from_version: int | None, backwards: bool, count: int
    ) -> list[RecordedEvent]:
        state = self._live(stream)
        if not state.events:
            return []
        last = state.events[-1].version
        first = rules.first_visible_version(state.metadata, last)
        oldest = rules.oldest_visible_time(state.metadata, self.clock())
        if backwards:
            start = last if from_version is None else min(from_version, last)
            versions = range(start, first - 1, -1)
        else:
            versions = range(max(first, from_version or 0), last + 1)
        visible = (state.events[v] for v in versions)
        if oldest is not None:
            visible = (e for e in visible if e.recorded_at >= oldest)
        return [e for _, e in zip(range(count), visible, strict=False)]

    @_locked
    def read_all_page(
        self, after: int, count: int, types: tuple[str, ...] | None, category: str | None
    ) -> tuple[list[RecordedEvent], int]:
        page: list[RecordedEvent] = []
        searched = after
        for index in range(after, len(self._log)):
            if len(page) == count:
                break
            event = self._log[index]
            searched = event.position
            if (types is None or event.type in types) and (
                category is None or rules.category(event.stream) == category
            ):
                page.append(event)
        return page, searched

    @_locked
    def read_all_page_backwards(
        self,
        before: int,
        after: int,
        count: int,
        types: tuple[str, ...] | None,
        category: str | None,
    ) -> list[RecordedEvent]:
        page: list[RecordedEvent] = []
        for index in range(min(before, len(self._log) + 1) - 2, after - 1, -1):
            if len(page) == count:
                break
            event = self._log[index]
            if (types is None or event.type in types) and (
                category is None or rules.category(event.stream) == category
            ):
                page.append(event)
        return page


class MemoryStore(EventStore):
    """Events in process memory; gone when the process ends. For tests and examples."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.engine: MemoryEngine = MemoryEngine(clock=lambda: self.clock(), readonly=self.readonly)

    def read_model_database(self) -> SQLiteDatabase:
        """A private in-memory SQLite database: it lives as long as the store's events do."""
        from eskit.projections.database import SQLiteDatabase  # projections build on stores

        return SQLiteDatabase(":memory:")
