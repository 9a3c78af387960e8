"""Subject keys in a PostgreSQL schema of their own (never the event store's schema).

A blocking connection, as the key-store interface is synchronous (see ``keystore``); the
keyring's cache keeps lookups to about one per subject. A dropped connection is reopened
once per call; a server that stays away raises ``StoreUnavailable`` (transient: runners
back off), never a mask.

A deleted key stays in the table's dead tuples until VACUUM, in the server's WAL and in its
backups: see docs/privacy.md for what that means and what to do.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from eskit.errors import StoreUnavailable
from eskit.privacy.keystore import no_such_key_store
from eskit.privacy.sql_keys import Connection, SQLKeyStore
from eskit.store.postgres_schema import check_schema

T = TypeVar("T")

_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS "{schema}";
CREATE TABLE IF NOT EXISTS "{schema}".eskit_subject_keys (
    key_id        TEXT PRIMARY KEY,
    subject       TEXT NOT NULL UNIQUE,
    wrapped       BYTEA NOT NULL,
    master_key_id TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS eskit_subject_keys_master
    ON "{schema}".eskit_subject_keys (master_key_id);
CREATE TABLE IF NOT EXISTS "{schema}".eskit_forgotten_subjects (
    subject      TEXT PRIMARY KEY,
    forgotten_at TEXT NOT NULL
);
"""


class PostgresKeyStore(SQLKeyStore):
    """Wrapped subject keys in ``schema.eskit_subject_keys``."""

    placeholder = "%s"

    def __init__(self, conninfo: str, *, schema: str = "eskit_keys", create: bool = True) -> None:
        """``create=False``: the schema must hold a key store already (``ValueError`` if
        not, and nothing is created)."""
        self.conninfo = conninfo
        self.schema = check_schema(schema)
        self.table = f'"{self.schema}".eskit_subject_keys'
        self.forgotten_table = f'"{self.schema}".eskit_forgotten_subjects'
        self._lock = threading.Lock()
        self._conn = self._connect()
        try:
            if self._conn.execute(
                "SELECT to_regclass(%s)", (f'"{self.schema}".eskit_events',)
            ).fetchone() != (None,):
                raise ValueError(
                    f"schema {self.schema} holds an event store: keep the keys in a schema"
                    " (or database) of their own"
                )
            if not create and self._conn.execute(
                "SELECT to_regclass(%s)", (self.table,)
            ).fetchone() == (None,):
                raise no_such_key_store(f"PostgreSQL schema {self.schema}", "it holds no key store")
            with self._conn.transaction():
                self._conn.execute(_SCHEMA.format(schema=self.schema))
        except BaseException:
            self._conn.close()
            raise

    @classmethod
    def from_url(cls, url: urllib.parse.SplitResult, *, create: bool = True) -> PostgresKeyStore:
        """``postgresql://user@host:port/database?schema=name`` (default ``eskit_keys``)."""
        query = dict(urllib.parse.parse_qsl(url.query))
        schema = query.pop("schema", "eskit_keys")
        conninfo = urllib.parse.urlunsplit(
            (url.scheme, url.netloc, url.path, urllib.parse.urlencode(query), "")
        )
        return cls(conninfo, schema=schema, create=create)

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as error:
            raise StoreUnavailable(f"cannot connect to the key store: {error}") from error

    def _run(self, work: Callable[[Connection], T], *, write: bool = False) -> T:
        with self._lock:
            for attempt in (1, 2):
                if self._conn.closed:
                    self._conn = self._connect()
                try:
                    if not write:
                        return work(self._conn)
                    with self._conn.transaction():
                        return work(self._conn)
                except psycopg.OperationalError as error:
                    if attempt == 2 or not self._conn.closed:
                        raise StoreUnavailable(f"the key store failed: {error}") from error
            raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
