"""The embedded SQLite backend: one file, WAL, a single writer thread with group commit.

How it stays correct and fast:

- Exactly one thread owns the write connection. Writes are queued to it as operations; it
  takes every operation waiting in the queue, runs them in one ``BEGIN IMMEDIATE``
  transaction, each inside its own SAVEPOINT (a failing operation, e.g. a wrong expected
  version, is rolled back alone), and COMMITs once: one fsync for the whole group. Callers
  are answered only after COMMIT returned; if COMMIT fails, every caller of the group gets
  the error and nothing of the group is visible.
- ``BEGIN IMMEDIATE`` takes the write lock up front, so a transaction never has to upgrade
  from reading to writing (which fails with SQLITE_BUSY without waiting). Another process
  writing the same file therefore waits its turn instead of failing.
- Positions come from AUTOINCREMENT under that write lock, so commit order is position
  order: a reader that saw position p can never later find a new event below p.
- Readers use their own connections in a few reader threads that answer queued reads in
  batches (one wake-up of the event loop per batch); WAL lets them run while the
  writer writes. The event loop never waits on SQLite.
- ``synchronous=FULL`` (the default) syncs the WAL at every commit: an acknowledged append
  survives power loss. ``NORMAL`` is an opt-in that may lose the last commits on an OS
  crash or power loss but never corrupts the file.
- SQLite's automatic WAL checkpoints are passive and starve under constant readers, so the
  writer also runs ``wal_checkpoint(RESTART)`` every 100 commits and
  ``wal_checkpoint(TRUNCATE)`` whenever it has been idle for ``idle_checkpoint`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import os
import queue
import sqlite3
import threading
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec

from eskit.errors import StoreError, StoreNotFound, StreamDeleted
from eskit.store import rules, sqlite_schema
from eskit.store.base import EventStore
from eskit.store.chain import ChainRow, ChainStart, audit_key
from eskit.store.engine import versions_up_to
from eskit.store.migrations import Migrated
from eskit.store.model import (
    AppendResult,
    ExpectedVersion,
    Page,
    RecordedEvent,
    Snapshot,
    StreamInfo,
    StreamMetadata,
    StreamStatus,
)
from eskit.store.planner import SOFT_DELETED, TOMBSTONED
from eskit.store.rules import PreparedAppend, PreparedSnapshot, clamp
from eskit.store.sqlite_chain import read_chain_start
from eskit.store.sqlite_reader import Reader, check_store
from eskit.store.sqlite_reader import stop as stop_readers
from eskit.store.sqlite_writer import (
    STOP,
    AppendRequest,
    InlineHook,
    Operation,
    Request,
    Synchronous,
    Writer,
    connect,
    micros,
    moment,
    stream_state,
)

if TYPE_CHECKING:
    from eskit.projections.database import StoreDatabase

Future = asyncio.Future[Any]
T = TypeVar("T")
# The id is read as a quoted hex string so that msgspec builds the UUID in C: five times
# cheaper than uuid.UUID(bytes=...), which dominated the cost of a read.
_STATUSES: Final[dict[int | None, StreamStatus]] = {
    None: "live",
    0: "live",
    SOFT_DELETED: "deleted",
    TOMBSTONED: "tombstoned",
}
_COLUMNS: Final = "id, stream, version, position, type, data, metadata, recorded_at"
_BIN16: Final = b"\xc4\x10"  # msgpack: 16 bytes of binary follow


class _RowDecoder:
    """Turns rows into RecordedEvents.

    The ids of a page become UUIDs in one call: their 16 bytes are framed as a msgpack
    array of binaries that msgspec decodes in C (``uuid.UUID(bytes=...)`` costs 1.8 µs an
    id, SQL ``hex(id)`` about 1 µs a row). Events of one commit share a timestamp, so the
    last datetime built is reused.
    """

    def __init__(self) -> None:
        self._micros = -1
        self._moment = moment(0)
        self._decode = msgspec.json.decode
        self._decode_ids = msgspec.msgpack.Decoder(list[uuid.UUID]).decode

    def __call__(self, rows: list[Any]) -> list[RecordedEvent]:
        decode = self._decode
        ids = self._decode_ids(
            b"\xdd" + len(rows).to_bytes(4, "big") + _BIN16 + _BIN16.join([row[0] for row in rows])
            if rows
            else b"\x90"
        )
        events = []
        for id_, (_, stream, version, position, type_, data, metadata, recorded) in zip(
            ids, rows, strict=True
        ):
            if recorded != self._micros:
                self._micros, self._moment = recorded, moment(recorded)
            events.append(
                RecordedEvent(
                    id_,
                    stream,
                    version,
                    position,
                    type_,
                    decode(data),
                    decode(metadata),
                    self._moment,
                )
            )
        return events


class SQLiteStore(EventStore):
    """Events in one SQLite file: durable, fast, safe to read from other processes."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "FULL",
        readers: int = 2,
        max_batch: int = 256,
        idle_checkpoint: float = 1.0,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if str(synchronous).upper() not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        if str(path) in ("", ":memory:"):
            raise ValueError("SQLiteStore needs a file path; use memory:// for an in-memory store")
        self.path = Path(path)
        self.synchronous: Synchronous = "FULL" if str(synchronous).upper() == "FULL" else "NORMAL"
        self._readers = readers
        self._max_batch = max_batch
        self._idle_checkpoint = idle_checkpoint
        self._writer: Writer | None = None
        self._read_queue: queue.SimpleQueue[Operation | object] = queue.SimpleQueue()
        self._reader_threads: list[Reader] = []
        self._local = threading.local()

    @classmethod
    def from_url(cls, url: urllib.parse.SplitResult, **options: Any) -> SQLiteStore:
        """``sqlite:///relative.db`` or ``sqlite:////absolute.db``, options in the query."""
        if url.netloc:
            raise ValueError(
                f"sqlite URL has a host {url.netloc!r}: write sqlite:///path (three slashes)"
            )
        path = urllib.parse.unquote(url.path[1:] if url.path.startswith("/") else url.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if "synchronous" in query:
            options.setdefault("synchronous", query.pop("synchronous").upper())
        if query:
            raise ValueError(f"unknown sqlite URL options: {sorted(query)}")
        return cls(path, **options)

    # -- capabilities -----------------------------------------------------------------------

    def read_model_database(self) -> StoreDatabase:
        """The store's own file: projection batches run in its group commits."""
        from eskit.projections.database import StoreDatabase  # projections build on stores

        return StoreDatabase(self)

    async def migrate(self, app_role: str | None = None, login: bool = False) -> Migrated:
        """Apply the pending migrations to the file (created if missing)."""
        self._check_no_role(app_role)
        return await asyncio.to_thread(self._migrate_file)

    def _migrate_file(self) -> Migrated:
        path = str(self.path)
        try:
            with contextlib.closing(connect(path)) as conn:
                applied = sqlite_schema.migrate(conn, path, audit_key())
                version = sqlite_schema.version(conn)
        except sqlite3.Error as error:
            raise StoreError(f"migrating {path} failed, nothing was changed: {error}") from error
        return Migrated(path, [(m.version, m.name, None) for m in applied], version)

    # -- lifecycle ------------------------------------------------------------------------

    async def _open_backend(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.readonly:  # only readers, on a file that must already be a store
            if not await asyncio.to_thread(self.path.is_file):
                raise StoreNotFound(str(self.path.absolute()))
        else:
            await self._start_writer()
        readers = [
            Reader(str(self.path), self._read_queue, self._start_reader)
            for _ in range(self._readers)
        ]
        for reader in readers:
            reader.start()
        self._reader_threads = readers
        try:
            for reader in readers:
                await asyncio.wrap_future(reader.ready)
            if self.readonly:
                await self._read(functools.partial(check_store, path=str(self.path.absolute())))
        except BaseException:  # a reader could not connect: stop every thread started
            await self._close_backend()
            raise

    async def _start_writer(self) -> None:
        """Create the file (and its folder) if needed, apply the schema, start the writer."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = Writer(str(self.path), self.synchronous, self._max_batch, self._idle_checkpoint)
        writer.after_commit = (self._loop, self._notify_waiters)
        writer.clock = lambda: micros(self.clock())
        writer.audit_key = audit_key()
        writer.start()
        await asyncio.wrap_future(writer.ready)
        self._writer = writer

    def _start_reader(self) -> None:
        """In each reader thread: its own row decoder (it caches the last timestamp)."""
        self._local.decode = _RowDecoder()

    async def _close_backend(self) -> None:
        writer, readers = self._writer, self._reader_threads
        self._writer, self._reader_threads = None, []
        if writer is not None:
            writer.queue.put(STOP)
            await asyncio.to_thread(writer.join)
        stop_readers(self._read_queue, len(readers))
        for reader in readers:
            await asyncio.to_thread(reader.join)

    # -- plumbing ---------------------------------------------------------------------------

    async def _submit(self, request: Callable[[asyncio.AbstractEventLoop, Future], Request]) -> Any:
        """Queue a request for the writer thread; return once its group has committed."""
        if self._writer is None:
            self._check_open()
            self._check_writable()
            raise StoreError("the store is closing")
        loop = asyncio.get_running_loop()
        future: Future = loop.create_future()
        self._writer.queue.put(request(loop, future))
        return await future

    async def _write(self, run: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``run`` on the write connection inside the next group transaction."""
        return await self._submit(functools.partial(Operation, run))

    async def _read(self, run: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run a read on a reader thread with that thread's own connection."""
        if not self._reader_threads:
            self._check_open()
            raise StoreError("the store is closing")
        loop = asyncio.get_running_loop()
        future: Future = loop.create_future()
        self._read_queue.put(Operation(run, loop, future))
        return await future

    def _decode(self, rows: list[Any]) -> list[RecordedEvent]:
        decoder: _RowDecoder | None = getattr(self._local, "decode", None)
        if decoder is None:  # the writer thread, running an operation that reads events
            decoder = self._local.decode = _RowDecoder()
        return decoder(rows)

    # -- for read models kept in the store's file (projections) ----------------------------

    async def write_transaction(self, run: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``run(conn)`` in the writer's next transaction, in a SAVEPOINT of its own.

        What ``run`` writes commits with the appends of the same group (one fsync); if it
        raises, its writes are rolled back and the error is raised here. It runs on the
        writer thread: keep it short, it holds up appends.
        """
        result: T = await self._write(run)
        return result

    async def read_transaction(self, run: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``run(conn)`` on a reader connection: one consistent snapshot of the file."""
        result: T = await self._read(run)
        return result

    async def add_inline(
        self, hook: InlineHook, first: Callable[[sqlite3.Connection], None]
    ) -> None:
        """Run ``first`` (e.g. catch a projection up) and start running ``hook`` in every
        append's transaction, in one write transaction: no append can fall between."""
        writer = self._writer

        def run(conn: sqlite3.Connection) -> None:
            first(conn)
            assert writer is not None
            writer.inline.append(hook)

        try:
            await self._write(run)
        except BaseException:
            await self.remove_inline(hook)  # the transaction may have failed after `run`
            raise

    async def remove_inline(self, hook: InlineHook) -> None:
        """Stop running ``hook`` in appends (from the next transaction on)."""
        writer = self._writer
        if writer is None:
            return

        def run(conn: sqlite3.Connection) -> None:
            if hook in writer.inline:
                writer.inline.remove(hook)

        await self._write(run)

    # -- writes -----------------------------------------------------------------------------

    async def _append_many(self, appends: list[PreparedAppend]) -> list[AppendResult]:
        results: list[AppendResult] = await self._submit(functools.partial(AppendRequest, appends))
        return results

    async def _delete(self, stream: str, expected: ExpectedVersion, hard: bool) -> None:
        def run(conn: sqlite3.Connection) -> None:
            last, state = stream_state(conn, stream)
            rules.check_version_matches(stream, expected, last, state == SOFT_DELETED)
            if hard:
                conn.execute(
                    "INSERT INTO streams (stream, state) VALUES (?1, ?2)"
                    " ON CONFLICT (stream) DO UPDATE SET state = ?2",
                    (stream, TOMBSTONED),
                )
                conn.execute("DELETE FROM snapshots WHERE stream = ?", (stream,))  # unreachable
            elif last is not None and state != SOFT_DELETED:
                conn.execute(
                    "INSERT INTO streams (stream, state, truncate_before) VALUES (?1, ?2, ?3)"
                    " ON CONFLICT (stream) DO UPDATE SET state = ?2, truncate_before = ?3",
                    (stream, SOFT_DELETED, last + 1),
                )

        await self._write(run)

    async def _set_metadata(self, stream: str, metadata: StreamMetadata) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO streams (stream, truncate_before, max_count, max_age)"
                " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (stream) DO UPDATE SET"
                " truncate_before = ?2, max_count = ?3, max_age = ?4",
                (stream, *rules.stored_metadata(metadata)),
            )

        await self._write(run)

    async def _save_snapshot(self, snapshot: PreparedSnapshot, recorded_at: dt.datetime) -> None:
        stream, snapshot_version = snapshot.stream, snapshot.snapshot_version

        def run(conn: sqlite3.Connection) -> None:
            stream_state(conn, stream)  # raises StreamDeleted before anything is written
            conn.execute(
                "INSERT INTO snapshots (stream, snapshot_version, version, state, recorded_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (stream, snapshot_version, version)"
                " DO UPDATE SET state = excluded.state, recorded_at = excluded.recorded_at",
                (stream, snapshot_version, snapshot.version, snapshot.state, micros(recorded_at)),
            )
            conn.execute(  # retention: below the newest SNAPSHOTS_KEPT versions (none if fewer)
                "DELETE FROM snapshots WHERE stream = ?1 AND snapshot_version = ?2"
                " AND version < (SELECT version FROM snapshots"
                "  WHERE stream = ?1 AND snapshot_version = ?2"
                "  ORDER BY version DESC LIMIT 1 OFFSET ?3)",
                (stream, snapshot_version, rules.SNAPSHOTS_KEPT - 1),
            )

        await self._write(run)

    # -- reads ------------------------------------------------------------------------------

    async def _load_snapshot(
        self, stream: str, snapshot_version: int, max_version: int
    ) -> Snapshot | None:
        row = await self._read(
            lambda conn: _snapshot_row(conn, stream, snapshot_version, max_version)
        )
        return _snapshot(stream, snapshot_version, row)

    async def _snapshot_and_page(
        self, stream: str, snapshot_version: int, max_version: int, count: int
    ) -> tuple[Snapshot | None, list[RecordedEvent]]:
        """Both in one visit to a reader thread (one hand-over instead of two)."""
        now = self.clock()

        def run(conn: sqlite3.Connection) -> tuple[Any, list[RecordedEvent]]:
            row = _snapshot_row(conn, stream, snapshot_version, max_version)
            start = None if row is None else row[0] + 1
            wanted = min(count, versions_up_to(max_version, start))
            return row, self._stream_page_in(conn, stream, start, False, wanted, now)

        row, page = await self._read(run)
        return _snapshot(stream, snapshot_version, row), page

    async def _get_metadata(self, stream: str) -> StreamMetadata:
        def run(conn: sqlite3.Connection) -> StreamMetadata:
            row = conn.execute(
                "SELECT truncate_before, max_count, max_age FROM streams WHERE stream = ?",
                (stream,),
            ).fetchone()
            return StreamMetadata() if row is None else StreamMetadata(*row)

        result: StreamMetadata = await self._read(run)
        return result

    async def _stream_version(self, stream: str) -> int | None:
        def run(conn: sqlite3.Connection) -> int | None:
            last, state = stream_state(conn, stream)
            return None if state == SOFT_DELETED else last

        result: int | None = await self._read(run)
        return result

    async def _find_event(self, event_id: uuid.UUID) -> RecordedEvent | None:
        def run(conn: sqlite3.Connection) -> RecordedEvent | None:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM events WHERE id = ?", (event_id.bytes,)
            ).fetchall()
            return self._decode(rows)[0] if rows else None

        found: RecordedEvent | None = await self._read(run)
        return found

    async def _chain_page(self, after: int, limit: int) -> list[ChainRow]:
        def run(conn: sqlite3.Connection) -> list[ChainRow]:
            rows = conn.execute(
                "SELECT position, stream, category, version, id, type, data, metadata,"
                " recorded_at, hash FROM events WHERE position > ? ORDER BY position LIMIT ?",
                (after, limit),
            ).fetchall()
            return [ChainRow(*row) for row in rows]

        result: list[ChainRow] = await self._read(run)
        return result

    async def _chain_start(self) -> ChainStart | None:
        found: ChainStart | None = await self._read(read_chain_start)
        return found

    async def _last_position(self) -> int:
        result: int = await self._read(_head)
        return result

    async def _list_streams(
        self, category: str | None, after: str | None, limit: int
    ) -> list[StreamInfo]:
        """Walks the (stream, version) index from name to name: each step is one seek to the
        next stream and one to its last version, so long streams cost no more than short
        ones (a GROUP BY would read every version of every stream listed)."""
        first, step = "stream > ?1", "stream > names.stream"
        if category is not None:
            # A category's streams are `c` and `c-...`: all between `c` and `c.` ('.' follows
            # '-'); the category column weeds out the rare names like `c!x` in between (its
            # unary + keeps SQLite on the stream index rather than scanning the category's).
            if after is None or after < category:
                first = "stream >= ?2"
            in_category = " AND stream < ?2 || '.' AND +category = ?2"
            first, step = first + in_category, step + in_category
        sql = f"""
            WITH RECURSIVE names(stream) AS (
                SELECT (SELECT min(stream) FROM events WHERE {first})
                UNION ALL
                SELECT (SELECT min(stream) FROM events WHERE {step})
                FROM names WHERE names.stream IS NOT NULL
                LIMIT ?3
            )
            SELECT e.stream, e.version, e.position, e.type, e.recorded_at, s.state
            FROM names
            JOIN events AS e ON e.stream = names.stream
                AND e.version = (SELECT max(version) FROM events WHERE stream = names.stream)
            LEFT JOIN streams AS s ON s.stream = names.stream
            ORDER BY e.stream"""

        def run(conn: sqlite3.Connection) -> list[StreamInfo]:
            rows = conn.execute(sql, (after or "", category, limit)).fetchall()
            return [
                StreamInfo(stream, version, position, type_, moment(at), _STATUSES[state])
                for stream, version, position, type_, at, state in rows
            ]

        result: list[StreamInfo] = await self._read(run)
        return result

    async def _read_stream_page(
        self, stream: str, from_version: int | None, backwards: bool, count: int
    ) -> list[RecordedEvent]:
        now = self.clock()
        result: list[RecordedEvent] = await self._read(
            lambda conn: self._stream_page_in(conn, stream, from_version, backwards, count, now)
        )
        return result

    def _stream_page_in(
        self,
        conn: sqlite3.Connection,
        stream: str,
        from_version: int | None,
        backwards: bool,
        count: int,
        now: dt.datetime,
    ) -> list[RecordedEvent]:
        metadata = _read_rules(conn, stream)
        last = None
        if metadata is not None:  # only then does the window depend on the last version
            last = conn.execute(
                "SELECT max(version) FROM events WHERE stream = ?", (stream,)
            ).fetchone()[0]
        start, first, oldest = rules.read_bounds(metadata, last, now, from_version, backwards)
        compare, descending = ("<=", " DESC") if backwards else (">=", "")
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM events WHERE stream = ? AND version {compare} ?"
            f" AND version >= ? AND recorded_at >= ? ORDER BY version{descending}"
            " LIMIT ?",
            (stream, start, first, -1 if oldest is None else micros(oldest), count),
        ).fetchall()
        return self._decode(rows)

    async def _read_all_page(
        self, after: int, count: int, types: tuple[str, ...] | None, category: str | None
    ) -> tuple[list[RecordedEvent], int]:
        page = await self._read(lambda conn: self.page_in(conn, after, count, types, category))
        return page.events, page.next_after

    def page_in(
        self,
        conn: sqlite3.Connection,
        after: int,
        limit: int,
        types: tuple[str, ...] | None = None,
        category: str | None = None,
    ) -> Page:
        """``read_page`` with ``conn``, inside a transaction the caller runs (a projection
        reads its batch in the very write transaction that applies it: one round trip)."""
        where = ["position > ?", "position <= ?"]
        extra: list[Any] = []
        if types is not None:
            where.append(f"type IN ({', '.join('?' * len(types))})")
            extra.extend(types)
        if category is not None:
            where.append("category = ?")
            extra.append(category)
        sql = f"SELECT {_COLUMNS} FROM events WHERE {' AND '.join(where)} ORDER BY position LIMIT ?"
        # The head is read first: every event at or below it is committed (commit order is
        # position order), so when the page is not full the log was searched up to it.
        head = _head(conn)
        rows = conn.execute(sql, (clamp(after), head, *extra, limit)).fetchall()
        events = self._decode(rows)
        return Page(events, events[-1].position if len(events) == limit else max(head, after))


def _snapshot_row(
    conn: sqlite3.Connection, stream: str, snapshot_version: int, max_version: int
) -> tuple[int, str, int] | None:
    """The newest visible snapshot's version, state and time; raises if tombstoned."""
    metadata = _read_rules(conn, stream)
    lowest = 0 if metadata is None else rules.lowest_snapshot_version(metadata)
    row: tuple[int, str, int] | None = conn.execute(
        "SELECT version, state, recorded_at FROM snapshots"
        " WHERE stream = ? AND snapshot_version = ? AND version <= ? AND version >= ?"
        " ORDER BY version DESC LIMIT 1",
        (stream, snapshot_version, max_version, lowest),
    ).fetchone()
    return row


def _snapshot(
    stream: str, snapshot_version: int, row: tuple[int, str, int] | None
) -> Snapshot | None:
    if row is None:
        return None
    version, state, recorded_at = row
    return Snapshot(
        stream, version, snapshot_version, msgspec.json.decode(state), moment(recorded_at)
    )


def _read_rules(conn: sqlite3.Connection, stream: str) -> StreamMetadata | None:
    """The stream's read rules, None if it has no row (most streams); raises if tombstoned."""
    row = conn.execute(
        "SELECT state, truncate_before, max_count, max_age FROM streams WHERE stream = ?",
        (stream,),
    ).fetchone()
    if row is None:
        return None
    if row[0] == TOMBSTONED:
        raise StreamDeleted(stream)
    return StreamMetadata(*row[1:])


def _head(conn: sqlite3.Connection) -> int:
    position: int | None = conn.execute("SELECT max(position) FROM events").fetchone()[0]
    return position or 0
