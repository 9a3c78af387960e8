"""The repository: load an aggregate (snapshot + the events after it) and save new events.

Load reads the newest snapshot whose ``snapshot_version`` matches the code, then replays the
events after it; a snapshot of another version is ignored and the aggregate is replayed from
its first event. Save appends with the loaded version as the expected version, so a
concurrent change raises ``WrongExpectedVersion`` instead of being overwritten. Snapshots are
taken after the commit: in the background on the async face, in the caller's thread on the
blocking one; a failing snapshot never fails a save.

The logic is written once, IO-free, in ``RepositoryCore`` (flows that yield their reads and
writes, ``eskit.application.effects``); ``Repository`` here is the async face over it and
``eskit.sync.Repository`` the blocking one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from eskit.application.effects import (
    AppendEvents,
    AppendMany,
    AppendUntouched,
    Consume,
    Flow,
    Later,
    LoadSnapshot,
    ReadFromSnapshot,
    ReadStream,
    SaveSnapshot,
    run_async,
)
from eskit.domain.events import SCHEMA_VERSION, EventRegistry, not_a_domain_event
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


class RepositoryCore(Generic[S]):
    """What both faces' repositories share: the model, the events' registry, and loading,
    saving and snapshotting as flows (no IO of their own)."""

    def __init__(self, events: EventRegistry, model: Model[S]) -> None:
        self.events = events
        self.model = model
        self.snapshot_failures = 0
        self._snapshot_tasks: set[Any] = set()  # the async face's snapshots being stored

    def stream(self, aggregate_id: str) -> str:
        """The stream of one aggregate."""
        return self.model.stream(aggregate_id)

    def loading(
        self,
        aggregate_id: str,
        version: int | None = None,
        at: dt.datetime | None = None,
        missing_ok: bool = False,
        spot: Callable[[RecordedEvent], None] | None = None,
    ) -> Flow[Loaded[S]]:
        """``load`` as a flow; ``spot`` is shown every event read, as stored (the command
        bus looks there for a command it handled before)."""
        if at is not None and at.utcoffset() is None:
            raise ValueError(f"at must be a timezone-aware datetime, got {at!r}")
        stream = self.stream(aggregate_id)
        model = self.model
        state, current = None, None
        source: Any = None  # the events after the snapshot
        if model.snapshot_every is not None and at is None:
            snapshot, source = yield ReadFromSnapshot(stream, model.snapshot_version, version)
            if snapshot is not None and model.from_snapshot is not None:
                try:
                    state, current = model.from_snapshot(snapshot.state), snapshot.version
                except Exception:  # a snapshot is a cache: replay the events instead
                    log.exception("ignoring the unreadable snapshot of %s", stream)
                    source = None  # all of them, then (that one was never started)
        folded: S = model.initial_state() if state is None else state
        fold = self.folder()

        def step(recorded: RecordedEvent) -> bool:
            nonlocal folded, current
            if (version is not None and recorded.version > version) or (
                at is not None and recorded.recorded_at > at
            ):
                return False
            if spot is not None:
                spot(recorded)
            folded = fold(folded, recorded)
            current = recorded.version
            return True

        if version is None or current is None or version > current:
            if source is None:
                start = None if current is None else current + 1
                source = yield ReadStream(stream, start)
            yield Consume(source, step)
        if current is None and not missing_ok:
            raise AggregateNotFound(stream)
        return Loaded(folded, current)

    def folder(self) -> Callable[[S, RecordedEvent], S]:
        """``fold(state, recorded)``: the state with one stored event applied (decrypted,
        decoded, upcast as needed)."""
        evolve, decode_old, current_types, opener = (
            self.model.evolve,
            self.events.decode_old,
            self.events.current(),
            self.events.opener(),  # None unless events may hold encrypted fields
        )

        def fold(state: S, recorded: RecordedEvent) -> S:
            if recorded.raw is not None:
                raise not_a_domain_event(recorded)
            if opener is not None:
                recorded = opener(recorded)
            known = current_types.get(recorded.type)
            if known is not None and known[0] == recorded.metadata.get(SCHEMA_VERSION, 1):
                return evolve(state, known[1](recorded.data))  # today's type: no upcasting
            for event in decode_old(recorded):
                state = evolve(state, event)
            return state

        return fold

    def saving(
        self,
        aggregate_id: str,
        events: Sequence[object],
        expected_version: ExpectedVersion,
        metadata: Mapping[str, Any] | None = None,
        ids: Sequence[Any] | None = None,
        state: S | None = None,
        also: Sequence[tuple[str, Sequence[object], ExpectedVersion]] = (),
        *,
        stream: str | None = None,
        own_metadata: bool = False,
        untouched: bool = False,
    ) -> Flow[AppendResult | None]:
        """``save`` as a flow. ``stream``: the aggregate's, if the caller has it already;
        ``own_metadata``: ``metadata`` is the caller's fresh dict, which the events may
        share (no copy: the command bus makes one per command); ``untouched``: append as
        ``AppendUntouched`` (the command bus, from a kept state; only with ``events`` and
        no ``also``)."""
        if stream is None:
            stream = self.stream(aggregate_id)
        if events and not also:  # one stream: a command's usual append
            new_events = self.to_new_events(events, metadata, ids, stream=stream, own=own_metadata)
            append = AppendUntouched if untouched else AppendEvents
            results = [(yield append(stream, new_events, expected_version))]
        else:
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
                results = [(yield AppendEvents(only.stream, only.events, only.expected_version))]
            else:
                results = yield AppendMany(appends)
            if not events:
                return None
        result: AppendResult = results[0]
        every = self.model.snapshot_every
        last = result.last_version  # a snapshot falls due when a multiple of every is crossed
        if (
            state is not None
            and every is not None
            and (last + 1) // every != (last - len(events) + 1) // every
        ):
            snapshot = self._due_snapshot(stream, result, state)
            if snapshot is not None:
                yield Later(self._snapshotting(snapshot), self._snapshot_tasks)
        return result

    def to_new_events(
        self,
        events: Sequence[object],
        metadata: Mapping[str, Any] | None = None,
        ids: Sequence[Any] | None = None,
        *,
        stream: str | None = None,
        own: bool = False,
    ) -> list[NewEvent]:
        """Typed events as envelopes: registered name, data, metadata with schema version.

        Events of one schema version share one metadata dict (made once, and encoded once
        by the store); ``own``: ``metadata`` is the caller's to give away, and becomes the
        first version's. Events with sensitive fields need the ``stream`` they go to, and
        get an id now if they have none: their ciphertext is bound to both."""
        base = metadata or {}  # not changed unless owned
        registry = self.events
        envelopes = []
        shared: dict[int, dict[str, Any]] = {}  # by schema version
        for i, event in enumerate(events):
            event_id = None if ids is None else ids[i]
            entry = registry.type_of(event)
            if entry.sensitive:  # sealed by the registry, bound to the stream and the id
                if event_id is None:
                    event_id = uuid.UUID(bytes=new_event_ids(1)[0])
                entry, data = registry.encode(event, stream=stream, event_id=event_id)
            else:
                data = entry.encode(event)
            meta = shared.get(entry.version)
            if meta is None:
                if own and not shared and type(base) is dict:
                    meta = base
                    meta[SCHEMA_VERSION] = entry.version
                else:
                    meta = {**base, SCHEMA_VERSION: entry.version}
                shared[entry.version] = meta
            envelopes.append(NewEvent(entry.name, data, meta, event_id))
        return envelopes

    def _due_snapshot(self, stream: str, result: AppendResult, state: S) -> Snapshot | None:
        """The snapshot to take after an append that crossed a multiple of
        ``snapshot_every`` (made now: the caller may go on changing the state)."""
        assert self.model.to_snapshot is not None
        try:
            return Snapshot(
                stream,
                result.last_version,
                self.model.snapshot_version,
                self.model.to_snapshot(state),
            )
        except Exception:
            self.snapshot_failures += 1
            log.exception("snapshot of %s failed", stream)
            return None

    def _snapshotting(self, snapshot: Snapshot) -> Flow[None]:
        """Store a snapshot; a failure is logged and counted, never raised to a command."""
        try:
            if self.events.opener() is not None and (yield from self._folds_encrypted(snapshot)):
                log.info("no snapshot of %s: its events hold encrypted fields", snapshot.stream)
                return
            yield SaveSnapshot(snapshot)
        except Exception:
            self.snapshot_failures += 1
            log.exception("snapshot of %s at version %d failed", snapshot.stream, snapshot.version)

    def _folds_encrypted(self, snapshot: Snapshot) -> Flow[bool]:
        """Whether the state folds in encrypted fields, which a snapshot would hold in
        plaintext (and keep after the subject is forgotten): such aggregates are never
        snapshotted. Only the events since the previous snapshot are read, as a snapshot
        is only ever taken of events without encrypted fields."""
        previous = yield LoadSnapshot(snapshot.stream, snapshot.snapshot_version)
        start = 0 if previous is None else previous.version + 1
        sealed = False

        def step(recorded: RecordedEvent) -> bool:
            nonlocal sealed
            if recorded.version > snapshot.version:
                return False
            sealed = holds_sealed(recorded.data)
            return not sealed

        yield Consume((yield ReadStream(snapshot.stream, start)), step)
        return sealed


class Repository(RepositoryCore[S]):
    """Loads and saves the aggregates of one ``Model`` in an event store."""

    def __init__(self, store: EventStore, events: EventRegistry, model: Model[S]) -> None:
        super().__init__(events, model)
        self.store = store

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
        return await run_async(self.store, self.loading(aggregate_id, version, at, missing_ok))

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
        flow = self.saving(aggregate_id, events, expected_version, metadata, ids, state, also)
        return await run_async(self.store, flow)

    async def wait_for_snapshots(self) -> None:
        """Wait until the snapshots started so far are stored (for tests and shutdown)."""
        while self._snapshot_tasks:
            await asyncio.gather(*list(self._snapshot_tasks), return_exceptions=True)
