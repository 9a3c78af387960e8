"""The PostgreSQL backend: the same contract at scale, many processes on one database.

How it stays correct and fast:

- Positions are given under the lock of the single ``eskit_head`` row, so transactions that
  append commit one after another and commit order is position order: a reader that saw
  position p never later finds a new event at or below p (the SQL file explains the choice).
- Every write of this process goes through one group commit of the engine
  (``postgres_engine``), each request checked on its own, in one statement when it can
  (``postgres_writer``, ``postgres_append``).
- Readers read a page and the committed head in one statement (``postgres_reads``), on
  connections of a pool, tried once more when the server dropped an idle one.
- ``LISTEN``/``NOTIFY`` only wakes subscriptions early (``postgres_listen``): they still
  poll every ``poll_interval``.
- Inline projections (``postgres_inline``) apply each append's events inside the group's
  transaction, on the writer's connection.
- The schema is migrated on open (``postgres_schema``).

This module is the async face over the blocking engine: options, capabilities, and each
store call handed to the engine.
"""

from __future__ import annotations

import asyncio
import inspect
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import psycopg

from eskit.errors import StoreError
from eskit.store import postgres_reads as reads
from eskit.store.base import EventStore
from eskit.store.chain import audit_key
from eskit.store.migrations import Migrated
from eskit.store.model import (
    Page,
)
from eskit.store.postgres_engine import PostgresEngine
from eskit.store.postgres_failover import DEADLINE
from eskit.store.postgres_inline import InlineHook
from eskit.store.postgres_roles import grant_app_role
from eskit.store.postgres_schema import check_schema, migrate

if TYPE_CHECKING:
    from eskit.projections.database import PostgresDatabase
    from eskit.store.postgres_backup import PostgresBackup
    from eskit.store.postgres_scavenge import PostgresScavenger

Hook = Callable[[], Awaitable[None] | None]


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
        replica: str | None = None,
        failover_deadline: float = DEADLINE,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if failover_deadline <= 0:
            raise ValueError(f"failover_deadline must be positive seconds, not {failover_deadline}")
        self.conninfo = conninfo
        self.replica = replica
        """A read-only replica for reads of the log (subscriptions, projections)."""
        self.failover_deadline = failover_deadline
        self.schema = check_schema(schema)
        self.pool_size = pool_size
        self.max_batch = max_batch
        self.migrate_on_open = migrate_on_open
        self.engine: PostgresEngine = PostgresEngine(
            conninfo,
            schema=self.schema,
            pool_size=pool_size,
            max_batch=max_batch,
            migrate_on_open=migrate_on_open,
            key=audit_key(),
            clock=lambda: self.clock(),
            readonly=self.readonly,
            deadline=failover_deadline,
            replica=replica,
        )
        self._before_commit: Hook | None = None

    @classmethod
    def from_url(cls, url: urllib.parse.SplitResult, **options: Any) -> PostgresStore:
        """``postgresql://user@host:port/database?schema=name&pool_size=n``, and for high
        availability ``failover_deadline=seconds`` and ``replica=<URL, percent-encoded>``."""
        query = dict(urllib.parse.parse_qsl(url.query))
        numbers = (("pool_size", int), ("max_batch", int), ("failover_deadline", float))
        for name, convert in (("schema", str), ("replica", str), *numbers):
            if name in query:
                options.setdefault(name, convert(query.pop(name)))
        conninfo = urllib.parse.urlunsplit(
            (url.scheme, url.netloc, url.path, urllib.parse.urlencode(query), "")
        )
        return cls(conninfo, **options)

    @property
    def notify_channel(self) -> str:
        return self.engine.channel

    @property
    def before_commit(self) -> Hook | None:
        """Fault injection for tests: called inside each write transaction just before
        COMMIT (sleep there to hold the head lock, raise to roll the transaction back). A
        coroutine function is awaited on the loop that set it, the committing thread
        waiting for it; a plain function runs in the committing thread."""
        return self._before_commit

    @before_commit.setter
    def before_commit(self, hook: Hook | None) -> None:
        self._before_commit = hook
        self.engine.before_commit = None if hook is None else _blocking(hook)

    # -- capabilities -----------------------------------------------------------------------

    def read_model_database(self) -> PostgresDatabase:
        """The store's database and schema: each batch is read from the log in the
        transaction that applies it."""
        from eskit.projections.database import PostgresDatabase  # projections build on stores

        return PostgresDatabase(self)

    def scavenger(self) -> PostgresScavenger:
        """Scavenging on a connection of its own, with the rights of the role the store was
        opened as (the owner's are needed)."""
        from eskit.store.postgres_scavenge import PostgresScavenger

        return PostgresScavenger(self.conninfo, self.schema)

    def backup_engine(self) -> PostgresBackup:
        """``pg_dump`` of the store's schema from an exported snapshot, with digests."""
        from eskit.store.postgres_backup import PostgresBackup

        return PostgresBackup(self.conninfo, self.schema)

    async def migrate(self, app_role: str | None = None, login: bool = False) -> Migrated:
        """On one connection of its own: the pending migrations, then ``app_role``'s grants,
        then the schema's history (when each migration was applied)."""
        return await asyncio.to_thread(self._migrate, app_role, login)

    def _migrate(self, app_role: str | None, login: bool) -> Migrated:
        try:
            conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10)
        except psycopg.Error as error:
            raise StoreError(f"cannot connect to PostgreSQL: {_one_line(error)}") from error
        schema = self.schema
        with conn:
            try:
                applied = migrate(conn, schema)
            except psycopg.Error as error:
                raise StoreError(
                    f"migrating schema {schema} failed, nothing was changed: {_one_line(error)}"
                ) from error
            created = False
            if app_role is not None:
                try:
                    created = grant_app_role(conn, schema, app_role, login=login)
                except psycopg.Error as error:
                    raise StoreError(
                        f"granting role {app_role} failed, nothing was granted: {_one_line(error)}"
                    ) from error
            rows = conn.execute(
                f'SELECT version, applied_at FROM "{schema}".eskit_migrations ORDER BY version'
            ).fetchall()
            history = {int(version): at for version, at in rows}
        return Migrated(
            f"schema {schema}",
            [(m.version, m.name, history.get(m.version)) for m in applied],
            max(history, default=0),
            created,
        )

    # -- lifecycle ------------------------------------------------------------------------

    async def _wait_for_events_after(self, position: int) -> None:
        if not self._open:
            await super()._wait_for_events_after(position)
            return
        with self.engine.waiting():  # LISTEN for the whole wait, however long
            await super()._wait_for_events_after(position)

    # -- inline projections (eskit.projections.inline) --------------------------------------

    async def add_inline(
        self, hook: InlineHook, first: Callable[[psycopg.Connection[Any]], None]
    ) -> None:
        """Run ``first`` (catch a projection up) and start running ``hook`` in every group
        that appends, in one transaction that holds the head lock: no append of any process
        can fall between. ``first`` gets the writer's connection in that transaction."""
        await self.engine.call_async(self.engine.add_inline, hook, first)

    async def remove_inline(self, hook: InlineHook) -> None:
        """Stop running ``hook``: no group that starts after this returns runs it."""
        await self.engine.call_async(self.engine.remove_inline, hook)

    # -- reads in a projection's transaction ---------------------------------------------

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
        rows = reads.all_page(conn, after, limit, types, category)
        return Page(*reads.page(rows, after, limit))


def _blocking(hook: Hook) -> Callable[[], None]:
    """``before_commit`` as the committing thread calls it: a coroutine the hook returns
    is awaited on the loop that was running when it was set."""
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None

    def run() -> None:
        result = hook()
        if inspect.isawaitable(result):
            if loop is None:
                raise TypeError("an async before_commit hook must be set on a running loop")
            asyncio.run_coroutine_threadsafe(_awaited(result), loop).result()

    return run


async def _awaited(awaitable: Awaitable[None]) -> None:
    await awaitable


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
