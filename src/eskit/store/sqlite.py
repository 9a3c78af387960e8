"""The embedded SQLite backend's async face: the engine (``sqlite_engine``) does the IO.

Reads reach the engine in a worker thread (one hand-off), appends and other writes are
queued for its next group commit without blocking a thread (``GroupCommit.call``); a small
append from a loop with nothing else to run is committed on the loop, no hand-off
(``SQLiteEngine.loop_commits``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from eskit.errors import StoreError
from eskit.store import sqlite_schema
from eskit.store.base import EventStore, utc_now
from eskit.store.chain import audit_key
from eskit.store.migrations import Migrated
from eskit.store.model import Page
from eskit.store.sqlite_engine import READERS, SQLiteEngine
from eskit.store.sqlite_writer import InlineHook, Synchronous, connect, micros

if TYPE_CHECKING:
    from eskit.projections.database import StoreDatabase
    from eskit.store.sqlite_backup import SQLiteBackup
    from eskit.store.sqlite_scavenge import SQLiteScavenger

T = TypeVar("T")


class SQLiteStore(EventStore):
    """Events in one SQLite file: durable, fast, safe to read from other processes."""

    engine: SQLiteEngine

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "FULL",
        readers: int = READERS,
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
        self._idle_checkpoint = idle_checkpoint
        self.engine = SQLiteEngine(
            self.path,
            clock=lambda: self.clock(),
            micros_clock=self._now_micros,
            readonly=self.readonly,
            synchronous=self.synchronous,
            max_batch=max_batch,
            idle_checkpoint=idle_checkpoint,
            readers=readers,
        )

    def _now_micros(self) -> int:
        """The time an append is recorded at, as stored: the default clock is read without
        making a datetime (the same microsecond, floored, as ``utc_now``)."""
        clock = self.clock
        return time.time_ns() // 1_000 if clock is utc_now else micros(clock())

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

    def scavenger(self) -> SQLiteScavenger:
        """Scavenging steps run in the writer's group commits."""
        from eskit.store.sqlite_scavenge import SQLiteScavenger

        return SQLiteScavenger(self.engine, str(self.path))

    def backup_engine(self) -> SQLiteBackup:
        """SQLite's online backup API, page by page, from one read snapshot."""
        from eskit.store.sqlite_backup import SQLiteBackup

        return SQLiteBackup(self.path)

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

    # -- for read models kept in the store's file (projections) ----------------------------

    async def write_transaction(self, run: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``run(conn)`` in the next group's transaction, in a SAVEPOINT of its own.

        What ``run`` writes commits with the appends of the same group (one fsync); if it
        raises, its writes are rolled back and the error is raised here. It holds up
        appends: keep it short.
        """
        self._check_open()
        self._check_writable()
        return await self.engine.write_async(run)

    async def read_transaction(self, run: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``run(conn)`` on a reader connection: one consistent snapshot of the file."""
        self._check_open()
        return await self.engine.call_async(self.engine.read, run)

    async def add_inline(
        self, hook: InlineHook, first: Callable[[sqlite3.Connection], None]
    ) -> None:
        """Run ``first`` (e.g. catch a projection up) and start running ``hook`` in every
        append's transaction, in one write transaction: no append can fall between."""
        self._check_open()
        self._check_writable()
        try:
            await self.engine.add_inline_async(hook, first)
        except BaseException:
            await self.remove_inline(hook)  # the transaction may have failed after `first`
            raise

    async def remove_inline(self, hook: InlineHook) -> None:
        """Stop running ``hook`` in appends (from the next transaction on)."""
        if self.is_open and not self.readonly:
            await self.engine.remove_inline_async(hook)

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
        return self.engine.page_in(conn, after, limit, types, category)
