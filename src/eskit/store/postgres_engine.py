"""The PostgreSQL engine: every store call, blocking, on sync psycopg, from any thread.

- Writes: one group commit (``group_commit``) whose commit function is the writer
  (``postgres_writer``), on one write connection of the engine's own. A blocking caller
  that finds nobody committing commits in its own thread; callers that come meanwhile are
  committed together by the next one; an event loop's caller is queued without blocking a
  thread (``append_many_async``, ``write_async``).
- Reads run in the caller's thread on a connection of a pool, tried once more when the
  server dropped an idle one (``postgres_reads``).
- Wake-ups: the engine's own commits wake its listeners through the group commit; other
  processes' commits through ``LISTEN`` (``postgres_listen``), while something waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Final, TypeVar

import msgspec
import psycopg
import psycopg_pool

from eskit.errors import StoreClosed, StoreError, StoreUnavailable
from eskit.store import postgres_reads as reads
from eskit.store import rules
from eskit.store.chain import ChainRow, ChainStart
from eskit.store.engine import Clock, Engine
from eskit.store.group_commit import GroupCommit
from eskit.store.ids import new_event_ids
from eskit.store.model import (
    AppendResult,
    ExpectedVersion,
    RecordedEvent,
    Snapshot,
    StreamInfo,
    StreamMetadata,
)
from eskit.store.postgres_failover import DEADLINE, Pool, bounded, retrying
from eskit.store.postgres_inline import InlineHook
from eskit.store.postgres_listen import Listener
from eskit.store.postgres_reads import SOFT_DELETED, TOMBSTONED
from eskit.store.postgres_schema import check_version, migrate, read_chain_start
from eskit.store.postgres_writer import Connection, Operation, Request, Writer
from eskit.store.rules import PreparedAppend, PreparedSnapshot
from eskit.store.scavenge import POSTGRES, Removal, find_removed
from eskit.store.sqlite_writer import micros

T = TypeVar("T")
_CHECKOUT: Final = 5.0
"""Seconds a read waits for a connection of the pool before it tries again."""
Listening = tuple[asyncio.AbstractEventLoop | None, Callable[[], None]]


class PostgresEngine(Engine):
    """One PostgreSQL schema's event store, blocking and thread-safe (see the module)."""

    catches_up = True

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str,
        pool_size: int,
        max_batch: int,
        migrate_on_open: bool,
        key: bytes | None,
        clock: Clock,
        readonly: bool,
        deadline: float = DEADLINE,
        replica: str | None = None,
    ) -> None:
        super().__init__(clock=clock, readonly=readonly)
        self.deadline = deadline
        """Seconds a call keeps trying to reach the (new) primary (``postgres_failover``)."""
        conninfo = bounded(conninfo, deadline)
        self.replica = None if replica is None else bounded(replica, deadline)
        """A read-only replica's connection string: reads of the log go there."""
        self.conninfo, self.schema = conninfo, schema
        self.pool_size, self.max_batch = pool_size, max_batch
        self.migrate_on_open = migrate_on_open
        self.key = key
        self.channel = f"eskit_{schema}"
        """Notified in each transaction that appends (``postgres_listen``)."""
        self._pool: psycopg_pool.ConnectionPool[Connection] | None = None
        self._replica: psycopg_pool.ConnectionPool[Connection] | None = None
        self._writer: Writer | None = None
        self._group: GroupCommit[Request] | None = None
        self._listener: Listener | None = None
        self._listening: list[Listening] = []
        self._before_commit: Callable[[], None] | None = None
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------

    def configure(self, conn: Connection) -> None:
        conn.execute(f'SET search_path TO "{self.schema}"')

    def open(self) -> None:
        self._closed = False
        self._listener = Listener(self.conninfo, self.channel, self._notified)
        try:
            with psycopg.connect(self.conninfo, autocommit=True) as conn:
                if self.migrate_on_open and not self.readonly:
                    migrate(conn, self.schema, self.key)
                else:
                    check_version(conn, self.schema)
                self.configure(conn)
                head = reads.head(conn)  # the one-statement path's first guess
        except psycopg.OperationalError as error:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {error}") from error
        self._pool = self._open_pool(self.conninfo)
        if self.replica is not None:
            try:
                self._replica = self._open_pool(self.replica)
            except BaseException:
                self._pool.close()
                raise
        if not self.readonly:
            self._writer = Writer(
                self.conninfo,
                self.configure,
                channel=self.channel,
                clock=self.clock,
                key=self.key,
                head=head,
                deadline=self.deadline,
            )
            self._writer.before_commit = self._before_commit
            self._group = GroupCommit(
                self._writer.commit, name="eskit-postgres-writer", max_batch=self.max_batch
            )
            self._group.listen(self.committed)
            for loop, listener in self._listening:
                self._group.listen(listener, loop)

    def _open_pool(self, conninfo: str) -> psycopg_pool.ConnectionPool[Connection]:
        pool: psycopg_pool.ConnectionPool[Connection] = Pool(
            conninfo,
            min_size=1,
            max_size=self.pool_size,
            kwargs={"autocommit": True},
            configure=self.configure,
            timeout=min(_CHECKOUT, self.deadline),
            open=False,
        )
        try:
            pool.open(wait=True, timeout=10)
        except psycopg_pool.PoolTimeout as error:
            pool.close()
            raise StoreError(f"cannot connect to PostgreSQL: {error}") from error
        return pool

    def close(self) -> None:
        """Commit what is queued (a write waiting for the database to come back gives up),
        then close the writer, the listener and the pools (reads in flight finish on their
        connections first)."""
        self._closed = True
        if self._group is not None:
            assert self._writer is not None
            self._writer.closing = True
            self._group.close(last=self._writer.close)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for pool in (self._pool, self._replica):
            if pool is not None:
                pool.close()
        self._group = self._writer = self._pool = self._replica = None
        self.committed()  # wakes the blocking face's subscriptions: they end

    # -- wake-ups -------------------------------------------------------------------------

    def listen(
        self, listener: Callable[[], None], loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        """Call ``listener`` after each commit of this engine that wrote, and when another
        process notifies one: on ``loop`` if given, else in the thread that saw it."""
        self._listening.append((loop, listener))
        if self._group is not None:
            self._group.listen(listener, loop)

    def unlisten(self, listener: Callable[[], None]) -> None:
        self._listening = [(lp, fn) for lp, fn in self._listening if fn is not listener]
        if self._group is not None:
            self._group.unlisten(listener)

    def waited(self) -> None:
        """Something waits for events: listen for other processes' commits (a while)."""
        listener = self._listener
        if listener is not None and not self._closed:
            listener.waited()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Something waits for events until the block ends: listen for other processes'
        commits all that time."""
        listener = self._listener
        if listener is None or self._closed:
            yield
            return
        with listener.waiting():
            yield

    def wait_for_commit(self, seen: int, timeout: float) -> None:
        self.waited()
        super().wait_for_commit(seen, timeout)

    def _notified(self) -> None:
        """Another process committed (the listener's thread)."""
        self.committed()
        for loop, listener in list(self._listening):
            if loop is None:
                listener()
            else:
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits
                    loop.call_soon_threadsafe(listener)

    @property
    def before_commit(self) -> Callable[[], None] | None:
        """Fault injection for tests: called inside each write transaction just before
        COMMIT, in the committing thread (sleep to hold the head lock, raise to roll back)."""
        return self._before_commit

    @before_commit.setter
    def before_commit(self, hook: Callable[[], None] | None) -> None:
        self._before_commit = hook
        if self._writer is not None:
            self._writer.before_commit = hook

    # -- writes -----------------------------------------------------------------------------

    def _writes(self) -> GroupCommit[Request]:
        if self._group is None:
            if self.readonly:
                raise StoreError("the store is open read-only (readonly=True): nothing was written")
            raise StoreClosed("the store is closing: nothing was written")
        return self._group

    def append_many(self, appends: list[PreparedAppend]) -> list[AppendResult]:
        results: list[AppendResult] = self._writes().run(_request(appends))
        return results

    async def append_many_async(self, appends: list[PreparedAppend]) -> list[AppendResult]:
        results: list[AppendResult] = await self._writes().call(_request(appends))
        return results

    def write(self, run: Callable[[Connection], T], patient: bool = False) -> T:
        """Run ``run(conn)`` in the next group's transaction, in a savepoint of its own (it
        fails alone), on the write connection; its value once the group committed.
        ``patient``: it may take longer than the failover deadline (no watchdog)."""
        value: T = self._writes().run(Request(None, run, patient=patient))
        return value

    async def write_async(self, write: Callable[..., T], *args: Any) -> T:
        """``write`` for the event loop, queued without blocking a thread: an engine
        method (``delete``, ``set_metadata``, ``save_snapshot``) with its arguments, or a
        function of the write connection (as ``write`` runs it) with its arguments first."""
        operation = _OPERATIONS.get(getattr(write, "__func__", None))
        if operation is not None and getattr(write, "__self__", None) is self:
            run: Operation = functools.partial(operation, self, *args)
        else:
            run = functools.partial(write, *args)
        value: T = await self._writes().call(Request(None, run))
        return value

    def delete(
        self, stream: str, expected: ExpectedVersion, hard: bool, keeps_revision: bool = False
    ) -> None:
        self.write(functools.partial(_delete, self, stream, expected, hard, keeps_revision))

    def set_metadata(self, stream: str, metadata: StreamMetadata) -> None:
        self.write(functools.partial(_set_metadata, self, stream, metadata))

    def save_snapshot(self, snapshot: PreparedSnapshot, recorded_at: dt.datetime) -> None:
        self.write(functools.partial(_save_snapshot, self, snapshot, recorded_at))

    def add_inline(self, hook: InlineHook, first: Callable[[Connection], None]) -> None:
        """Run ``first`` (catch a projection up) and start running ``hook`` in every group
        that appends, in one transaction that holds the head lock: no append of any process
        can fall between."""
        try:
            self.write(functools.partial(_add_inline, self, hook, first), patient=True)
        except BaseException:
            self._forget_inline(hook)  # the transaction may have failed after `first`
            raise

    def remove_inline(self, hook: InlineHook) -> None:
        """Stop running ``hook``: no group that starts after this returns runs it."""
        if self._group is None or self._closed:
            self._forget_inline(hook)
            return
        self.write(lambda conn: self._forget_inline(hook))

    def _forget_inline(self, hook: InlineHook) -> None:
        if self._writer is not None and hook in self._writer.inline:
            self._writer.inline.remove(hook)

    # -- reads ------------------------------------------------------------------------------

    def read(self, run: Callable[[Connection], T]) -> T:
        """Run ``run(conn)`` on a reader connection, in a transaction (one view)."""

        def transaction(conn: Connection) -> T:
            with conn.transaction():
                return run(conn)

        return self._read(transaction)

    def _read(self, run: Callable[[Connection], T], replica: bool = False) -> T:
        """``run(conn)`` on a connection of the pool (of the replica's, if asked and there
        is one). A connection the server dropped fails at its first use: then check them
        all and try again at once (cheaper than checking every connection at every checkout,
        which costs a round trip per read); while the database cannot be reached (a
        failover), again with backoff until the deadline."""
        pool = self._replica if replica and self._replica is not None else self._pool
        if pool is None or self._closed:
            raise StoreClosed("the store is not open")

        def once(seconds: float) -> T:
            with pool.connection(timeout=min(_CHECKOUT, seconds)) as conn:
                return run(conn)

        try:
            return retrying(
                once, self.deadline, lambda: self._closed, pool.check, (psycopg_pool.PoolTimeout,)
            )
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as error:
            if self._closed:
                raise StoreClosed("the store was closed during the read") from error
            raise StoreUnavailable(f"PostgreSQL read failed: {error}") from error
        except psycopg_pool.PoolClosed as error:
            raise StoreClosed("the store was closed during the read") from error

    def load_snapshot(
        self, stream: str, snapshot_version: int, max_version: int
    ) -> Snapshot | None:
        row = self._read(
            lambda conn: reads.load_snapshot(conn, stream, snapshot_version, max_version)
        )
        return reads.snapshot(stream, snapshot_version, row)

    def snapshot_and_page(
        self, stream: str, snapshot_version: int, max_version: int, count: int
    ) -> tuple[Snapshot | None, list[RecordedEvent]]:
        now = self.clock()
        row, rows = self._read(
            lambda conn: reads.snapshot_and_page(
                conn, stream, snapshot_version, max_version, count, now
            )
        )
        return reads.snapshot(stream, snapshot_version, row), reads.decode(rows)

    def events_after(self, stream: str, version: int, count: int) -> list[RecordedEvent] | None:
        # From the primary, as every read a command decides on (never the replica's pool).
        rows = self._read(lambda conn: reads.events_after(conn, stream, version, count))
        return None if rows is None else reads.decode(rows)

    def get_metadata(self, stream: str) -> StreamMetadata:
        return self._read(lambda conn: reads.metadata(conn, stream))

    def stream_version(self, stream: str) -> int | None:
        return self._read(lambda conn: reads.stream_version(conn, stream))

    def chain_page(self, after: int, limit: int) -> list[ChainRow]:
        return self._read(lambda conn: reads.chain_page(conn, after, limit))

    def find_removed(self, event_id: uuid.UUID) -> Removal | None:
        return self._read(lambda conn: find_removed(conn, POSTGRES, event_id))

    def chain_start(self) -> ChainStart | None:
        return self._read(read_chain_start)

    def find_event(self, event_id: uuid.UUID) -> RecordedEvent | None:
        return self._read(lambda conn: reads.find_event(conn, event_id))

    def last_position(self) -> int:
        """The newest position readers of the log can see: the replica's, if reads of the
        log go to one (it may lag behind the primary's, ``written_position``)."""
        return self._read(reads.head, replica=True)

    def written_position(self) -> int:
        return self._read(reads.head)

    def list_streams(self, category: str | None, after: str | None, limit: int) -> list[StreamInfo]:
        return self._read(lambda conn: reads.list_streams(conn, category, after, limit))

    def read_stream_page(
        self, stream: str, from_version: int | None, backwards: bool, count: int
    ) -> list[RecordedEvent]:
        now = self.clock()
        rows = self._read(
            lambda conn: reads.stream_page(conn, stream, from_version, backwards, count, now)
        )
        return reads.decode(rows)

    def read_all_page(
        self, after: int, count: int, types: tuple[str, ...] | None, category: str | None
    ) -> tuple[list[RecordedEvent], int]:
        rows = self._read(
            lambda conn: reads.all_page(conn, after, count, types, category), replica=True
        )
        return reads.page(rows, after, count)

    def read_all_page_backwards(
        self,
        before: int,
        after: int,
        count: int,
        types: tuple[str, ...] | None,
        category: str | None,
    ) -> list[RecordedEvent]:
        rows = self._read(
            lambda conn: reads.all_page_backwards(conn, before, after, count, types, category)
        )
        return reads.decode(rows) if rows[0][0] is not None else []


# -- operations: run in a group's transaction, each in a savepoint ----------------------------


def _delete(
    engine: PostgresEngine,
    stream: str,
    expected: ExpectedVersion,
    hard: bool,
    keeps_revision: bool,
    conn: Connection,
) -> None:
    last, state = reads.stream_state(conn, stream)
    rules.check_version_matches(stream, expected, last, state == SOFT_DELETED, keeps_revision)
    if hard:
        conn.execute(
            "INSERT INTO eskit_streams (stream, state) VALUES (%s, %s)"
            " ON CONFLICT (stream) DO UPDATE SET state = excluded.state",
            (stream, TOMBSTONED),
        )
        conn.execute("DELETE FROM eskit_snapshots WHERE stream = %s", (stream,))
    elif last is not None and state != SOFT_DELETED:
        conn.execute(
            "INSERT INTO eskit_streams (stream, state, truncate_before)"
            " VALUES (%s, %s, %s) ON CONFLICT (stream) DO UPDATE"
            " SET state = excluded.state, truncate_before = excluded.truncate_before",
            (stream, SOFT_DELETED, last + 1),
        )


def _set_metadata(
    engine: PostgresEngine, stream: str, metadata: StreamMetadata, conn: Connection
) -> None:
    conn.execute(
        "INSERT INTO eskit_streams (stream, truncate_before, max_count, max_age, custom)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (stream) DO UPDATE SET"
        " truncate_before = excluded.truncate_before, max_count = excluded.max_count,"
        " max_age = excluded.max_age, custom = excluded.custom",
        (stream, *rules.stored_metadata(metadata)),
    )


def _save_snapshot(
    engine: PostgresEngine, snapshot: PreparedSnapshot, recorded_at: dt.datetime, conn: Connection
) -> None:
    stream, snapshot_version = snapshot.stream, snapshot.snapshot_version
    reads.stream_state(conn, stream)  # raises StreamDeleted before writing
    conn.execute(
        "INSERT INTO eskit_snapshots (stream, snapshot_version, version, state,"
        " recorded_at) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (stream, snapshot_version, version)"
        " DO UPDATE SET state = excluded.state, recorded_at = excluded.recorded_at",
        (stream, snapshot_version, snapshot.version, snapshot.state, micros(recorded_at)),
    )
    conn.execute(
        "DELETE FROM eskit_snapshots WHERE stream = %(s)s"
        " AND snapshot_version = %(v)s AND version < (SELECT version FROM"
        " eskit_snapshots WHERE stream = %(s)s AND snapshot_version = %(v)s"
        " ORDER BY version DESC LIMIT 1 OFFSET %(o)s)",
        {"s": stream, "v": snapshot_version, "o": rules.SNAPSHOTS_KEPT - 1},
    )


def _add_inline(
    engine: PostgresEngine,
    hook: InlineHook,
    first: Callable[[Connection], None],
    conn: Connection,
) -> None:
    first(conn)
    assert engine._writer is not None
    engine._writer.inline.append(hook)


_OPERATIONS: dict[object, Callable[..., Any]] = {
    PostgresEngine.delete: _delete,
    PostgresEngine.set_metadata: _set_metadata,
    PostgresEngine.save_snapshot: _save_snapshot,
}
"""The operation each blocking write method of the engine queues (``write_async``)."""


def _request(appends: list[PreparedAppend]) -> Request:
    """The appends with an id on every event, given before the first attempt, and the ids
    given here: if a COMMIT's answer is lost and the request is tried again, the retry is
    then recognised as a replay instead of being written twice."""
    missing = sum(e.id is None for a in appends for e in a.events)
    if not missing:
        return Request(appends, None)
    fresh = [uuid.UUID(bytes=b) for b in new_event_ids(missing)]
    given = iter(fresh)
    identified = [
        msgspec.structs.replace(
            a,
            events=[
                e if e.id is not None else msgspec.structs.replace(e, id=next(given))
                for e in a.events
            ],
        )
        for a in appends
    ]
    return Request(identified, None, frozenset(fresh))
