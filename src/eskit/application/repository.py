"""The repository: load an aggregate (snapshot + the events after it) and save new events.

Load reads the newest snapshot whose ``snapshot_version`` matches the code, then replays the
events after it; a snapshot of another version is ignored and the aggregate is replayed from
its first event. Save appends with the loaded version as the expected version, so a
concurrent change raises ``WrongExpectedVersion`` instead of being overwritten. Snapshots are
taken after the commit, in the background: a failing snapshot never fails a save.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

from eskit.domain.events import SCHEMA_VERSION, EventRegistry
from eskit.domain.model import Model
from eskit.domain.sensitive import holds_sealed
from eskit.errors import AggregateNotFound
from eskit.store.base import EventStore
from eskit.store.ids import new_event_ids
from eskit.store.model import (
    NO_STREAM,
    Append,
    AppendResult,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    Snapshot,
)

S = TypeVar("S")

log = logging.getLogger("eskit.repository")


@dataclasses.dataclass(frozen=True, slots=True)
class Loaded(Generic[S]):
    """An aggregate's state and the version of its last event (None: no events yet)."""

    state: S
    version: int | None

    @property
    def expected_version(self) -> ExpectedVersion:
        """What to expect when appending to it: this version, or no stream."""
        return NO_STREAM if self.version is None else self.version


class Repository(Generic[S]):
    """Loads and saves the aggregates of one ``Model`` in an event store."""

    def __init__(self, store: EventStore, events: EventRegistry, model: Model[S]) -> None:
        self.store = store
        self.events = events
        self.model = model
        self.snapshot_failures = 0
        self._snapshot_tasks: set[asyncio.Task[None]] = set()

    def stream(self, aggregate_id: str) -> str:
        """The stream of one aggregate."""
        return self.model.stream(aggregate_id)

    async def load(
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
        if at is not None and at.utcoffset() is None:
            raise ValueError(f"at must be a timezone-aware datetime, got {at!r}")
        stream = self.stream(aggregate_id)
        model = self.model
        state, current = None, None
        events: AsyncIterator[RecordedEvent] | None = None  # those after the snapshot
        if model.snapshot_every is not None and at is None:
            snapshot, events = await self.store.read_from_snapshot(
                stream, model.snapshot_version, version
            )
            if snapshot is not None and model.from_snapshot is not None:
                try:
                    state, current = model.from_snapshot(snapshot.state), snapshot.version
                except Exception:  # a snapshot is a cache: replay the events instead
                    log.exception("ignoring the unreadable snapshot of %s", stream)
                    events = None  # all of them, then (that one was never started)
        if state is None:
            state = model.initial_state()
        evolve, decode_old, current_types, opener = (
            model.evolve,
            self.events.decode_old,
            self.events.current(),
            self.events.opener(),  # None unless events may hold encrypted fields
        )
        start = None if current is None else current + 1
        if version is None or current is None or version > current:
            if events is None:
                events = self.store.read_stream(stream, from_version=start)
            async for recorded in events:
                if (version is not None and recorded.version > version) or (
                    at is not None and recorded.recorded_at > at
                ):
                    break
                if opener is not None:
                    recorded = opener(recorded)
                known = current_types.get(recorded.type)
                if known is not None and known[0] == recorded.metadata.get(SCHEMA_VERSION, 1):
                    state = evolve(state, known[1](recorded.data))  # today's type: no upcasting
                else:
                    for event in decode_old(recorded):
                        state = evolve(state, event)
                current = recorded.version
        if current is None and not missing_ok:
            raise AggregateNotFound(stream)
        return Loaded(state, current)

    async def save(
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
        """Append ``events`` if the aggregate is still at ``expected_version``.

        ``metadata`` goes on every event (each also gets its ``schema_version``); ``ids``
        (one per event, ``also`` included) makes the append idempotent. ``also`` appends
        events to other streams in the same atomic transaction. Pass the ``state`` after the
        events to let the snapshot policy take a snapshot in the background. Returns None
        when nothing was appended to the aggregate's own stream.
        """
        stream = self.stream(aggregate_id)
        batches = [(stream, events, expected_version)] if events else []
        batches += [(other, list(more), expected) for other, more, expected in also if more]
        appends, start = [], 0
        for name, batch, expected in batches:
            batch_ids = None if ids is None else ids[start : start + len(batch)]
            new_events = self.to_new_events(batch, metadata, batch_ids, stream=name)
            appends.append(Append(name, new_events, expected))
            start += len(batch)
        if not appends:
            return None
        if len(appends) == 1:
            only = appends[0]
            results = [await self.store.append(only.stream, only.events, only.expected_version)]
        else:
            results = await self.store.append_many(appends)
        if not events:
            return None
        if state is not None:
            self._maybe_snapshot(aggregate_id, results[0], len(events), state)
        return results[0]

    def to_new_events(
        self,
        events: Sequence[object],
        metadata: Mapping[str, Any] | None = None,
        ids: Sequence[Any] | None = None,
        *,
        stream: str | None = None,
    ) -> list[NewEvent]:
        """Typed events as envelopes: registered name, data, metadata with schema version.

        Events with sensitive fields need the ``stream`` they go to, and get an id now if
        they have none: their ciphertext is bound to both."""
        base = dict(metadata or {})
        envelopes = []
        for i, event in enumerate(events):
            event_id = None if ids is None else ids[i]
            if event_id is None and self.events.type_of(event).sensitive:
                event_id = uuid.UUID(bytes=new_event_ids(1)[0])
            entry, data = self.events.encode(event, stream=stream, event_id=event_id)
            envelopes.append(
                NewEvent(entry.name, data, {**base, SCHEMA_VERSION: entry.version}, event_id)
            )
        return envelopes

    def _maybe_snapshot(
        self, aggregate_id: str, result: AppendResult, count: int, state: S
    ) -> None:
        every = self.model.snapshot_every
        before = result.last_version - count
        if every is None or (result.last_version + 1) // every == (before + 1) // every:
            return
        assert self.model.to_snapshot is not None
        try:
            snapshot = Snapshot(
                self.stream(aggregate_id),
                result.last_version,
                self.model.snapshot_version,
                self.model.to_snapshot(state),  # now: the caller may go on changing the state
            )
        except Exception:
            self.snapshot_failures += 1
            log.exception("snapshot of %s failed", self.stream(aggregate_id))
            return
        task = asyncio.create_task(self._snapshot(snapshot))
        self._snapshot_tasks.add(task)
        task.add_done_callback(self._snapshot_tasks.discard)

    async def _snapshot(self, snapshot: Snapshot) -> None:
        """Store a snapshot; a failure is logged and counted, never raised to a command."""
        try:
            if self.events.opener() is not None and await self._folds_encrypted(snapshot):
                log.info("no snapshot of %s: its events hold encrypted fields", snapshot.stream)
                return
            await self.store.save_snapshot(snapshot)
        except Exception:
            self.snapshot_failures += 1
            log.exception("snapshot of %s at version %d failed", snapshot.stream, snapshot.version)

    async def _folds_encrypted(self, snapshot: Snapshot) -> bool:
        """Whether the state folds in encrypted fields, which a snapshot would hold in
        plaintext (and keep after the subject is forgotten): such aggregates are never
        snapshotted. Only the events since the previous snapshot are read, as a snapshot
        is only ever taken of events without encrypted fields."""
        previous = await self.store.load_snapshot(snapshot.stream, snapshot.snapshot_version)
        start = 0 if previous is None else previous.version + 1
        async for recorded in self.store.read_stream(snapshot.stream, from_version=start):
            if recorded.version > snapshot.version:
                break
            if holds_sealed(recorded.data):
                return True
        return False

    async def wait_for_snapshots(self) -> None:
        """Wait until the snapshots started so far are stored (for tests and shutdown)."""
        while self._snapshot_tasks:
            await asyncio.gather(*list(self._snapshot_tasks), return_exceptions=True)
