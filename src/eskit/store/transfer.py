"""Copy a store's log to a JSON Lines file and back: backups, moves between backends,
fixtures for tests.

The file holds one event per line, in log order::

    {"id": "…", "stream": "invoice-1", "version": 0, "type": "InvoiceCreated",
     "data": {…}, "metadata": {…}, "recorded_at": "2024-03-01T09:00:00Z", "position": 1}

and ends with a summary line ``{"summary": {"count": N, "digest": "…"}}``. The digest is a
SHA-256 over a canonical encoding (sorted keys) of each event's id, stream, version, type,
data and metadata, in order: what an import must reproduce exactly. An event whose data or
metadata is kept as bytes (``RawData``) has ``"data": {}`` (or ``"metadata": {}``) and
carries them in ``content_type``, ``raw_data`` and ``raw_metadata`` (base64), which its
digest covers too. Positions and
``recorded_at`` are the source's; the target assigns its own.

Both directions stream in pages, so memory stays bounded whatever the size of the log. An
import appends each run of one stream's events with the expected version the file implies
and the original event ids, so importing the same file twice writes nothing the second
time, and a target whose streams disagree with the file is refused, not merged. Stream
metadata, deletes, tombstones and snapshots are not carried: only the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import os
import uuid
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Annotated, Any, Final, NoReturn, TypeVar

import msgspec

from eskit.errors import IdempotencyConflict, StoreError
from eskit.store.base import EventStore
from eskit.store.model import NO_STREAM, Append, AppendResult, NewEvent, RawData, RecordedEvent
from eskit.store.nesting import may_nest_too_deep, too_deep_at
from eskit.store.rules import MAX_NESTING, check_name, prepare_append

Progress = Callable[[int, int], None]
"""Called with (done, total) as a transfer advances: positions for an export, bytes read
for an import."""

CHUNK_EVENTS: Final = 1000
"""Events an import appends (and reads back) per round trip, at most."""
CHUNK_BYTES: Final = 8 * 1024 * 1024
"""Bytes of file an import holds in memory at most (beyond one event larger than that)."""
READ_BYTES: Final = 1024 * 1024
"""Bytes read from the file per call (file I/O runs in a thread, off the event loop)."""


class TransferError(ValueError):
    """The file is malformed, or does not match what the store holds."""


class Summary(msgspec.Struct, frozen=True):
    """How many events were transferred and their digest (equal on both sides)."""

    count: int
    digest: str


class ExportedEvent(msgspec.Struct, frozen=True):
    """One line of an export file."""

    id: uuid.UUID
    stream: str
    version: Annotated[int, msgspec.Meta(ge=0)]
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any] = {}
    recorded_at: dt.datetime | None = None
    position: int | None = None


class ExportedRawEvent(ExportedEvent, frozen=True):
    """A line whose data or metadata is kept as bytes (``RawData``): the lines of other
    events do not hold these fields at all."""

    content_type: str | None = None
    raw_data: bytes | None = None
    raw_metadata: bytes | None = None

    def new_data(self) -> dict[str, Any] | RawData:
        """The data to append again."""
        return (
            self.data
            if self.content_type is None
            else RawData(self.content_type, self.raw_data or b"")
        )

    def new_metadata(self) -> dict[str, Any] | RawData:
        return self.metadata if self.raw_metadata is None else RawData("", self.raw_metadata)


_E = TypeVar("_E", bound=ExportedEvent)


class _Trailer(msgspec.Struct, frozen=True):
    summary: Summary


_encode_line = msgspec.json.Encoder().encode
_decode_line = msgspec.json.Decoder().decode


def canonical(event: RecordedEvent | ExportedRawEvent) -> bytes:
    """The bytes the digest covers for one event: what must survive a transfer unchanged."""
    fields: tuple[Any, ...] = (
        str(event.id),
        event.stream,
        event.version,
        event.type,
        event.data,
        event.metadata,
    )
    raw = _raw_parts(event)
    if raw is not None:
        fields = (*fields, *raw)
    return msgspec.json.encode(fields, order="sorted") + b"\n"


def _raw_parts(
    event: RecordedEvent | ExportedRawEvent,
) -> tuple[str | None, bytes | None, bytes | None] | None:
    """(content type, data bytes, metadata bytes) of an event with raw parts, else None."""
    if isinstance(event, RecordedEvent):
        raw = event.raw
        if raw is None and event.raw_metadata is None:
            return None
        return (
            (None, None, event.raw_metadata)
            if raw is None
            else (
                raw.content_type,
                raw.body,
                event.raw_metadata,
            )
        )
    if event.content_type is None and event.raw_metadata is None:
        return None
    return event.content_type, event.raw_data, event.raw_metadata


class Digest:
    """The running count and SHA-256 of a sequence of ``canonical`` events."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.count = 0

    def add(self, encoded: bytes) -> None:
        self._hash.update(encoded)
        self.count += 1

    def summary(self) -> Summary:
        return Summary(self.count, self._hash.hexdigest())


async def log_pages(store: EventStore, until: int) -> AsyncGenerator[list[RecordedEvent], None]:
    """The store's log up to position ``until``, a page (``store.page_size`` events) at a
    time: bounded memory whatever the size of the log. Pages are never empty."""
    after = 0
    while after < until:
        page = await store.read_page(after=after, limit=store.page_size)
        events = page.events
        if events and events[-1].position > until:
            events = [event for event in events if event.position <= until]
            if events:
                yield events
            return
        if not events:
            return
        yield events
        after = page.next_after


async def log_events(store: EventStore, until: int) -> AsyncGenerator[RecordedEvent, None]:
    """``log_pages``, an event at a time."""
    async with contextlib.aclosing(log_pages(store, until)) as pages:
        async for page in pages:
            for event in page:
                yield event


async def export_events(
    store: EventStore, path: str | os.PathLike[str], progress: Progress | None = None
) -> Summary:
    """Write every event up to the current head to ``path`` (JSON Lines) and return the
    count and digest.

    The file appears only when complete (it is written beside and renamed), so a failed
    export never leaves a file that looks whole.
    """
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    head = await store.last_position()
    digest = Digest()
    try:
        with await asyncio.to_thread(partial.open, "wb") as file:
            async with contextlib.aclosing(log_pages(store, head)) as pages:
                async for events in pages:
                    lines = []
                    for event in events:
                        digest.add(canonical(event))
                        lines.append(_encode_line(exported(event)) + b"\n")
                    await asyncio.to_thread(file.write, _escape_separators(b"".join(lines)))
                    if progress is not None:
                        progress(events[-1].position, head)
            summary = digest.summary()
            await asyncio.to_thread(file.write, _encode_line(_Trailer(summary)) + b"\n")
        await asyncio.to_thread(os.replace, partial, target)
    finally:
        await asyncio.to_thread(partial.unlink, missing_ok=True)
    return summary


def _escape_separators(text: bytes) -> bytes:
    """Write U+2028, U+2029 and U+0085 as JSON escapes: valid raw in JSON, but tools that
    split lines the way ``str.splitlines`` does would cut an event in two there."""
    for separator in _SEPARATORS:
        text = text.replace(separator.encode(), f"\\u{ord(separator):04x}".encode())
    return text


_SEPARATORS: Final = ("\u2028", "\u2029", "\x85")


def exported(event: RecordedEvent) -> ExportedEvent:
    """The line of an export file for ``event``: with raw fields only if it has raw parts."""
    raw = _raw_parts(event)
    return to_append(event) if raw is not None else _exported_as(ExportedEvent, event)


def to_append(event: RecordedEvent) -> ExportedRawEvent:
    """``event`` as an import or copy appends it again."""
    raw = _raw_parts(event) or (None, None, None)
    return _exported_as(ExportedRawEvent, event, *raw)


def _exported_as(kind: type[_E], event: RecordedEvent, *raw: Any) -> _E:
    return kind(
        event.id,
        event.stream,
        event.version,
        event.type,
        event.data,
        event.metadata,
        event.recorded_at,
        event.position,
        *raw,
    )


class Line(msgspec.Struct, frozen=True):
    """An event to append, where it came from (a file's line number, a store's position)
    and its ``canonical`` bytes."""

    number: int
    event: ExportedRawEvent
    encoded: bytes


class Imported(Summary, frozen=True):
    """The file's count and digest, and how many of its events this import wrote and how
    many the store already held (an earlier import of the file, or of its beginning)."""

    written: int
    present: int


async def check_file(path: str | os.PathLike[str], progress: Progress | None = None) -> Summary:
    """Read an export file through once, writing nothing, and return its summary.

    Every line must be an exported event with a usable stream name and data and metadata
    nested at most ``MAX_NESTING`` deep (refused unparsed, however deep), and the last line the
    summary ``export_events`` writes, whose count and digest match the lines before it.
    Raises ``TransferError`` naming the line (or the end of the file) where it goes wrong:
    a file cut short, edited, or not written by an export is refused as a whole.
    """
    source = Path(path)
    digest = Digest()
    summary: Summary | None = None
    last = 0
    async with contextlib.aclosing(_lines(source, progress)) as raws:
        async for number, raw in raws:
            if summary is not None:
                raise TransferError(f"{source}:{number}: a line after the summary line")
            last = number
            parsed = _parse(raw, source, number)
            if isinstance(parsed, _Trailer):
                _check_summary(parsed.summary, digest.summary(), source, number)
                summary = parsed.summary
                continue
            try:
                check_name(parsed.stream)
            except ValueError as error:
                raise TransferError(f"{source}:{number}: {error}") from None
            digest.add(canonical(parsed))
    if summary is None:
        where = f"{source}:{last}" if last else f"{source}"
        raise TransferError(
            f"{where}: the file is incomplete: it ends after {digest.count} events"
            " without the summary line an export writes last (cut short, or not written by"
            " eskit export)"
        )
    return summary


async def import_events(
    store: EventStore,
    path: str | os.PathLike[str],
    progress: Progress | None = None,
    *,
    checked: Summary | None = None,
) -> Imported:
    """Append the events of an export file to ``store``, keeping their ids, streams,
    versions, metadata and order; return the count, the digest, and how many events were
    written and how many were already there.

    The file is read twice. The first pass (``check_file``) writes nothing: a file that is
    malformed, cut short or edited raises ``TransferError`` naming the line, and the store is
    left exactly as it was. Give ``checked``, the summary ``check_file`` returned, to skip
    that pass when the caller made it (the CLI does, before it opens the store). The second
    pass appends; ``progress(done, total)`` follows each pass in bytes read. Events the store
    already holds (same id, stream, version and content) are not written again, so importing
    a file twice, or a longer export of the same log, writes only what is missing. A store
    holding other events under these ids or versions raises ``TransferError`` naming the
    line; the events appended before it stay (they are the file's own, in order).
    """
    source = Path(path)
    expected = checked if checked is not None else await check_file(source, progress)
    digest = Digest()
    chunk = Chunk(store, lambda n: f"{source}:{n}")
    written = 0
    async with contextlib.aclosing(_lines(source, progress)) as raws:
        async for number, raw in raws:
            parsed = _parse(raw, source, number)
            if isinstance(parsed, _Trailer):
                continue  # checked in the first pass
            line = Line(number, parsed, canonical(parsed))
            digest.add(line.encoded)
            if not chunk.fits(line):
                written += await chunk.flush()
            chunk.add(line)
    written += await chunk.flush()
    if digest.summary() != expected:
        raise TransferError(
            f"{source}: the file changed while it was imported: it was checked with"
            f" {expected.count} events (digest {expected.digest}), but now holds"
            f" {digest.count} (digest {digest.summary().digest})"
        )
    return Imported(expected.count, expected.digest, written, expected.count - written)


async def _lines(
    source: Path, progress: Progress | None
) -> AsyncGenerator[tuple[int, bytes], None]:
    """The file's non-blank lines with their numbers (from 1); a block of lines is in
    memory at a time. ``progress`` hears of the bytes read."""
    size = (await asyncio.to_thread(source.stat)).st_size
    number = done = 0
    with await asyncio.to_thread(source.open, "rb") as file:
        while raws := await asyncio.to_thread(file.readlines, READ_BYTES):
            for raw in raws:
                number += 1
                if raw.strip():
                    yield number, raw
            done += sum(map(len, raws))
            if progress is not None and done < size:
                progress(done, size)
    if progress is not None:
        progress(size, size)


LINE_NESTING: Final = MAX_NESTING + 1
"""Deepest nesting of a line: the event's object around data and metadata nested at most
``MAX_NESTING`` deep, as the store takes them."""


def _parse(raw: bytes, source: Path, number: int) -> ExportedRawEvent | _Trailer:
    """The line as an event or the summary; ``TransferError`` naming the file, the line
    and why not. A line nested deeper than the store takes is refused before the parser
    (which recurses) reads it, naming the path where it goes too deep."""
    if may_nest_too_deep(raw, LINE_NESTING):
        path = too_deep_at(raw.decode(errors="replace"), LINE_NESTING)
        if path is not None:
            raise TransferError(
                f"{source}:{number}: nested deeper than {MAX_NESTING} levels, at {path}"
                f" (event data and metadata may nest {MAX_NESTING} levels)"
            )
    try:
        value = _decode_line(raw)
        if isinstance(value, dict) and "summary" in value:
            return msgspec.convert(value, _Trailer)
        return msgspec.convert(value, ExportedRawEvent)
    except msgspec.MsgspecError as error:
        cut = "" if raw.endswith(b"\n") else " (the last line, without its end: cut short?)"
        raise TransferError(f"{source}:{number}: not an exported event{cut}: {error}") from None


def _check_summary(expected: Summary, actual: Summary, source: Path, number: int) -> None:
    if expected != actual:
        raise TransferError(
            f"{source}:{number}: the file is damaged: its summary says {expected.count} events"
            f" with digest {expected.digest}, but its lines hold {actual.count} events with"
            f" digest {actual.digest}"
        )


class Chunk:
    """Consecutive events appended in one ``append_many``: one run per stream, each stream
    once (a stream seen again starts the next chunk), so the log keeps the source's order.

    ``where`` names the place of a ``Line.number`` in error messages (``file:line``)."""

    def __init__(self, store: EventStore, where: Callable[[int], str]) -> None:
        self.store, self.where = store, where
        self.runs: dict[str, list[Line]] = {}
        self.last: str | None = None
        self.count = self.size = 0
        self.head: int | None = None
        """The store's last position before this chunk (read before the first flush)."""

    def fits(self, line: Line) -> bool:
        stream = line.event.stream
        return (
            (stream == self.last or stream not in self.runs)
            and self.count < CHUNK_EVENTS
            and (self.size + len(line.encoded) <= CHUNK_BYTES or not self.count)
        )

    def add(self, line: Line) -> None:
        event = line.event
        run = self.runs.setdefault(event.stream, [])
        if run and event.version != run[-1].event.version + 1:
            raise TransferError(
                f"{self.where(line.number)}: stream {event.stream!r} version {event.version}"
                f" does not follow version {run[-1].event.version}"
                f" ({self.where(run[-1].number)})"
            )
        run.append(line)
        self.last = event.stream
        self.count += 1
        self.size += len(line.encoded)

    async def flush(self) -> int:
        """Append the chunk (atomically) and check every event as stored; return how many
        were written now. Events the store already holds in their place (an earlier import
        of the same events) are not written again and not counted."""
        if not self.runs:
            return 0
        if self.head is None:
            self.head = await self.store.last_position()
        try:
            try:
                results = await self._append({})
            except IdempotencyConflict:  # some of them are there already: append the rest
                results = await self._append(await self._held())
        except StoreError as error:
            stream = getattr(error, "stream", None)
            first = self.runs[stream][0].number if stream in self.runs else self._first()
            raise TransferError(f"{self.where(first)}: {error}") from error
        except ValueError as error:
            self._blame(error)
        lines = [line for run in self.runs.values() for line in run]
        for line, stored in zip(lines, await self._read_back(results, lines), strict=True):
            if stored is None or canonical(stored) != line.encoded:
                held = "nothing" if stored is None else f"{stored.stream} v{stored.version}"
                raise TransferError(
                    f"{self.where(line.number)}: the store already holds a different event"
                    f" with id {line.event.id} ({held}: other type, data or metadata)"
                )
        # An append that was a retry answers with the positions written before: at or
        # below the head seen before this chunk. New positions lie above it.
        written = sum(r.count for r in results if r.first_position > self.head)
        self.head = max([self.head, *(r.last_position for r in results)])
        self.runs, self.last, self.count, self.size = {}, None, 0, 0
        return written

    async def _append(self, held: dict[str, int | None]) -> list[AppendResult]:
        """Append each run but the events at or below its stream's ``held`` version."""
        appends = []
        for stream, run in self.runs.items():
            last = held.get(stream)
            start = run[0].event.version if last is None else max(run[0].event.version, last + 1)
            events = [
                NewEvent(x.event.type, x.event.new_data(), x.event.new_metadata(), x.event.id)
                for x in run
                if x.event.version >= start
            ]
            if events:
                appends.append(Append(stream, events, NO_STREAM if start == 0 else start - 1))
        return await self.store.append_many(appends) if appends else []

    async def _held(self) -> dict[str, int | None]:
        """The current version of each run's stream (only when some events are there)."""
        return {stream: await self.store.stream_version(stream) for stream in self.runs}

    def _first(self) -> int:
        return next(iter(self.runs.values()))[0].number

    def _blame(self, error: ValueError) -> NoReturn:
        """Name the line of the event the store refused (checked one by one, only now)."""
        for stream, run in self.runs.items():
            for line in run:
                event = line.event
                try:
                    new = NewEvent(event.type, event.new_data(), event.new_metadata(), event.id)
                    prepare_append(stream, [new], NO_STREAM, self.store.max_event_size)
                except ValueError as refused:
                    raise TransferError(f"{self.where(line.number)}: {refused}") from error
        raise TransferError(f"{self.where(self._first())}: {error}") from error

    async def _read_back(
        self, results: list[AppendResult], lines: list[Line]
    ) -> list[RecordedEvent | None]:
        """The events as stored: one read of the positions just written; event by event
        only when a retried run had been written in other places before."""
        first = results[0].first_position if results else 0
        last = results[-1].last_position if results else 0
        if results and last - first + 1 == len(lines):
            page = await self.store.read_page(after=first - 1, limit=len(lines))
            if [e.id for e in page.events] == [line.event.id for line in lines]:
                return list(page.events)
        return [await self.store.find_event(line.event.id) for line in lines]
