"""The in-memory reference backend: the executable specification of the contract.

Everything lives in Python lists and dicts and every operation runs without awaiting in
the middle, so each append is trivially atomic. The SQLite and PostgreSQL backends must
behave exactly like this one (the conformance suite and a model-based test check it).
"""

from __future__ import annotations

import dataclasses
import uuid

import msgspec

from eskit.errors import StreamDeleted
from eskit.store import rules
from eskit.store.base import EventStore
from eskit.store.ids import new_event_ids
from eskit.store.model import AppendResult, ExpectedVersion, RecordedEvent, StreamMetadata
from eskit.store.rules import ExistingEvent, PreparedEvent


@dataclasses.dataclass
class _Stream:
    events: list[RecordedEvent] = dataclasses.field(default_factory=list)
    metadata: StreamMetadata = dataclasses.field(default_factory=StreamMetadata)
    deleted: bool = False
    tombstoned: bool = False

    @property
    def version(self) -> int | None:
        """The version expected-version checks see: None when empty or soft-deleted."""
        return None if self.deleted or not self.events else self.events[-1].version


class MemoryStore(EventStore):
    """Events in process memory; gone when the process ends. For tests and examples."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self._log: list[RecordedEvent] = []
        self._streams: dict[str, _Stream] = {}
        self._ids: dict[uuid.UUID, RecordedEvent] = {}

    async def _open_backend(self) -> None:
        pass

    async def _close_backend(self) -> None:
        pass

    def _live(self, stream: str) -> _Stream:
        found = self._streams.get(stream) or _Stream()
        if found.tombstoned:
            raise StreamDeleted(stream)
        return found

    async def _append(
        self, stream: str, events: list[PreparedEvent], expected: ExpectedVersion
    ) -> AppendResult:
        state = self._live(stream)
        existing = [self._existing(e.id) for e in events]
        replayed = rules.replayed_append(stream, expected, existing)
        if replayed is not None:
            return replayed
        rules.check_version_matches(stream, expected, state.version)
        self._streams[stream] = state
        state.deleted = False
        next_version = state.events[-1].version + 1 if state.events else 0
        now = self.clock()
        fresh = iter(new_event_ids(len(events)))
        for offset, event in enumerate(events):
            recorded = RecordedEvent(
                id=event.id or uuid.UUID(bytes=next(fresh)),
                stream=stream,
                version=next_version + offset,
                position=len(self._log) + 1,
                type=event.type,
                data=msgspec.json.decode(event.data),
                metadata=msgspec.json.decode(event.metadata),
                recorded_at=now,
            )
            self._log.append(recorded)
            state.events.append(recorded)
            self._ids[recorded.id] = recorded
        self._notify_waiters()
        last = self._log[-1]
        return AppendResult(last.version, last.position, len(events))

    def _existing(self, event_id: uuid.UUID | None) -> ExistingEvent | None:
        found = self._ids.get(event_id) if event_id is not None else None
        return None if found is None else ExistingEvent(found.stream, found.version, found.position)

    async def _delete(self, stream: str, expected: ExpectedVersion, hard: bool) -> None:
        state = self._live(stream)
        rules.check_version_matches(stream, expected, state.version)
        self._streams[stream] = state
        if hard:
            state.tombstoned = True
        elif state.events and not state.deleted:
            state.deleted = True
            truncate_before = state.events[-1].version + 1
            state.metadata = msgspec.structs.replace(
                state.metadata, truncate_before=truncate_before
            )

    async def _set_metadata(self, stream: str, metadata: StreamMetadata) -> None:
        self._streams.setdefault(stream, _Stream()).metadata = metadata

    async def _get_metadata(self, stream: str) -> StreamMetadata:
        return self._streams.get(stream, _Stream()).metadata

    async def _stream_version(self, stream: str) -> int | None:
        return self._live(stream).version

    async def _last_position(self) -> int:
        return len(self._log)

    async def _read_stream_page(
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

    async def _read_all_page(
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
