"""Where projections keep their tables and checkpoints: a SQL database they write in
transactions.

- ``StoreDatabase``: the SQLite store's own file. Transactions run on the store's writer
  thread, inside its group commits: a projection batch costs no extra fsync, never fights
  appends for the write lock, and can read the log in the same transaction.
- ``SQLiteDatabase``: a SQLite file of its own (or ``:memory:``), with one thread owning
  the connection. Used for read models kept apart from the store, and for projections over
  a memory store.

Each offers a blocking face (``blocking()``) for the blocking runner (``eskit.sync``): the
same transactions, waited for in the caller's thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from eskit.errors import StoreUnavailable
from eskit.projections.sql import Connection
from eskit.store.base import EventStore
from eskit.store.model import Page
from eskit.store.sqlite import SQLiteStore
from eskit.store.sqlite_writer import connect

if TYPE_CHECKING:
    import psycopg

    from eskit.store.postgres import PostgresStore

T = TypeVar("T")


class Database(Protocol):
    """A SQL database that runs functions of a connection in transactions."""

    holds_log: bool
    """Whether the store's events are in this database (``page_in`` can read them)."""

    async def write(self, run: Callable[[Connection], T]) -> T:
        """Run ``run`` in a write transaction; commit if it returns, roll back if it raises."""
        ...

    async def read(self, run: Callable[[Connection], T]) -> T:
        """Run ``run`` in a read transaction (one consistent view)."""
        ...

    def page_in(
        self, conn: Connection, after: int, limit: int, types: tuple[str, ...] | None
    ) -> Page | None:
        """A page of the log read in the caller's transaction, or None if the log lives
        in another database."""
        ...

    async def close(self) -> None: ...


class StoreDatabase:
    """The SQLite store's own file: read models commit with the appends."""

    holds_log = True

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    async def write(self, run: Callable[[sqlite3.Connection], T]) -> T:
        return await self.store.write_transaction(run)

    async def read(self, run: Callable[[sqlite3.Connection], T]) -> T:
        return await self.store.read_transaction(run)

    def page_in(
        self, conn: sqlite3.Connection, after: int, limit: int, types: tuple[str, ...] | None
    ) -> Page | None:
        return self.store.page_in(conn, after, limit, types)

    async def close(self) -> None:
        """The store is closed by its owner."""

    def blocking(self) -> BlockingDatabase:
        """The same, blocking: a batch runs in the store engine's next group commit, led
        by the caller's thread when nobody else is writing (one fsync with the appends)."""
        return _StoreEngine(self.store)


class _StoreEngine:
    """The SQLite store's file through its engine, blocking (``StoreDatabase.blocking``)."""

    holds_log = True

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    def write(self, run: Callable[[sqlite3.Connection], T]) -> T:
        return self.store.engine.write(run)

    def read(self, run: Callable[[sqlite3.Connection], T]) -> T:
        return self.store.engine.read(run)

    def page_in(
        self, conn: sqlite3.Connection, after: int, limit: int, types: tuple[str, ...] | None
    ) -> Page | None:
        return self.store.page_in(conn, after, limit, types)

    def close(self) -> None:
        """The store is closed by its owner."""


class _OwnThread:
    """A database whose one connection is used by one thread of its own (blocking
    drivers: sqlite3, psycopg); ``write``/``read`` run a function there in a transaction."""

    holds_log = False

    def __init__(self, name: str) -> None:
        self._name = name
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    def _thread(self) -> concurrent.futures.ThreadPoolExecutor:
        """The one thread that uses the connection (started again after ``close``)."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, self._name)
        return self._executor

    def _transaction(self, run: Callable[[Connection], T], write: bool) -> T:
        raise NotImplementedError

    def _disconnect(self) -> None:
        """Close the connection (on the thread), if it should not outlive ``close``."""
        raise NotImplementedError

    async def write(self, run: Callable[[Connection], T]) -> T:
        return await asyncio.wrap_future(self._thread().submit(self._transaction, run, True))

    async def read(self, run: Callable[[Connection], T]) -> T:
        return await asyncio.wrap_future(self._thread().submit(self._transaction, run, False))

    def page_in(
        self, conn: Connection, after: int, limit: int, types: tuple[str, ...] | None
    ) -> Page | None:
        return None

    async def close(self) -> None:
        if self._executor is None:
            return
        await asyncio.wrap_future(self._executor.submit(self._disconnect))
        self._executor.shutdown(wait=True)
        self._executor = None

    def blocking(self) -> BlockingDatabase:
        """This database's blocking face: the same thread and connection, waited for."""
        return _Blocking(self)


class BlockingDatabase(Protocol):
    """``Database``, blocking: for the blocking runner (``eskit.sync.ProjectionRunner``)."""

    holds_log: bool

    def write(self, run: Callable[[Connection], T]) -> T: ...

    def read(self, run: Callable[[Connection], T]) -> T: ...

    def page_in(
        self, conn: Connection, after: int, limit: int, types: tuple[str, ...] | None
    ) -> Page | None: ...

    def close(self) -> None: ...


class _Blocking:
    """An ``_OwnThread`` database's transactions, run in the caller's thread, one at a
    time (its connection is used by one thread at a time; do not use the async face of
    the same object meanwhile)."""

    def __init__(self, database: _OwnThread) -> None:
        self.database = database
        self.holds_log = database.holds_log
        self._lock = threading.Lock()

    def write(self, run: Callable[[Connection], T]) -> T:
        with self._lock:
            return self.database._transaction(run, True)

    def read(self, run: Callable[[Connection], T]) -> T:
        with self._lock:
            return self.database._transaction(run, False)

    def page_in(
        self, conn: Connection, after: int, limit: int, types: tuple[str, ...] | None
    ) -> Page | None:
        return self.database.page_in(conn, after, limit, types)

    def close(self) -> None:
        with self._lock:
            self.database._disconnect()


class SQLiteDatabase(_OwnThread):
    """A SQLite file of its own (WAL), or ``:memory:``."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(f"eskit-readmodel:{path}")
        self.path = str(path)
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path == ":memory:":
                # Kept across close(): the data lives as long as this object does.
                self._conn = sqlite3.connect(
                    ":memory:", isolation_level=None, check_same_thread=False
                )
            else:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                self._conn = connect(self.path)
                self._conn.execute("PRAGMA synchronous=FULL")
        return self._conn

    def _transaction(self, run: Callable[[sqlite3.Connection], T], write: bool) -> T:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            result = run(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _disconnect(self) -> None:
        if self._conn is not None and self.path != ":memory:":
            self._conn.close()
            self._conn = None


class PostgresDatabase(_OwnThread):
    """Read models and checkpoints in PostgreSQL, written one transaction at a time, with
    ``%s`` placeholders. Either the PostgreSQL store's own database and schema (``store``):
    read models sit beside the events and each batch is read from the log in the
    transaction that applies it (exactly once). Or, with ``url``, a database of their own,
    e.g. a broker consumer's on another machine: ``schema`` is created if missing, and no
    eskit event table is."""

    def __init__(
        self,
        store: PostgresStore | None = None,
        *,
        url: str | None = None,
        schema: str = "public",
    ) -> None:
        super().__init__("eskit-readmodel:pg")
        if (store is None) == (url is None):
            raise ValueError("PostgresDatabase needs either a PostgresStore or url=")
        from eskit.store.postgres_schema import check_schema

        self.store = store
        self.conninfo = store.engine.conninfo if store is not None else str(url)
        self.schema = store.schema if store is not None else check_schema(schema)
        self.holds_log = store is not None and store.replica is None
        """With a replica, batches are read from it (``read_page``), not in the
        transaction that applies them: still exactly once (the checkpoint moves in it)."""
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        import psycopg  # loaded with the PostgreSQL store already

        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self.conninfo, autocommit=True)
            if self.store is None:
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            conn.execute(f'SET search_path TO "{self.schema}"')
            self._conn = conn
        return self._conn

    def _transaction(self, run: Callable[[Connection], T], write: bool) -> T:
        import psycopg

        try:
            conn = self._connection()
            with conn.transaction():
                return run(conn)
        except psycopg.OperationalError as error:
            self._conn = None  # reconnect next time
            raise StoreUnavailable(f"PostgreSQL read model write failed: {error}") from error

    def page_in(
        self, conn: Connection, after: int, limit: int, types: tuple[str, ...] | None
    ) -> Page | None:
        return None if self.store is None else self.store.page_in(conn, after, limit, types)

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def database_for(store: EventStore, path: str | None = None) -> Database:
    """The database projections of ``store`` use: ``path`` if given, else the one the store
    offers (``EventStore.read_model_database``): its own file (SQLite) or database
    (PostgreSQL), a private in-memory one (memory store)."""
    if path is not None:
        return SQLiteDatabase(path)
    database = store.read_model_database()
    if database is None:
        raise ValueError(
            f"projections over a {type(store).__name__} need a database for their checkpoints"
            " and read models: pass database=SQLiteDatabase('readmodels.db') to the runner"
        )
    return database
