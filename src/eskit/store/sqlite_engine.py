"""The SQLite engine: one file, WAL, writes in group commits from any thread, reads in the
caller's thread.

How it stays correct and fast:

- One write connection, used only by the thread leading the ``GroupCommit``: a caller that
  finds nobody writing commits in its own thread (no hand-off; from an event loop, a small
  append does so when the loop has nothing else to run: ``loop_commits``); callers arriving
  meanwhile are committed together by the next leader, in one ``BEGIN IMMEDIATE``
  transaction, each request checked on its own (``sqlite_writer``). Nobody is answered
  before COMMIT returned.
- ``BEGIN IMMEDIATE`` takes the write lock up front, so a transaction never has to upgrade
  from reading to writing (which fails with SQLITE_BUSY without waiting). Another process
  writing the same file therefore waits its turn instead of failing.
- Positions are given under that write lock, so commit order is position order: a reader
  that saw position p can never later find a new event below p.
- Reads check a connection out of a pool and run in the caller's thread (``sqlite_reader``);
  WAL lets them run while a group commits.
- ``synchronous=FULL`` (the default) syncs the WAL at every commit: an acknowledged append
  survives power loss. ``NORMAL`` is an opt-in that may lose the last commits on an OS
  crash or power loss but never corrupts the file.
- SQLite's automatic WAL checkpoints are passive and starve under constant readers, so the
  leader also runs ``wal_checkpoint(RESTART)`` every 100 commits, and the group's committer
  thread ``wal_checkpoint(TRUNCATE)`` once no commit came for ``idle_checkpoint`` seconds,
  as does ``close``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import sqlite3
import threading
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, TypeVar

from eskit.errors import StoreClosed, StoreError, StoreNotFound
from eskit.store import rules
from eskit.store import sqlite_reads as reads
from eskit.store.chain import ChainRow, ChainStart, audit_key
from eskit.store.engine import Clock, Engine, versions_up_to
from eskit.store.group_commit import GroupCommit
from eskit.store.model import (
    AppendResult,
    ExpectedVersion,
    Page,
    RecordedEvent,
    Snapshot,
    StreamInfo,
    StreamMetadata,
)
from eskit.store.planner import SOFT_DELETED, TOMBSTONED
from eskit.store.rules import PreparedAppend, PreparedSnapshot
from eskit.store.scavenge import SQLITE, Removal, find_removed
from eskit.store.sqlite_chain import read_chain_start
from eskit.store.sqlite_reader import Busy, Reader, ReaderPool, check_store
from eskit.store.sqlite_writer import (
    InlineHook,
    Operation,
    Request,
    Synchronous,
    Writer,
    micros,
    stream_state,
)

T = TypeVar("T")
READERS: Final = 8
"""Reader connections at most; more readers at once wait for one."""
SHORT_READS: Final = frozenset(
    {
        "get_metadata",
        "load_snapshot",
        "snapshot_and_page",
        "events_after",
        "stream_version",
        "last_position",
    }
)
"""The reads ``short_reads_on_loop`` makes on the event loop: an index probe or two and at
most one page of a stream."""


LOOP_EVENTS: Final = 16
"""The most events an append may hold to be committed on the event loop (``loop_commits``):
its commit stays well under a millisecond (a one-event append commits in ~0.25 ms here)."""


class _OnLoop(threading.local):
    """Per thread: whether a short read runs on an event loop (it must not wait for a
    reader). A class default, not ``getattr(local, name, default)``, which raises and
    catches an AttributeError on every read of a thread that never set it."""

    active = False


class SQLiteEngine(Engine):
    """The blocking SQLite backend both faces call (see the module docstring)."""

    catches_up = True

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock,
        readonly: bool = False,
        synchronous: Synchronous = "FULL",
        max_batch: int = 256,
        idle_checkpoint: float = 1.0,
        readers: int = READERS,
        short_reads_on_loop: bool = False,
        micros_clock: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(clock=clock, readonly=readonly)
        self.micros_clock = micros_clock or (lambda: micros(self.clock()))
        """The writer's time as stored (microseconds since the epoch, UTC): ``clock`` unless
        the store reads its default clock without making a datetime."""
        self.short_reads_on_loop = short_reads_on_loop
        """Make the short reads (``SHORT_READS``) on the event loop, no hand-off, when a
        reader is free (see benchmarks/loop.py for what it costs the loop)."""
        self.loop_commits = True
        """Commit a small append on the event loop itself when the loop has nothing else to
        run and nobody commits (``GroupCommit.call``'s ``here``; ``LOOP_EVENTS``; never
        while an inline projection is installed: its handlers stay off the loop): no
        hand-off to wait for. False: every append from a loop goes to the committer thread
        (see benchmarks/loop.py for what each costs the loop)."""
        self.path = Path(path)
        self.synchronous = synchronous
        self.max_batch = max_batch
        self.idle_checkpoint = idle_checkpoint
        self.readers = readers
        self._writer: Writer | None = None
        self._group: GroupCommit[Request] | None = None
        self._pool: ReaderPool | None = None
        self._on_loop = _OnLoop()

    # -- lifecycle --------------------------------------------------------------------------

    def open(self) -> None:
        path = str(self.path)
        if self.readonly:  # only readers, on a file that must already be a store
            if not self.path.is_file():
                raise StoreNotFound(str(self.path.absolute()))
        else:  # the file (and its folder) is created if needed, the schema applied
            self.path.parent.mkdir(parents=True, exist_ok=True)
            writer = Writer(path, self.synchronous, self.micros_clock, audit_key())
            self._writer = writer
            self._group = GroupCommit(
                writer.commit,
                name=f"eskit-sqlite-writer:{path}",
                max_batch=self.max_batch,
                idle=functools.partial(writer.idle, self.idle_checkpoint),
                idle_after=self.idle_checkpoint,
            )
            self._group.listen(self.committed)
        self._pool = ReaderPool(path, self.readers)
        if self.readonly:
            try:
                self.read(functools.partial(check_store, path=str(self.path.absolute())))
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        """Commit what is queued, truncate the WAL, close the readers, then the writer: the
        last connection to close removes the WAL files."""
        group, writer, pool = self._group, self._writer, self._pool
        if group is not None and writer is not None:
            group.close(last=functools.partial(writer.checkpoint, "TRUNCATE"))
        if pool is not None:
            pool.close()
        if writer is not None:
            writer.close()
        self.committed()  # blocking subscriptions see the store close at once

    async def call_async(self, run: Callable[..., T], *args: Any) -> T:
        """A read for the event loop: in a worker thread (one hand-off), or, for a short
        read with ``short_reads_on_loop``, on the loop itself if a reader is free; it then
        yields to the loop once, as an await is expected to (a loop of reads would
        otherwise starve every other task)."""
        if (
            self.short_reads_on_loop
            and getattr(run, "__self__", None) is self
            and run.__name__ in SHORT_READS
        ):
            self._on_loop.active = True
            try:
                result = run(*args)
            except Busy:
                pass
            else:
                await asyncio.sleep(0)
                return result
            finally:
                self._on_loop.active = False
        return await asyncio.to_thread(run, *args)

    def listen(
        self, listener: Callable[[], None], loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        """As ``Engine.listen``; a loop's listener is called in the same wake-up of its loop
        as that loop's answers (``GroupCommit.listen``), not in one more."""
        if loop is not None and self._group is not None:
            self._group.listen(listener, loop)
        else:
            super().listen(listener, loop)

    def unlisten(self, listener: Callable[[], None]) -> None:
        if self._group is not None:
            self._group.unlisten(listener)
        super().unlisten(listener)

    # -- writes -------------------------------------------------------------------------------

    @property
    def writer(self) -> Writer:
        """The write connection's owner (``before_commit``, for fault injection in tests)."""
        if self._writer is None:
            raise StoreError("the store is not open for writing")
        return self._writer

    def _grouped(self) -> GroupCommit[Request]:
        if self._group is None:
            if self.readonly:
                raise StoreError("the store is open read-only (readonly=True): nothing was written")
            raise StoreClosed("the store is not open")
        return self._group

    def append_many(self, appends: list[PreparedAppend]) -> list[AppendResult]:
        group = self._group or self._grouped()  # the check inline when open: once per append
        results: list[AppendResult] = group.run(appends)
        return results

    def append_many_async(self, appends: list[PreparedAppend]) -> Awaitable[list[AppendResult]]:
        group = self._group or self._grouped()  # the check inline when open: once per append
        writer = self._writer  # set while the group is
        here = (
            self.loop_commits
            and len(appends) == 1
            and len(appends[0].events) <= LOOP_EVENTS
            and writer is not None
            and not writer.inline  # an inline projection's handlers: not on the loop
        )
        future: asyncio.Future[list[AppendResult]] = group.call(appends, here)
        return future

    def write(self, run: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``run(conn)`` in the next group's transaction, in a SAVEPOINT of its own:
        what it writes commits with the group; if it raises, its writes are rolled back and
        the error is raised here. It holds up appends: keep it short."""
        result: T = self._grouped().run(Operation(run))
        return result

    async def write_async(self, write: Callable[..., T], *args: Any) -> T:
        """``write`` for the event loop, queued for the next group without a thread: one
        of this engine's writes (``delete``, ``set_metadata``, ``save_snapshot``) with its
        arguments, or a function of the write connection (as ``write`` takes)."""
        run: Callable[[sqlite3.Connection], Any] = (
            _OPERATIONS[write.__name__](*args)
            if getattr(write, "__self__", None) is self
            else functools.partial(write, *args)
        )
        result: T = await self._grouped().call(Operation(run))
        return result

    def delete(
        self, stream: str, expected: ExpectedVersion, hard: bool, keeps_revision: bool = False
    ) -> None:
        self.write(_deleting(stream, expected, hard, keeps_revision))

    def set_metadata(self, stream: str, metadata: StreamMetadata) -> None:
        self.write(_setting_metadata(stream, metadata))

    def save_snapshot(self, snapshot: PreparedSnapshot, recorded_at: dt.datetime) -> None:
        self.write(_saving_snapshot(snapshot, recorded_at))

    def add_inline(self, hook: InlineHook, first: Callable[[sqlite3.Connection], None]) -> None:
        """Run ``first`` (e.g. catch a projection up) and start running ``hook`` in every
        append's transaction, in one write transaction: no append can fall between."""
        self.write(self._adding_inline(hook, first))

    def _adding_inline(
        self, hook: InlineHook, first: Callable[[sqlite3.Connection], None]
    ) -> Callable[[sqlite3.Connection], None]:
        inline = self.writer.inline

        def run(conn: sqlite3.Connection) -> None:
            first(conn)
            inline.append(hook)

        return run

    def remove_inline(self, hook: InlineHook) -> None:
        """Stop running ``hook`` in appends (from the next transaction on)."""
        self.write(self._removing_inline(hook))

    def _removing_inline(self, hook: InlineHook) -> Callable[[sqlite3.Connection], None]:
        inline = self.writer.inline

        def run(conn: sqlite3.Connection) -> None:
            if hook in inline:
                inline.remove(hook)

        return run

    async def add_inline_async(
        self, hook: InlineHook, first: Callable[[sqlite3.Connection], None]
    ) -> None:
        await self._grouped().call(Operation(self._adding_inline(hook, first)))

    async def remove_inline_async(self, hook: InlineHook) -> None:
        await self._grouped().call(Operation(self._removing_inline(hook)))

    # -- reads --------------------------------------------------------------------------------

    def read(self, run: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``run(conn)`` on a reader connection, in this thread: one consistent
        snapshot of the file."""
        return self._read(lambda reader: run(reader.conn))

    def _read(self, run: Callable[[Reader], T]) -> T:
        """``run`` on a reader in this thread; on the event loop only if one is free."""
        return self._readers().read(run, wait=not self._on_loop.active)

    def _readers(self) -> ReaderPool:
        if self._pool is None:
            raise StoreClosed("the store is not open")
        return self._pool

    def page_in(
        self,
        conn: sqlite3.Connection,
        after: int,
        limit: int,
        types: tuple[str, ...] | None = None,
        category: str | None = None,
    ) -> Page:
        """A page of the log read with ``conn``, inside a transaction the caller runs (a
        projection reads its batch in the very write transaction that applies it)."""
        return reads.log_page(conn, reads.RowDecoder(), after, limit, types, category)

    def get_metadata(self, stream: str) -> StreamMetadata:
        return self._read(lambda r: reads.metadata(r.conn, stream))

    def load_snapshot(
        self, stream: str, snapshot_version: int, max_version: int
    ) -> Snapshot | None:
        row = self._read(
            lambda r: reads.snapshot_row(r.conn, stream, snapshot_version, max_version)
        )
        return reads.snapshot(stream, snapshot_version, row)

    def snapshot_and_page(
        self, stream: str, snapshot_version: int, max_version: int, count: int
    ) -> tuple[Snapshot | None, list[RecordedEvent]]:
        now = self.clock()

        def run(reader: Reader) -> tuple[Any, list[RecordedEvent]]:
            row = reads.snapshot_row(reader.conn, stream, snapshot_version, max_version)
            start = None if row is None else row[0] + 1
            wanted = min(count, versions_up_to(max_version, start))
            page = reads.stream_page(reader.conn, reader.decode, stream, start, False, wanted, now)
            return row, page

        row, page = self._read(run)
        return reads.snapshot(stream, snapshot_version, row), page

    def events_after(self, stream: str, version: int, count: int) -> list[RecordedEvent] | None:
        return self._read(lambda r: reads.events_after(r.cursor, r.decode, stream, version, count))

    def stream_version(self, stream: str) -> int | None:
        return self._read(lambda r: reads.stream_version(r.conn, stream))

    def last_position(self) -> int:
        return self._read(lambda r: reads.head(r.conn))

    def find_event(self, event_id: uuid.UUID) -> RecordedEvent | None:
        return self._read(lambda r: reads.find_event(r.conn, r.decode, event_id))

    def list_streams(self, category: str | None, after: str | None, limit: int) -> list[StreamInfo]:
        return self._read(lambda r: reads.list_streams(r.conn, category, after, limit))

    def read_stream_page(
        self, stream: str, from_version: int | None, backwards: bool, count: int
    ) -> list[RecordedEvent]:
        now = self.clock()
        return self._read(
            lambda r: reads.stream_page(
                r.conn, r.decode, stream, from_version, backwards, count, now
            )
        )

    def read_all_page(
        self, after: int, count: int, types: tuple[str, ...] | None, category: str | None
    ) -> tuple[list[RecordedEvent], int]:
        page = self._read(lambda r: reads.log_page(r.conn, r.decode, after, count, types, category))
        return page.events, page.next_after

    def read_all_page_backwards(
        self,
        before: int,
        after: int,
        count: int,
        types: tuple[str, ...] | None,
        category: str | None,
    ) -> list[RecordedEvent]:
        return self._read(
            lambda r: reads.log_page_backwards(
                r.conn, r.decode, before, after, count, types, category
            )
        )

    def chain_page(self, after: int, limit: int) -> list[ChainRow]:
        return self._read(lambda r: reads.chain_page(r.conn, after, limit))

    def chain_start(self) -> ChainStart | None:
        return self._read(lambda r: read_chain_start(r.conn))

    def find_removed(self, event_id: uuid.UUID) -> Removal | None:
        return self._read(lambda r: find_removed(r.conn, SQLITE, event_id.bytes))


# -- the writes other than appends: operations on the write connection ----------------------


def _deleting(
    stream: str, expected: ExpectedVersion, hard: bool, keeps_revision: bool
) -> Callable[[sqlite3.Connection], None]:
    def run(conn: sqlite3.Connection) -> None:
        last, state = stream_state(conn, stream)
        rules.check_version_matches(stream, expected, last, state == SOFT_DELETED, keeps_revision)
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

    return run


def _setting_metadata(
    stream: str, metadata: StreamMetadata
) -> Callable[[sqlite3.Connection], None]:
    def run(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO streams (stream, truncate_before, max_count, max_age, custom)"
            " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (stream) DO UPDATE SET"
            " truncate_before = ?2, max_count = ?3, max_age = ?4, custom = ?5",
            (stream, *rules.stored_metadata(metadata)),
        )

    return run


def _saving_snapshot(
    snapshot: PreparedSnapshot, recorded_at: dt.datetime
) -> Callable[[sqlite3.Connection], None]:
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

    return run


_OPERATIONS: Final[dict[str, Callable[..., Callable[[sqlite3.Connection], None]]]] = {
    "delete": _deleting,
    "set_metadata": _setting_metadata,
    "save_snapshot": _saving_snapshot,
}
"""What each blocking write of the engine runs on the write connection (``write_async``)."""
