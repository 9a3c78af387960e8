"""Archives (``eskit archive``, ``eskit restore``): whole streams written to compressed files,
then scavenged from the store; brought back with their original ids and positions.

An archive is a directory: ``manifest.json`` and files ``{category}-{n:05d}.jsonl.zst``,
each one JSON object per event (``ArchivedEvent``: every stored column, the data and
metadata as the very text stored, the link in hex) compressed with Zstandard. The manifest
lists each file's streams, event count, first and last position and SHA-256, and is
rewritten (atomically) after each file is closed and synced, before that file's streams
are removed from the store (through the audited path of ``eskit.store.scavenge``, reason
``archived``). A restore checks every file's digest before it writes anything.

Why JSON Lines with zstd rather than Parquet: events are JSON already, so a line keeps
their text byte for byte (their links stay valid) without a schema for ``data``, which
differs by event type; it is written and read as a stream, a line at a time, in bounded
memory; ``zstdcat FILE | jq`` reads it without eskit; and ``zstandard`` is one small
dependency (the ``archive`` extra) where Parquet needs pyarrow. Parquet's strengths,
columnar scans and analytics, matter little for cold events that are restored or read by
stream.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import io
import os
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path
from typing import IO, Any, Final

import msgspec

from eskit.store import procedure, rules
from eskit.store.model import RecordedEvent
from eskit.store.procedure import Procedure
from eskit.store.scavenge import Scavenger, writable_scavenger

FORMAT: Final = "eskit-archive/1"
MANIFEST: Final = "manifest.json"
EVENTS_PER_FILE: Final = 100_000
PAGE: Final = 1000
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class ArchivedEvent(msgspec.Struct, frozen=True):
    """An event as an archive keeps it: as stored, the data and metadata as their text."""

    position: int
    id: str
    stream: str
    version: int
    type: str
    data: str
    metadata: str
    recorded_at: int
    """Microseconds since 1970-01-01 UTC."""
    link: str | None

    def row(self) -> tuple[Any, ...]:
        """As a backend's ``restore`` takes it (``scavenge.ROW_COLUMNS``)."""
        link = None if self.link is None else bytes.fromhex(self.link)
        return (
            self.position,
            uuid.UUID(self.id).bytes,
            self.stream,
            self.version,
            self.type,
            self.data,
            self.metadata,
            self.recorded_at,
            link,
        )

    def recorded(self) -> RecordedEvent:
        return RecordedEvent(
            uuid.UUID(self.id),
            self.stream,
            self.version,
            self.position,
            self.type,
            msgspec.json.decode(self.data),
            msgspec.json.decode(self.metadata),
            _EPOCH + dt.timedelta(microseconds=self.recorded_at),
        )


class ArchiveFile(msgspec.Struct, frozen=True):
    name: str
    events: int
    first_position: int
    last_position: int
    sha256: str
    streams: list[str]
    """The streams whose events the file holds (each stream is in one file, whole)."""


class Manifest(msgspec.Struct):
    format: str
    category: str
    cutoff: str
    """Streams whose last event was recorded before this time (ISO 8601) were archived."""
    created_at: str
    files: list[ArchiveFile] = msgspec.field(default_factory=list)


class ArchiveReport(msgspec.Struct):
    streams: int = 0
    """Streams written to the archive."""
    events: int = 0
    removed: int = 0
    """Events scavenged from the store once archived."""
    kept: list[str] = msgspec.field(default_factory=list)
    """Streams archived but left in the store: a registered consumer has not passed them."""
    files: int = 0
    seconds: float = 0.0


class RestoreReport(msgspec.Struct):
    events: int = 0
    """Events put back into the log."""
    present: int = 0
    """Events of the archive the log holds already (left alone)."""
    files: int = 0


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError:  # pragma: no cover - the archive extra is not installed
        raise ValueError("archives need zstandard: pip install 'eskit[archive]'") from None
    return zstandard


def parse_age(text: str) -> dt.timedelta:
    """``365d``, ``12h``, ``30m``, ``90s`` or ``2w`` as a duration; ``ValueError`` else."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit() or int(number) == 0:
        raise ValueError(f"an age is a positive whole number and a unit s, m, h, d or w: {text!r}")
    return dt.timedelta(seconds=int(number) * units[unit])


async def archive(
    store: Any,
    directory: str | os.PathLike[str],
    *,
    category: str,
    older_than: dt.timedelta,
    removed_by: str = "eskit archive",
    progress: Callable[[int], None] | None = None,
    events_per_file: int = EVENTS_PER_FILE,
) -> ArchiveReport:
    """Archive the live streams of ``category`` whose last event is older than
    ``older_than`` into ``directory`` (new or empty), then remove them from ``store``;
    ``progress`` gets the number of events written so far. A file is closed once it holds
    ``events_per_file`` events (or more: streams are not split). ``eskit.sync.archive`` is
    the same for a blocking store."""
    steps = archiving(store, directory, category, older_than, removed_by, progress, events_per_file)
    return await procedure.run_async(steps)


def archiving(
    store: Any,
    directory: str | os.PathLike[str],
    category: str,
    older_than: dt.timedelta,
    removed_by: str,
    progress: Callable[[int], None] | None,
    events_per_file: int,
) -> Procedure[ArchiveReport]:
    """``archive`` as a procedure (``eskit.store.procedure``) for either face's store."""
    rules.check_name(category, "category")
    if "-" in category:
        raise ValueError(f"a category has no '-': {category!r}")
    rules.check_count("events_per_file", events_per_file, minimum=1)
    if not isinstance(older_than, dt.timedelta) or older_than <= dt.timedelta(0):
        raise ValueError(f"older_than must be a positive timedelta, got {older_than!r}")
    return _archiving(
        store, Path(directory), category, older_than, removed_by, progress, events_per_file
    )


def _archiving(
    store: Any,
    folder: Path,
    category: str,
    older_than: dt.timedelta,
    removed_by: str,
    progress: Callable[[int], None] | None,
    events_per_file: int,
) -> Procedure[ArchiveReport]:
    zstd = _zstd()
    yield functools.partial(_prepare, folder)
    started, now = time.monotonic(), store.clock()
    cutoff = now - older_than
    manifest = Manifest(FORMAT, category, cutoff.isoformat(), now.isoformat())
    report = ArchiveReport()
    scavenger = writable_scavenger(store)
    try:
        writer = _Writer(folder, category, zstd, events_per_file)
        after: str | None = None
        while True:
            page = yield functools.partial(store.engine.list_streams, category, after, PAGE)
            for info in page:
                if info.status != "live" or info.last_recorded_at >= cutoff:
                    continue
                yield functools.partial(_write_stream, scavenger, writer, info.stream)
                report.streams += 1
                report.events = writer.total
                if progress is not None:
                    progress(writer.total)
                if writer.full:
                    yield from _finish(scavenger, writer, manifest, report, now, removed_by)
            if len(page) < PAGE:
                break
            after = page[-1].stream
        yield from _finish(scavenger, writer, manifest, report, now, removed_by)
    finally:
        yield scavenger.close
    report.files = len(manifest.files)
    report.seconds = time.monotonic() - started
    return report


def _prepare(folder: Path) -> None:
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"{folder} is not empty: archive into a new directory")
    folder.mkdir(parents=True, exist_ok=True)


def _write_stream(scavenger: Scavenger, writer: _Writer, stream: str) -> None:
    """Copy the stream's events into the writer's current file, a page at a time."""
    after = -1
    while True:
        rows = scavenger.rows(stream, after, PAGE)
        for row in rows:
            writer.write(row)
        if rows:
            after = writer.streams[stream] = rows[-1][3]
        if len(rows) < PAGE:
            return


def _finish(
    scavenger: Scavenger,
    writer: _Writer,
    manifest: Manifest,
    report: ArchiveReport,
    now: dt.datetime,
    by: str,
) -> Procedure[None]:
    """Close the current file, record it in the manifest, then remove its streams."""
    written = yield writer.close
    if written is None:
        return
    manifest.files.append(written)
    yield functools.partial(_save, writer.folder, manifest)
    for stream in written.streams:
        version = writer.done[stream]
        removed = yield functools.partial(scavenger.remove_through, stream, version, now, by)
        if removed is None:
            report.kept.append(stream)
        else:
            report.removed += removed


class _Writer:
    """Writes events into files of at most ``EVENTS_PER_FILE`` events (whole streams)."""

    def __init__(self, folder: Path, category: str, zstd: Any, per_file: int) -> None:
        self.folder, self.category, self.zstd, self.per_file = folder, category, zstd, per_file
        self.total, self.files = 0, 0
        self.streams: dict[str, int] = {}
        """The current file's streams and the last version written of each."""
        self.done: dict[str, int] = {}
        self._raw: IO[bytes] | None = None
        self._out: Any = None
        self._count = 0
        self._first = self._last = 0

    @property
    def full(self) -> bool:
        return self._count >= self.per_file

    def write(self, row: tuple[Any, ...]) -> None:
        if self._out is None:
            self.files += 1
            self._raw = open(self._path(), "xb")  # noqa: SIM115 - closed in close()
            self._out = self.zstd.ZstdCompressor(level=10).stream_writer(self._raw, closefd=False)
            self._first = row[0]
        position, id_, stream, version, type_, data, metadata, at, link = row
        event = ArchivedEvent(
            position,
            str(uuid.UUID(bytes=id_)),
            stream,
            version,
            type_,
            data,
            metadata,
            at,
            None if link is None else bytes(link).hex(),
        )
        self._out.write(msgspec.json.encode(event) + b"\n")
        self._count += 1
        self.total += 1
        self._last = max(self._last, position)
        self._first = min(self._first, position)

    def close(self) -> ArchiveFile | None:
        if self._out is None or self._raw is None:
            return None
        self._out.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        path = self._path()
        written = ArchiveFile(
            path.name, self._count, self._first, self._last, _digest(path), list(self.streams)
        )
        self.done = self.streams
        self.streams, self._out, self._raw, self._count, self._last = {}, None, None, 0, 0
        return written

    def _path(self) -> Path:
        return self.folder / f"{self.category}-{self.files:05d}.jsonl.zst"


def _save(folder: Path, manifest: Manifest) -> None:
    """Write the manifest atomically (a new file renamed over the old one), synced."""
    temporary = folder / (MANIFEST + ".new")
    with open(temporary, "wb") as out:
        out.write(msgspec.json.format(msgspec.json.encode(manifest)))
        out.flush()
        os.fsync(out.fileno())
    temporary.replace(folder / MANIFEST)


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def load_manifest(directory: str | os.PathLike[str]) -> Manifest:
    """The archive's manifest; ``ValueError`` if the directory holds none or another format."""
    path = Path(directory) / MANIFEST
    try:
        manifest = msgspec.json.decode(path.read_bytes(), type=Manifest)
    except FileNotFoundError:
        raise ValueError(f"{path} is missing: {directory} is no eskit archive") from None
    except msgspec.ValidationError as error:
        raise ValueError(f"{path} is not an eskit archive manifest: {error}") from None
    if manifest.format != FORMAT:
        raise ValueError(f"{path}: format {manifest.format!r}, this eskit reads {FORMAT!r}")
    return manifest


def check_archive(directory: str | os.PathLike[str]) -> Manifest:
    """The manifest, once every file listed is found with its digest; ``ValueError`` naming
    the first file missing or changed."""
    manifest = load_manifest(directory)
    for file in manifest.files:
        path = Path(directory) / file.name
        if not path.exists():
            raise ValueError(f"{path} is listed in the manifest but missing")
        if _digest(path) != file.sha256:
            raise ValueError(f"{path} does not match its SHA-256 in the manifest: changed")
    return manifest


def archived_events(
    directory: str | os.PathLike[str], manifest: Manifest, stream: str | None = None
) -> Iterator[ArchivedEvent]:
    """The archive's events (only ``stream``'s if given), file by file, a line at a time."""
    zstd = _zstd()
    decode = msgspec.json.Decoder(ArchivedEvent).decode
    for file in manifest.files:
        if stream is not None and stream not in file.streams:
            continue
        with open(Path(directory) / file.name, "rb") as raw:
            lines = io.BufferedReader(zstd.ZstdDecompressor().stream_reader(raw))
            for line in lines:
                event = decode(line)
                if stream is None or event.stream == stream:
                    yield event


async def read_stream_through(
    store: Any, stream: str, directory: str | os.PathLike[str], from_version: int | None = None
) -> AsyncGenerator[RecordedEvent, None]:
    """``store.read_stream(stream, from_version)`` read through to the archive in
    ``directory``: the archived events first, then the store's from the next version on.
    ``eskit.sync.read_stream_through`` is the same for a blocking store."""
    first = first_version(from_version)
    manifest = await asyncio.to_thread(load_manifest, directory)
    last = first - 1
    events = archived_events(directory, manifest, stream)
    while True:
        page = await asyncio.to_thread(_take, events, PAGE)
        for event in page:
            if event.version >= first:
                last = event.version
                yield event.recorded()
        if len(page) < PAGE:
            break
    async for recorded in store.read_stream(stream, from_version=last + 1):
        yield recorded


def first_version(from_version: int | None) -> int:
    """The first version a read through shows (``TypeError``, ``ValueError`` for a bad
    ``from_version``, as ``read_stream`` raises)."""
    if from_version is None:
        return 0
    rules.check_count("from_version", from_version)
    return from_version


def _take(events: Iterator[ArchivedEvent], count: int) -> list[ArchivedEvent]:
    taken = []
    for event in events:
        taken.append(event)
        if len(taken) == count:
            break
    return taken


async def restore(
    store: Any,
    directory: str | os.PathLike[str],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> RestoreReport:
    """Put the archive's events back into ``store`` at their original positions, with
    their ids, links and times, after checking every file's digest. Events the log holds
    already are left alone, so a restore may be run again. Subscribers past those
    positions are not sent them again; a rebuild from the start sees them.
    ``eskit.sync.restore`` is the same for a blocking store."""
    return await procedure.run_async(restoring(store, directory, progress))


def restoring(
    store: Any,
    directory: str | os.PathLike[str],
    progress: Callable[[int, int], None] | None,
) -> Procedure[RestoreReport]:
    """``restore`` as a procedure (``eskit.store.procedure``) for either face's store."""
    manifest = yield functools.partial(check_archive, directory)
    total = sum(file.events for file in manifest.files)
    scavenger = writable_scavenger(store)
    report = RestoreReport(files=len(manifest.files))
    try:
        events = archived_events(directory, manifest)
        while True:
            page = yield functools.partial(_take, events, PAGE)
            if page:
                added = yield functools.partial(scavenger.restore, [e.row() for e in page])
                report.events += added
                report.present += len(page) - added
            if progress is not None:
                progress(report.events + report.present, total)
            if len(page) < PAGE:
                break
    finally:
        yield scavenger.close
    return report
