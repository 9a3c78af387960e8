"""Copy a store's log to a JSON Lines file and back: backups, moves between backends,
fixtures for tests.

The file holds one event per line, in log order::

    {"id": "…", "stream": "invoice-1", "version": 0, "type": "InvoiceCreated",
     "data": {…}, "metadata": {…}, "recorded_at": "2024-03-01T09:00:00Z", "position": 1}

and ends with a summary line ``{"summary": {"count": N, "digest": "…"}}``. The digest is a
SHA-256 over a canonical encoding (sorted keys) of each event's id, stream, version, type,
data and metadata, in order: what an import must reproduce exactly. Positions and
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
from typing import Annotated, Any, Final, NoReturn

import msgspec

from eskit.errors import StoreError
from eskit.store.base import EventStore
from eskit.store.model import NO_STREAM, Append, AppendResult, NewEvent, RecordedEvent
from eskit.store.rules import prepare_append

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


class _Trailer(msgspec.Struct, frozen=True):
    summary: Summary


_encode_line = msgspec.json.Encoder().encode
_decode_line = msgspec.json.Decoder().decode


def canonical(event: RecordedEvent | ExportedEvent) -> bytes:
    """The bytes the digest covers for one event: what must survive a transfer unchanged."""
    fields = (str(event.id), event.stream, event.version, event.type, event.data, event.metadata)
    return msgspec.json.encode(fields, order="sorted") + b"\n"


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
    return ExportedEvent(
        event.id,
        event.stream,
        event.version,
        event.type,
        event.data,
        event.metadata,
        event.recorded_at,
        event.position,
    )


class Line(msgspec.Struct, frozen=True):
    """An event to append, where it came from (a file's line number, a store's position)
    and its ``canonical`` bytes."""

    number: int
    event: ExportedEvent
    encoded: bytes


async def import_events(
    store: EventStore, path: str | os.PathLike[str], progress: Progress | None = None
) -> Summary:
    """Append the events of an export file to ``store``, keeping their ids, streams,
    versions, metadata and order; return the count and digest.

    Every event is read back after its append and compared with its line, and the summary
    line (if the file has one) is checked, so a truncated or altered file, or a store that
    already holds other events under these ids or versions, raises ``TransferError`` naming
    the line. Events appended before the error stay (a retry of the same file skips them).
    """
    source = Path(path)
    size = (await asyncio.to_thread(source.stat)).st_size
    digest = Digest()
    chunk = Chunk(store, lambda n: f"{source}:{n}")
    number = done = 0
    summarised = False
    with await asyncio.to_thread(source.open, "rb") as file:
        while raws := await asyncio.to_thread(file.readlines, READ_BYTES):
            for raw in raws:
                number += 1
                done += len(raw)
                if not raw.strip():
                    continue
                if summarised:
                    raise TransferError(f"{source}:{number}: a line after the summary line")
                parsed = _parse(raw, source, number)
                if isinstance(parsed, _Trailer):
                    _check_summary(parsed.summary, digest.summary(), source, number)
                    summarised = True
                    continue
                line = Line(number, parsed, canonical(parsed))
                digest.add(line.encoded)
                if not chunk.fits(line):
                    await chunk.flush()
                    if progress is not None:
                        progress(done, size)
                chunk.add(line)
    await chunk.flush()
    if progress is not None:
        progress(size, size)
    return digest.summary()


def _parse(raw: bytes, source: Path, number: int) -> ExportedEvent | _Trailer:
    try:
        value = _decode_line(raw)
        if isinstance(value, dict) and "summary" in value:
            return msgspec.convert(value, _Trailer)
        return msgspec.convert(value, ExportedEvent)
    except msgspec.MsgspecError as error:
        raise TransferError(f"{source}:{number}: not an exported event: {error}") from None


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

    async def flush(self) -> None:
        if not self.runs:
            return
        appends = [
            Append(
                stream,
                [NewEvent(x.event.type, x.event.data, x.event.metadata, x.event.id) for x in run],
                NO_STREAM if run[0].event.version == 0 else run[0].event.version - 1,
            )
            for stream, run in self.runs.items()
        ]
        try:
            results = await self.store.append_many(appends)
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
        self.runs, self.last, self.count, self.size = {}, None, 0, 0

    def _first(self) -> int:
        return next(iter(self.runs.values()))[0].number

    def _blame(self, error: ValueError) -> NoReturn:
        """Name the line of the event the store refused (checked one by one, only now)."""
        for stream, run in self.runs.items():
            for line in run:
                event = line.event
                try:
                    new = NewEvent(event.type, event.data, event.metadata, event.id)
                    prepare_append(stream, [new], NO_STREAM, self.store.max_event_size)
                except ValueError as refused:
                    raise TransferError(f"{self.where(line.number)}: {refused}") from error
        raise TransferError(f"{self.where(self._first())}: {error}") from error

    async def _read_back(
        self, results: list[AppendResult], lines: list[Line]
    ) -> list[RecordedEvent | None]:
        """The events as stored: one read of the positions just written; event by event
        only when a retried run had been written in other places before."""
        first, last = results[0].first_position, results[-1].last_position
        if last - first + 1 == len(lines):
            page = await self.store.read_page(after=first - 1, limit=len(lines))
            if [e.id for e in page.events] == [line.event.id for line in lines]:
                return list(page.events)
        return [await self.store.find_event(line.event.id) for line in lines]
