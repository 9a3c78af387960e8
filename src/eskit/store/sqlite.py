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
- Readers use their own connections in a small thread pool; WAL lets them run while the
  writer writes. The event loop never waits on SQLite.
- ``synchronous=FULL`` (the default) syncs the WAL at every commit: an acknowledged append
  survives power loss. ``NORMAL`` is an opt-in that may lose the last commits on an OS
  crash or power loss but never corrupts the file.
- SQLite's automatic WAL checkpoints are passive and starve under constant readers, so the
  writer also runs ``wal_checkpoint(RESTART)`` whenever it has been idle for a moment.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import importlib.resources
import os
import queue
import sqlite3
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from eskit.errors import StoreError, StreamDeleted
from eskit.store import rules
from eskit.store.base import EventStore
from eskit.store.model import AppendResult, ExpectedVersion, RecordedEvent, StreamMetadata
from eskit.store.rules import ExistingEvent, PreparedEvent

Synchronous = Literal["FULL", "NORMAL"]

_LIVE, _SOFT_DELETED, _TOMBSTONED = 0, 1, 2
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND: Final = dt.timedelta(microseconds=1)
_COLUMNS: Final = "id, stream, version, position, type, data, metadata, recorded_at"
_INSERT: Final = (
    "INSERT INTO events (id, stream, category, version, type, data, metadata, recorded_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_STOP: Final = object()


def _schema() -> str:
    return importlib.resources.files("eskit.store").joinpath("sqlite.sql").read_text()


def _micros(moment: dt.datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def new_event_ids(count: int) -> list[bytes]:
    """UUIDv7 bytes: time-ordered, so the id index grows at its end like the log does."""
    prefix = (time.time_ns() // 1_000_000).to_bytes(6, "big")
    rand = os.urandom(10 * count)
    ids = []
    for start in range(0, 10 * count, 10):
        r = rand[start : start + 10]
        ids.append(prefix + bytes((0x70 | (r[0] & 0x0F), r[1], 0x80 | (r[2] & 0x3F))) + r[3:])
    return ids


class _RowDecoder:
    """Turns rows into RecordedEvents; events of one commit share a timestamp, so the last
    datetime built is reused."""

    def __init__(self) -> None:
        self._micros = -1
        self._moment = _EPOCH
        self._decode = msgspec.json.decode

    def __call__(self, rows: list[Any]) -> list[RecordedEvent]:
        decode = self._decode
        events = []
        for id_, stream, version, position, type_, data, metadata, recorded in rows:
            if recorded != self._micros:
                self._micros, self._moment = recorded, _EPOCH + dt.timedelta(microseconds=recorded)
            events.append(
                RecordedEvent(
                    uuid.UUID(bytes=id_),
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


class _Operation:
    """A write queued for the writer thread, and where to send its outcome."""

    __slots__ = ("future", "loop", "run")

    def __init__(
        self,
        run: Callable[[sqlite3.Connection], Any],
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
    ) -> None:
        self.run, self.loop, self.future = run, loop, future


class _Writer(threading.Thread):
    """The only thread that writes: runs queued operations in group-committed transactions."""

    def __init__(
        self, path: str, synchronous: Synchronous, max_batch: int, idle_checkpoint: float
    ) -> None:
        super().__init__(name=f"eskit-sqlite-writer:{path}", daemon=True)
        self.queue: queue.SimpleQueue[_Operation | object] = queue.SimpleQueue()
        self.ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.on_commit: Callable[[], None] = lambda: None
        self.before_commit: Callable[[], None] | None = None  # fault injection for tests
        self._path = path
        self._synchronous = synchronous
        self._max_batch = max_batch
        self._idle_checkpoint = idle_checkpoint
        self._written_since_checkpoint = False

    def run(self) -> None:
        try:
            conn = _connect(self._path)
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA journal_size_limit=67108864")
            conn.executescript(_schema())
        except Exception as error:  # reported to open(); the thread has nothing left to do
            self.ready.set_exception(error)
            return
        self.ready.set_result(None)
        try:
            self._serve(conn)
        finally:
            conn.close()

    def _serve(self, conn: sqlite3.Connection) -> None:
        while True:
            try:
                first = self.queue.get(timeout=self._idle_checkpoint)
            except queue.Empty:
                self._checkpoint(conn)
                continue
            batch: list[_Operation] = []
            stop = first is _STOP
            if isinstance(first, _Operation):
                batch.append(first)
            while not stop and len(batch) < self._max_batch:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Operation):
                    batch.append(item)
                else:
                    stop = True
            if batch:
                self._commit(conn, batch)
            if stop:
                self._checkpoint(conn)
                return

    def _commit(self, conn: sqlite3.Connection, batch: list[_Operation]) -> None:
        outcomes: list[tuple[_Operation, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in batch:
                conn.execute("SAVEPOINT op")
                try:
                    outcomes.append((op, op.run(conn), None))
                except Exception as error:
                    conn.execute("ROLLBACK TO op")
                    outcomes.append((op, None, error))
                conn.execute("RELEASE op")
            if self.before_commit is not None:
                self.before_commit()
            conn.execute("COMMIT")
        except Exception as error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = StoreError(f"SQLite transaction failed, nothing of it was written: {error}")
            failure.__cause__ = error
            outcomes = [(op, None, failure) for op in batch]
        else:
            self._written_since_checkpoint = True
            self.on_commit()
        _answer(outcomes)

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        """Reset the WAL while idle; gives up at once if readers hold it (tried again later)."""
        if self._written_since_checkpoint:
            conn.execute("PRAGMA busy_timeout=50")
            busy = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
            conn.execute("PRAGMA busy_timeout=10000")
            self._written_since_checkpoint = bool(busy)


def _answer(outcomes: list[tuple[_Operation, Any, BaseException | None]]) -> None:
    """Hand results to the waiting coroutines, one thread-safe call per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Operation, Any, BaseException | None]]]
    by_loop = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_settle, items)


def _settle(items: list[tuple[_Operation, Any, BaseException | None]]) -> None:
    for op, value, error in items:
        if op.future.done():
            continue
        if error is None:
            op.future.set_result(value)
        else:
            op.future.set_exception(error)


def _connect(path: str, readonly: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=10000")
    if readonly:
        conn.execute("PRAGMA query_only=1")
    elif conn.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
        raise StoreError(f"{path}: SQLite could not switch to WAL mode")
    return conn


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
        self._writer: _Writer | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []

    @classmethod
    def from_url(cls, url: urllib.parse.SplitResult, **options: Any) -> SQLiteStore:
        """``sqlite:///relative.db`` or ``sqlite:////absolute.db``, options in the query."""
        if url.netloc:
            raise ValueError(
                f"sqlite URL has a host {url.netloc!r}: write sqlite:///path (three slashes)"
            )
        path = url.path[1:] if url.path.startswith("/") else url.path
        query = dict(urllib.parse.parse_qsl(url.query))
        if "synchronous" in query:
            options.setdefault("synchronous", query.pop("synchronous").upper())
        if query:
            raise ValueError(f"unknown sqlite URL options: {sorted(query)}")
        return cls(path, **options)

    # -- lifecycle ------------------------------------------------------------------------

    async def _open_backend(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.get_running_loop()
        writer = _Writer(str(self.path), self.synchronous, self._max_batch, self._idle_checkpoint)
        writer.on_commit = self._on_commit
        writer.start()
        await asyncio.wrap_future(writer.ready)
        self._writer = writer
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self._readers, thread_name_prefix=f"eskit-sqlite-reader:{self.path.name}"
        )

    def _on_commit(self) -> None:
        """Called by the writer thread after each COMMIT: wake this loop's subscriptions."""
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._notify_waiters)

    async def _close_backend(self) -> None:
        writer, pool = self._writer, self._pool
        self._writer = self._pool = None
        if writer is not None:
            writer.queue.put(_STOP)
            await asyncio.to_thread(writer.join)
        if pool is not None:
            await asyncio.to_thread(pool.shutdown)
        for conn in self._reader_conns:
            conn.close()
        self._reader_conns.clear()

    # -- plumbing ---------------------------------------------------------------------------

    async def _write(self, run: Callable[[sqlite3.Connection], Any]) -> Any:
        """Queue a write for the writer thread; return once its group has committed."""
        if self._writer is None:
            self._check_open()
            raise StoreError("the store is closing")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._writer.queue.put(_Operation(run, loop, future))
        return await future

    async def _read(self, run: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run a read on a reader thread with that thread's own connection."""
        if self._pool is None:
            self._check_open()
            raise StoreError("the store is closing")
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._in_reader, run)

    def _in_reader(self, run: Callable[[sqlite3.Connection], Any]) -> Any:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _connect(str(self.path), readonly=True)
            self._local.decode = _RowDecoder()
            self._reader_conns.append(conn)
        return run(conn)

    def _decode(self, rows: list[Any]) -> list[RecordedEvent]:
        decoder: _RowDecoder = self._local.decode
        return decoder(rows)

    # -- writes -----------------------------------------------------------------------------

    async def _append(
        self, stream: str, events: list[PreparedEvent], expected: ExpectedVersion
    ) -> AppendResult:
        now = _micros(self.clock())
        fresh = iter(new_event_ids(sum(e.id is None for e in events)))
        ids = [e.id.bytes if e.id is not None else next(fresh) for e in events]
        given = [e.id.bytes for e in events if e.id is not None]
        category = rules.category(stream)

        def run(conn: sqlite3.Connection) -> AppendResult:
            last, state = _stream_state(conn, stream)
            if given:
                existing = _existing(conn, ids)
                replayed = rules.replayed_append(stream, expected, existing)
                if replayed is not None:
                    return replayed
            rules.check_version_matches(stream, expected, None if state == _SOFT_DELETED else last)
            first = 0 if last is None else last + 1
            conn.executemany(
                _INSERT,
                [
                    (id_, stream, category, first + i, e.type, e.data, e.metadata, now)
                    for i, (id_, e) in enumerate(zip(ids, events, strict=True))
                ],
            )
            if state == _SOFT_DELETED:
                conn.execute("UPDATE streams SET state = ? WHERE stream = ?", (_LIVE, stream))
            position: int = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
            return AppendResult(first + len(events) - 1, position, len(events))

        result: AppendResult = await self._write(run)
        return result

    async def _delete(self, stream: str, expected: ExpectedVersion, hard: bool) -> None:
        def run(conn: sqlite3.Connection) -> None:
            last, state = _stream_state(conn, stream)
            rules.check_version_matches(stream, expected, None if state == _SOFT_DELETED else last)
            if hard:
                conn.execute(
                    "INSERT INTO streams (stream, state) VALUES (?1, ?2)"
                    " ON CONFLICT (stream) DO UPDATE SET state = ?2",
                    (stream, _TOMBSTONED),
                )
            elif last is not None and state != _SOFT_DELETED:
                conn.execute(
                    "INSERT INTO streams (stream, state, truncate_before) VALUES (?1, ?2, ?3)"
                    " ON CONFLICT (stream) DO UPDATE SET state = ?2, truncate_before = ?3",
                    (stream, _SOFT_DELETED, last + 1),
                )

        await self._write(run)

    async def _set_metadata(self, stream: str, metadata: StreamMetadata) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO streams (stream, truncate_before, max_count, max_age)"
                " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (stream) DO UPDATE SET"
                " truncate_before = ?2, max_count = ?3, max_age = ?4",
                (stream, metadata.truncate_before, metadata.max_count, metadata.max_age),
            )

        await self._write(run)

    # -- reads ------------------------------------------------------------------------------

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
            last, state = _stream_state(conn, stream)
            return None if state == _SOFT_DELETED else last

        result: int | None = await self._read(run)
        return result

    async def _last_position(self) -> int:
        result: int = await self._read(_head)
        return result

    async def _read_stream_page(
        self, stream: str, from_version: int | None, backwards: bool, count: int
    ) -> list[RecordedEvent]:
        now = self.clock()

        def run(conn: sqlite3.Connection) -> list[RecordedEvent]:
            rule = conn.execute(
                "SELECT state, truncate_before, max_count, max_age FROM streams WHERE stream = ?",
                (stream,),
            ).fetchone()
            first, oldest = 0, -1
            if rule is not None:
                if rule[0] == _TOMBSTONED:
                    raise StreamDeleted(stream)
                metadata = StreamMetadata(*rule[1:])
                last = conn.execute(
                    "SELECT max(version) FROM events WHERE stream = ?", (stream,)
                ).fetchone()[0]
                first = rules.first_visible_version(metadata, -1 if last is None else last)
                cutoff = rules.oldest_visible_time(metadata, now)
                oldest = -1 if cutoff is None else _micros(cutoff)
            if backwards:
                start = 2**62 if from_version is None else from_version
                sql = "version <= ? AND version >= ? AND recorded_at >= ? ORDER BY version DESC"
            else:
                start = max(first, from_version or 0)
                sql = "version >= ? AND version >= ? AND recorded_at >= ? ORDER BY version"
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM events WHERE stream = ? AND {sql} LIMIT ?",
                (stream, start, first, oldest, count),
            ).fetchall()
            return self._decode(rows)

        result: list[RecordedEvent] = await self._read(run)
        return result

    async def _read_all_page(
        self, after: int, count: int, types: tuple[str, ...] | None, category: str | None
    ) -> tuple[list[RecordedEvent], int]:
        where = ["position > ?", "position <= ?"]
        extra: list[Any] = []
        if types is not None:
            where.append(f"type IN ({', '.join('?' * len(types))})")
            extra.extend(types)
        if category is not None:
            where.append("category = ?")
            extra.append(category)
        sql = f"SELECT {_COLUMNS} FROM events WHERE {' AND '.join(where)} ORDER BY position LIMIT ?"

        def run(conn: sqlite3.Connection) -> tuple[list[RecordedEvent], int]:
            # The head is read first: every event at or below it is committed (commit order
            # is position order), so when the page is not full the log was searched up to it.
            head = _head(conn)
            rows = conn.execute(sql, (after, head, *extra, count)).fetchall()
            events = self._decode(rows)
            return events, (events[-1].position if len(events) == count else max(head, after))

        result: tuple[list[RecordedEvent], int] = await self._read(run)
        return result


def _head(conn: sqlite3.Connection) -> int:
    position: int | None = conn.execute("SELECT max(position) FROM events").fetchone()[0]
    return position or 0


def _stream_state(conn: sqlite3.Connection, stream: str) -> tuple[int | None, int]:
    """The stream's last version (None: no events) and its state (live, deleted...)."""
    last, state = conn.execute(
        "SELECT (SELECT max(version) FROM events WHERE stream = ?1),"
        " (SELECT state FROM streams WHERE stream = ?1)",
        (stream,),
    ).fetchone()
    if state == _TOMBSTONED:
        raise StreamDeleted(stream)
    return last, _LIVE if state is None else state


def _existing(conn: sqlite3.Connection, ids: Sequence[bytes]) -> list[ExistingEvent | None]:
    """Where each of ``ids`` was already written, if anywhere."""
    found = {
        row[0]: ExistingEvent(*row[1:])
        for row in conn.execute(
            f"SELECT id, stream, version, position FROM events"
            f" WHERE id IN ({', '.join('?' * len(ids))})",
            ids,
        )
    }
    return [found.get(id_) for id_ in ids]
