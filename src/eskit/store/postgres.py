"""The PostgreSQL backend: the same contract at scale, many processes on one database.

How it stays correct and fast:

- Positions are given under the lock of the single ``eskit_head`` row, so transactions that
  append commit one after another and commit order is position order: a reader that saw
  position p never later finds a new event at or below p (the SQL file explains the choice).
- Every write of this process goes through one writer task that commits them in groups,
  each request checked on its own, in one statement when it can (``postgres_writer``,
  ``postgres_append``).
- Readers read a page and the committed head in one statement (``postgres_reads``), on
  connections of a pool, tried once more when the server dropped an idle one.
- ``LISTEN``/``NOTIFY`` only wakes subscriptions early (``postgres_listen``): they still
  poll every ``poll_interval``.
- Inline projections (``postgres_inline``) apply each append's events inside the group's
  transaction, on a thread with a blocking twin of the writer's connection.
- The schema is migrated on open (``postgres_schema``).

This module wires them together: open and close, and each store call to the writer or to a
read.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
import psycopg
import psycopg_pool

from eskit.errors import StoreClosed, StoreError, StoreUnavailable
from eskit.store import postgres_reads as reads
from eskit.store import rules
from eskit.store.base import EventStore
from eskit.store.chain import ChainRow, ChainStart, audit_key
from eskit.store.ids import new_event_ids
from eskit.store.migrations import Migrated
from eskit.store.model import (
    AppendResult,
    ExpectedVersion,
    Page,
    RecordedEvent,
    Snapshot,
    StreamInfo,
    StreamMetadata,
)
from eskit.store.postgres_inline import InlineHook, InlineProjections
from eskit.store.postgres_listen import Listener
from eskit.store.postgres_reads import SOFT_DELETED, TOMBSTONED
from eskit.store.postgres_roles import grant_app_role
from eskit.store.postgres_schema import check_schema, check_version, migrate, read_chain_start
from eskit.store.postgres_writer import Operation, Request, Writer
from eskit.store.rules import PreparedAppend, PreparedSnapshot
from eskit.store.sqlite_writer import micros

if TYPE_CHECKING:
    from eskit.projections.database import PostgresDatabase

Connection = psycopg.AsyncConnection[Any]


class PostgresStore(EventStore):
    """Events in PostgreSQL: many processes, one log, no skipped events."""

    grants_roles = True
    read_models_in_sqlite = False

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str = "public",
        pool_size: int = 10,
        max_batch: int = 256,
        migrate_on_open: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.conninfo = conninfo
        self.schema = check_schema(schema)
        self.pool_size = pool_size
        self.max_batch = max_batch
        self.migrate_on_open = migrate_on_open
        self._audit_key = audit_key()
        self._pool: psycopg_pool.AsyncConnectionPool[Connection] | None = None
        self._writer: Writer | None = None
        self._inline = InlineProjections()
        self._listener = Listener(
            conninfo,
            self.notify_channel,
            is_open=lambda: self._open,
            waiting=lambda: bool(self._waiters),
            wake=self._notify_waiters,
        )
        self._before_commit: Callable[[], Awaitable[None]] | None = None
        self._reads = 0
        self._no_reads = asyncio.Event()

    @classmethod
    def from_url(cls, url: urllib.parse.SplitResult, **options: Any) -> PostgresStore:
        """``postgresql://user@host:port/database?schema=name&pool_size=n``."""
        query = dict(urllib.parse.parse_qsl(url.query))
        for name, convert in (("schema", str), ("pool_size", int), ("max_batch", int)):
            if name in query:
                options.setdefault(name, convert(query.pop(name)))
        conninfo = urllib.parse.urlunsplit(
            (url.scheme, url.netloc, url.path, urllib.parse.urlencode(query), "")
        )
        return cls(conninfo, **options)

    @property
    def notify_channel(self) -> str:
        return f"eskit_{self.schema}"

    @property
    def before_commit(self) -> Callable[[], Awaitable[None]] | None:
        """Fault injection for tests: awaited inside each transaction just before COMMIT
        (sleep there to hold the head lock, raise to roll the transaction back)."""
        return self._before_commit

    @before_commit.setter
    def before_commit(self, hook: Callable[[], Awaitable[None]] | None) -> None:
        self._before_commit = hook
        if self._writer is not None:
            self._writer.before_commit = hook

    # -- capabilities -----------------------------------------------------------------------

    def read_model_database(self) -> PostgresDatabase:
        """The store's database and schema: each batch is read from the log in the
        transaction that applies it."""
        from eskit.projections.database import PostgresDatabase  # projections build on stores

        return PostgresDatabase(self)

    async def migrate(self, app_role: str | None = None, login: bool = False) -> Migrated:
        """On one connection of its own: the pending migrations, then ``app_role``'s grants,
        then the schema's history (when each migration was applied)."""
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, connect_timeout=10
            )
        except psycopg.Error as error:
            raise StoreError(f"cannot connect to PostgreSQL: {_one_line(error)}") from error
        schema = self.schema
        async with conn:
            try:
                applied = await migrate(conn, schema)
            except psycopg.Error as error:
                raise StoreError(
                    f"migrating schema {schema} failed, nothing was changed: {_one_line(error)}"
                ) from error
            created = False
            if app_role is not None:
                try:
                    created = await grant_app_role(conn, schema, app_role, login=login)
                except psycopg.Error as error:
                    raise StoreError(
                        f"granting role {app_role} failed, nothing was granted: {_one_line(error)}"
                    ) from error
            cursor = await conn.execute(
                f'SELECT version, applied_at FROM "{schema}".eskit_migrations ORDER BY version'
            )
            history = {int(version): at for version, at in await cursor.fetchall()}
        return Migrated(
            f"schema {schema}",
            [(m.version, m.name, history.get(m.version)) for m in applied],
            max(history, default=0),
            created,
        )

    # -- lifecycle ------------------------------------------------------------------------

    async def _configure(self, conn: Connection) -> None:
        await conn.execute(f'SET search_path TO "{self.schema}"')

    async def _open_backend(self) -> None:
        try:
            async with await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True
            ) as conn:
                if self.migrate_on_open and not self.readonly:
                    await migrate(conn, self.schema, self._audit_key)
                else:
                    await check_version(conn, self.schema)
                await self._configure(conn)
                head = await reads.head(conn)  # the one-statement path's first guess
        except psycopg.OperationalError as error:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {error}") from error
        pool: psycopg_pool.AsyncConnectionPool[Connection] = psycopg_pool.AsyncConnectionPool(
            self.conninfo,
            min_size=1,
            max_size=self.pool_size,
            kwargs={"autocommit": True},
            configure=self._configure,
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=10)
        except psycopg_pool.PoolTimeout as error:
            await pool.close()
            raise StoreError(f"cannot connect to PostgreSQL: {error}") from error
        self._pool = pool
        if not self.readonly:
            self._writer = Writer(
                self.conninfo,
                self._configure,
                channel=self.notify_channel,
                max_batch=self.max_batch,
                clock=self.clock,
                key=self._audit_key,
                inline=self._inline,
                head=head,
                committed=self._notify_waiters,
            )
            self._writer.before_commit = self._before_commit

    async def _close_backend(self) -> None:
        if self._writer is not None:
            await self._writer.stop()
        if self._reads:  # reads in flight (a subscription's last page) finish first
            self._no_reads.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_reads.wait(), 5)
        await self._listener.close()
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        self._inline.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _wait_for_events_after(self, position: int) -> None:
        if self._open:
            self._listener.waited()
        await super()._wait_for_events_after(position)

    # -- the writer and the reader pool -----------------------------------------------------

    async def _submit(self, request: Request) -> Any:
        if self._writer is None or not self._writer.running:
            self._check_open()
            self._check_writable()
            raise StoreError("the store is closing")
        return await self._writer.submit(request)

    async def _write(self, operation: Operation) -> Any:
        return await self._submit(Request(None, operation))

    async def _read(self, run: Callable[[Connection], Awaitable[Any]]) -> Any:
        if self._pool is None:
            self._check_open()
            raise StoreError("the store is closing")
        self._reads += 1
        try:
            for attempt in (1, 2):
                try:
                    async with self._pool.connection() as conn:
                        return await run(conn)
                except psycopg.OperationalError:
                    # Idle connections the server dropped fail at their first use: then
                    # check them all and try once more (cheaper than checking every
                    # connection at every checkout, which costs a round trip per read).
                    if attempt == 2 or not self._open:
                        raise
                    await self._pool.check()
            raise AssertionError("unreachable")
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as error:
            if not self._open:
                raise StoreClosed("the store was closed during the read") from error
            raise StoreUnavailable(f"PostgreSQL read failed: {error}") from error
        finally:
            self._reads -= 1
            if not self._reads:
                self._no_reads.set()

    # -- inline projections (eskit.projections.inline) --------------------------------------

    async def add_inline(
        self, hook: InlineHook, first: Callable[[psycopg.Connection[Any]], None]
    ) -> None:
        """Run ``first`` (catch a projection up) and start running ``hook`` in every group
        that appends, in one transaction that holds the head lock: no append of any process
        can fall between. ``first`` gets a blocking connection in that transaction."""

        async def run(conn: Connection) -> None:
            await self._inline.call(conn, first)
            self._inline.hooks.append(hook)

        try:
            await self._write(run)
        except BaseException:
            self._forget_inline(hook)  # the transaction may have failed after `run`
            raise

    async def remove_inline(self, hook: InlineHook) -> None:
        """Stop running ``hook``: no group that starts after this returns runs it."""
        if self._writer is None or not self._writer.running:
            self._forget_inline(hook)
            return

        async def run(conn: Connection) -> None:
            self._forget_inline(hook)

        await self._write(run)

    def _forget_inline(self, hook: InlineHook) -> None:
        if hook in self._inline.hooks:
            self._inline.hooks.remove(hook)

    # -- writes -----------------------------------------------------------------------------

    async def _append_many(self, appends: list[PreparedAppend]) -> list[AppendResult]:
        identified, generated = _with_ids(appends)
        results: list[AppendResult] = await self._submit(Request(identified, None, generated))
        return results

    async def _delete(self, stream: str, expected: ExpectedVersion, hard: bool) -> None:
        async def run(conn: Connection) -> None:
            last, state = await reads.stream_state(conn, stream)
            rules.check_version_matches(stream, expected, last, state == SOFT_DELETED)
            if hard:
                await conn.execute(
                    "INSERT INTO eskit_streams (stream, state) VALUES (%s, %s)"
                    " ON CONFLICT (stream) DO UPDATE SET state = excluded.state",
                    (stream, TOMBSTONED),
                )
                await conn.execute("DELETE FROM eskit_snapshots WHERE stream = %s", (stream,))
            elif last is not None and state != SOFT_DELETED:
                await conn.execute(
                    "INSERT INTO eskit_streams (stream, state, truncate_before)"
                    " VALUES (%s, %s, %s) ON CONFLICT (stream) DO UPDATE"
                    " SET state = excluded.state, truncate_before = excluded.truncate_before",
                    (stream, SOFT_DELETED, last + 1),
                )

        await self._write(run)

    async def _set_metadata(self, stream: str, metadata: StreamMetadata) -> None:
        async def run(conn: Connection) -> None:
            await conn.execute(
                "INSERT INTO eskit_streams (stream, truncate_before, max_count, max_age)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (stream) DO UPDATE SET"
                " truncate_before = excluded.truncate_before, max_count = excluded.max_count,"
                " max_age = excluded.max_age",
                (stream, *rules.stored_metadata(metadata)),
            )

        await self._write(run)

    async def _save_snapshot(self, snapshot: PreparedSnapshot, recorded_at: dt.datetime) -> None:
        stream, snapshot_version = snapshot.stream, snapshot.snapshot_version

        async def run(conn: Connection) -> None:
            await reads.stream_state(conn, stream)  # raises StreamDeleted before writing
            await conn.execute(
                "INSERT INTO eskit_snapshots (stream, snapshot_version, version, state,"
                " recorded_at) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (stream, snapshot_version, version)"
                " DO UPDATE SET state = excluded.state, recorded_at = excluded.recorded_at",
                (stream, snapshot_version, snapshot.version, snapshot.state, micros(recorded_at)),
            )
            await conn.execute(
                "DELETE FROM eskit_snapshots WHERE stream = %(s)s"
                " AND snapshot_version = %(v)s AND version < (SELECT version FROM"
                " eskit_snapshots WHERE stream = %(s)s AND snapshot_version = %(v)s"
                " ORDER BY version DESC LIMIT 1 OFFSET %(o)s)",
                {"s": stream, "v": snapshot_version, "o": rules.SNAPSHOTS_KEPT - 1},
            )

        await self._write(run)

    # -- reads ------------------------------------------------------------------------------

    async def _load_snapshot(
        self, stream: str, snapshot_version: int, max_version: int
    ) -> Snapshot | None:
        row = await self._read(
            lambda conn: reads.load_snapshot(conn, stream, snapshot_version, max_version)
        )
        return reads.snapshot(stream, snapshot_version, row)

    async def _snapshot_and_page(
        self, stream: str, snapshot_version: int, max_version: int, count: int
    ) -> tuple[Snapshot | None, list[RecordedEvent]]:
        now = self.clock()
        row, rows = await self._read(
            lambda conn: reads.snapshot_and_page(
                conn, stream, snapshot_version, max_version, count, now
            )
        )
        return reads.snapshot(stream, snapshot_version, row), reads.decode(rows)

    async def _get_metadata(self, stream: str) -> StreamMetadata:
        found: StreamMetadata = await self._read(lambda conn: reads.metadata(conn, stream))
        return found

    async def _stream_version(self, stream: str) -> int | None:
        found: int | None = await self._read(lambda conn: reads.stream_version(conn, stream))
        return found

    async def _chain_page(self, after: int, limit: int) -> list[ChainRow]:
        found: list[ChainRow] = await self._read(lambda conn: reads.chain_page(conn, after, limit))
        return found

    async def _chain_start(self) -> ChainStart | None:
        found: ChainStart | None = await self._read(read_chain_start)
        return found

    async def _find_event(self, event_id: uuid.UUID) -> RecordedEvent | None:
        found: RecordedEvent | None = await self._read(
            lambda conn: reads.find_event(conn, event_id)
        )
        return found

    async def _last_position(self) -> int:
        found: int = await self._read(reads.head)
        return found

    async def _list_streams(
        self, category: str | None, after: str | None, limit: int
    ) -> list[StreamInfo]:
        found: list[StreamInfo] = await self._read(
            lambda conn: reads.list_streams(conn, category, after, limit)
        )
        return found

    async def _read_stream_page(
        self, stream: str, from_version: int | None, backwards: bool, count: int
    ) -> list[RecordedEvent]:
        now = self.clock()
        rows = await self._read(
            lambda conn: reads.stream_page(conn, stream, from_version, backwards, count, now)
        )
        return reads.decode(rows)

    async def _read_all_page(
        self, after: int, count: int, types: tuple[str, ...] | None, category: str | None
    ) -> tuple[list[RecordedEvent], int]:
        rows = await self._read(lambda conn: reads.all_page(conn, after, count, types, category))
        return reads.page(rows, after, count)

    def page_in(
        self,
        conn: psycopg.Connection[Any],
        after: int,
        limit: int,
        types: tuple[str, ...] | None = None,
        category: str | None = None,
    ) -> Page:
        """``read_page`` with a blocking connection to this store's schema, inside a
        transaction the caller runs (projections read and apply a batch in one)."""
        sql, extra, prepare = reads.page_query(types, category)
        rows = conn.execute(sql, (rules.clamp(after), *extra, limit), prepare=prepare).fetchall()
        return Page(*reads.page(rows, after, limit))


def _with_ids(
    appends: list[PreparedAppend],
) -> tuple[list[PreparedAppend], frozenset[uuid.UUID]]:
    """The appends with an id on every event, given before the first attempt, and the ids
    given here: if a COMMIT's answer is lost and the request is tried again, the retry is
    then recognised as a replay instead of being written twice."""
    missing = sum(e.id is None for a in appends for e in a.events)
    if not missing:
        return appends, frozenset()
    fresh = _new_ids(missing)
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
    return identified, frozenset(fresh)


def _new_ids(count: int) -> list[uuid.UUID]:
    return [uuid.UUID(bytes=b) for b in new_event_ids(count)] if count else []


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
