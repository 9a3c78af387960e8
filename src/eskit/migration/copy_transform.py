"""Copy a store into another while a migration's function rewrites its events: upcast them
to today's version, rename a type or a category, split one event into several, drop some.

``migrate_events`` reads the source up to the head it had when it started, a page at a
time, hands each event to ``EventMigration.transform`` and appends what it returns to the
target, in the source's order, in chunks (bounded memory whatever the size of the log):

- an event the function returns (changed or not) keeps its id; the events split off it
  get ``uuid5(id, str(n))`` for the n-th (from 1), so every run writes the same ids;
- the target numbers the versions of its streams itself (an event dropped or split
  shifts them);
- when done, it reads the target back and compares the count and digest of what it holds
  with what the migration meant to write, then records a migration event
  (``EventsMigrated`` in ``eskit.migration-<name>``) with both counts and digests, the
  source's digest (as ``eskit export`` and ``eskit copy`` compute it), and how many
  events were kept, changed, split and dropped.

It resumes after a crash: a run walks the target's log beside the migration's output and
appends only what is missing after it, so a rerun, after a kill midway or after the source
gained events (the catch-up of a blue/green switch), writes each event once. A target that
holds anything else is refused, naming the first event that differs.

Events holding encrypted fields (``Sensitive``) may be changed in place or dropped, never
moved to another stream or split off: their ciphertext is bound to their stream and id.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Final

import msgspec

from eskit.domain.sensitive import holds_sealed
from eskit.errors import EskitError
from eskit.store import rules
from eskit.store.base import EventStore
from eskit.store.model import ANY, Append, JSONObject, NewEvent, RawData, RecordedEvent
from eskit.store.transfer import (
    CHUNK_BYTES,
    CHUNK_EVENTS,
    Digest,
    Progress,
    Summary,
    TransferError,
    canonical,
    log_events,
    log_pages,
)

RECORD_TYPE: Final = "EventsMigrated"
"""The type of the event a migration records in the target when it is done."""
RECORD_CATEGORY: Final = "eskit.migration"
"""The category of the streams holding those events (one per migration name)."""
_NAMESPACE: Final = uuid.UUID("5b0d3c4e-7a59-4f3e-9c61-2f8f0e6a1d17")


class Rewritten(msgspec.Struct, frozen=True):
    """An event a migration writes to the target (its id is the source event's, or
    derived from it for the events split off)."""

    stream: str
    type: str
    data: JSONObject | RawData
    metadata: JSONObject | RawData = {}

    @classmethod
    def of(cls, event: RecordedEvent, **changes: Any) -> Rewritten:
        """``event`` as it is, but for ``changes`` (``stream``, ``type``, ``data``,
        ``metadata``); payloads kept as bytes stay ``RawData``."""
        raw_metadata = event.raw_metadata
        fields: dict[str, Any] = {
            "stream": event.stream,
            "type": event.type,
            "data": event.data if event.raw is None else event.raw,
            "metadata": event.metadata if raw_metadata is None else RawData("", raw_metadata),
        }
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"Rewritten has no field {sorted(unknown)[0]!r}")
        return cls(**{**fields, **changes})


Transform = Callable[[RecordedEvent], Iterable[Rewritten]]
"""What a migration does to one stored event: the events to write instead, in order
(none drops it, several split it)."""


@dataclasses.dataclass(frozen=True)
class EventMigration:
    """A named copy-transform migration (``eskit migrate-events --app module:attribute``).

    ``name`` names the stream its record goes to (``eskit.migration-<name>``): keep it for
    the reruns of one migration, take a new one for the next migration.
    """

    name: str
    transform: Transform
    description: str = ""

    def __post_init__(self) -> None:
        rules.check_name(self.record_stream, "migration record stream")

    @property
    def record_stream(self) -> str:
        return f"{RECORD_CATEGORY}-{self.name}"


class Migrated(msgspec.Struct, frozen=True):
    """What a migration read (``read``: source events up to ``source_position``, with
    their digest) and wrote (``written``: target events, with the digest of their ids,
    streams, types, data and metadata), what this run appended, and how the source's
    events fared: ``kept`` as they were, ``changed``, ``split`` (into ``split_off`` more
    events), ``dropped``. ``recorded``: whether this run wrote the migration event (False
    when an earlier run had recorded the same result)."""

    name: str
    read: Summary
    source_position: int
    written: Summary
    target_position: int
    appended: int
    kept: int
    changed: int
    split: int
    split_off: int
    dropped: int
    recorded: bool


async def migrate_events(
    source: EventStore,
    target: EventStore,
    migration: EventMigration,
    progress: Progress | None = None,
    *,
    verify_progress: Progress | None = None,
) -> Migrated:
    """Copy ``source`` into ``target`` through ``migration.transform`` (see the module's
    docstring), then check the target and record the migration in it.

    ``progress(done, total)`` follows the copy in source positions, ``verify_progress``
    the read of the target in target positions. Raises ``TransferError`` (a
    ``ValueError``) naming the source position when the function fails or returns
    something that cannot be written, when the target holds other events than this
    migration writes, and when the final check fails (another writer appended to the
    target meanwhile). What was appended before an error stays: a rerun continues there.
    """
    head = await source.last_position()
    read, planned, tally = Digest(), Digest(), Tally()
    held = _Held(target, await target.last_position(), migration.record_stream)
    appender = _Appender(target)
    async with contextlib.aclosing(log_pages(source, head)) as pages:
        async for page in pages:
            for event in page:
                read.add(canonical(event))
                for event_id, out in _outputs(migration, event, tally):
                    encoded = _shape(event_id, out)
                    planned.add(encoded)
                    stored = await held.next()
                    if stored is None:
                        await appender.add(event_id, out, encoded, event.position)
                    elif _shape(stored.id, Rewritten.of(stored)) != encoded:
                        raise _other_events(stored, event)
            if progress is not None and page[-1].position < head:
                progress(page[-1].position, head)
        await appender.flush()
    extra = await held.next()
    await held.close()
    if extra is not None:
        raise TransferError(
            f"the target holds more events than the migration writes: its position"
            f" {extra.position} ({_describe(extra)}) has no counterpart; migrate into an"
            " empty store"
        )
    if progress is not None:
        progress(head, head)
    written = planned.summary()
    target_position = await _check_target(target, migration, written, verify_progress)
    result = Migrated(
        migration.name,
        read.summary(),
        head,
        written,
        target_position,
        appender.appended,
        tally.kept,
        tally.changed,
        tally.split,
        tally.split_off,
        tally.dropped,
        recorded=False,
    )
    recorded = await _record(target, migration, result, held.last_record)
    return msgspec.structs.replace(result, recorded=recorded)


class Tally:
    """How the source's events fared."""

    def __init__(self) -> None:
        self.kept = self.changed = self.split = self.split_off = self.dropped = 0

    def count(self, event: RecordedEvent, outs: list[Rewritten]) -> None:
        if not outs:
            self.dropped += 1
        elif len(outs) > 1:
            self.split += 1
            self.split_off += len(outs) - 1
        elif outs[0] == Rewritten.of(event):
            self.kept += 1
        else:
            self.changed += 1


def _outputs(
    migration: EventMigration, event: RecordedEvent, tally: Tally
) -> list[tuple[uuid.UUID, Rewritten]]:
    """What the migration writes for ``event``, with the ids they get."""
    try:
        outs = list(migration.transform(event))
    except Exception as error:
        raise TransferError(
            f"source position {event.position} ({_describe(event)}): the migration"
            f" {migration.name!r} failed: {type(error).__name__}: {error}"
        ) from error
    for n, out in enumerate(outs):
        if not isinstance(out, Rewritten):
            raise TransferError(
                f"source position {event.position} ({_describe(event)}): the migration"
                f" {migration.name!r} must return Rewritten events, got {out!r:.80}"
            )
        sealed = isinstance(out.data, dict) and holds_sealed(out.data)
        if sealed and (n > 0 or out.stream != event.stream):
            raise TransferError(
                f"source position {event.position} ({_describe(event)}): it holds encrypted"
                " fields, bound to its stream and id: it may be changed in place or dropped,"
                f" not moved to {out.stream!r} or split off"
            )
    tally.count(event, outs)
    return [
        (event.id if n == 0 else uuid.uuid5(event.id, str(n)), out) for n, out in enumerate(outs)
    ]


def _shape(event_id: uuid.UUID, event: Rewritten) -> bytes:
    """What the target must hold for one output: id, stream, type, data and metadata
    (positions and versions are the target's own)."""
    fields = (
        str(event_id),
        event.stream,
        event.type,
        _payload(event.data),
        _payload(event.metadata),
    )
    return msgspec.json.encode(fields, order="sorted") + b"\n"


def _payload(value: JSONObject | RawData) -> Any:
    """A payload as ``_shape`` encodes it: bytes as a tagged list, never equal to an object."""
    return value if isinstance(value, dict) else ["raw", value.content_type, value.body]


class _Held:
    """The target's log as it was when the run started (what earlier runs wrote), read
    beside the migration's output; the migration's own records are skipped (the last one
    noted)."""

    def __init__(self, target: EventStore, until: int, record_stream: str) -> None:
        self._events = log_events(target, until)
        self._record_stream = record_stream
        self.last_record: RecordedEvent | None = None
        self._done = until == 0

    async def next(self) -> RecordedEvent | None:
        while not self._done:
            event = await anext(self._events, None)
            if event is None:
                self._done = True
            elif event.stream == self._record_stream:
                self.last_record = event
            else:
                return event
        return None

    async def close(self) -> None:
        await self._events.aclose()


class _Appender:
    """The migration's output appended in chunks: consecutive events, each stream once (a
    stream seen again starts the next chunk, so the target keeps the source's order)."""

    def __init__(self, target: EventStore) -> None:
        self.target = target
        self.runs: dict[str, list[NewEvent]] = {}
        self.last: str | None = None
        self.count = self.size = self.first = 0
        self.appended = 0

    async def add(self, event_id: uuid.UUID, out: Rewritten, encoded: bytes, where: int) -> None:
        full = self.count >= CHUNK_EVENTS or self.size + len(encoded) > CHUNK_BYTES
        if full or (out.stream in self.runs and out.stream != self.last):
            await self.flush()
        if not self.runs:
            self.first = where
        new = NewEvent(out.type, out.data, out.metadata, event_id)
        self.runs.setdefault(out.stream, []).append(new)
        self.last = out.stream
        self.count += 1
        self.size += len(encoded)

    async def flush(self) -> None:
        if not self.runs:
            return
        appends = [Append(stream, events, ANY) for stream, events in self.runs.items()]
        try:
            results = await self.target.append_many(appends)
        except (ValueError, TypeError, EskitError) as error:
            raise TransferError(
                f"source position {self.first} (or the events after it): the target refused"
                f" the migrated events: {error}"
            ) from error
        self.appended += sum(result.count for result in results)
        self.runs, self.last, self.count, self.size = {}, None, 0, 0


async def _check_target(
    target: EventStore, migration: EventMigration, expected: Summary, progress: Progress | None
) -> int:
    """Read the target back: it must hold what the migration wrote (its records aside)."""
    position = await target.last_position()
    found = Digest()
    async with contextlib.aclosing(log_pages(target, position)) as pages:
        async for page in pages:
            for event in page:
                if event.stream != migration.record_stream:
                    found.add(_shape(event.id, Rewritten.of(event)))
            if progress is not None and page[-1].position < position:
                progress(page[-1].position, position)
    if progress is not None:
        progress(position, position)
    if found.summary() != expected:
        actual = found.summary()
        raise TransferError(
            f"the target does not hold what the migration wrote: {expected.count} events"
            f" (digest {expected.digest}) were meant, it holds {actual.count} (digest"
            f" {actual.digest}); was the target written to during the migration?"
        )
    return position


async def _record(
    target: EventStore,
    migration: EventMigration,
    result: Migrated,
    last: RecordedEvent | None,
) -> bool:
    """Record what was done, unless the last record says the same: its id derives from the
    name and both digests, so a run interrupted while recording writes it once."""
    record_id = uuid.uuid5(_NAMESPACE, f"{migration.name}:{result.read.digest}")
    if last is not None and last.id == record_id:
        return False
    data: JSONObject = {
        "migration": migration.name,
        "description": migration.description,
        "source": {
            "events": result.read.count,
            "digest": result.read.digest,
            "last_position": result.source_position,
        },
        "target": {"events": result.written.count, "digest": result.written.digest},
        "kept": result.kept,
        "changed": result.changed,
        "split": result.split,
        "split_off": result.split_off,
        "dropped": result.dropped,
    }
    event = NewEvent(RECORD_TYPE, data, {}, record_id)
    await target.append(migration.record_stream, [event], ANY)
    return True


def _other_events(stored: RecordedEvent, event: RecordedEvent) -> TransferError:
    return TransferError(
        f"the target already holds other events: its position {stored.position} is"
        f" {_describe(stored)}, which is not what the migration writes for the source's"
        f" position {event.position} ({_describe(event)}); migrate into an empty store, or"
        " into one holding an earlier run of this migration"
    )


def _describe(event: RecordedEvent) -> str:
    return f"{event.stream} v{event.version} {event.type}, id {event.id}"
