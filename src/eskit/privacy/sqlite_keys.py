"""Subject keys in a SQLite file of their own (never the event store's file).

Forgetting must leave no copy of the wrapped key in the file: ``secure_delete`` overwrites
the deleted row with zeros, and a ``wal_checkpoint(TRUNCATE)`` after the delete empties the
write-ahead log, whose older frames still held the row. Keys are written with
``synchronous=FULL``: a key is durable before any event encrypted with it is appended.
"""

from __future__ import annotations

import sqlite3
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from eskit.privacy.sql_keys import Connection, SQLKeyStore

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS eskit_subject_keys (
    key_id        TEXT PRIMARY KEY,
    subject       TEXT NOT NULL UNIQUE,
    wrapped       BLOB NOT NULL,
    master_key_id TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS eskit_subject_keys_master ON eskit_subject_keys (master_key_id);
"""


class SQLiteKeyStore(SQLKeyStore):
    """Wrapped subject keys in a SQLite file; safe to share between threads and processes."""

    table = "eskit_subject_keys"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            if conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
            ).fetchone():
                raise ValueError(
                    f"{self.path} holds an event store: keep the keys in a file of their own"
                )
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA secure_delete = ON")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: urllib.parse.SplitResult) -> SQLiteKeyStore:
        """``sqlite:///relative/keys.db`` or ``sqlite:////absolute/keys.db``."""
        if url.netloc or url.query:
            raise ValueError("a sqlite key store URL is sqlite:///path (no host, no options)")
        return cls(urllib.parse.unquote(url.path[1:] if url.path.startswith("/") else url.path))

    def _run(self, work: Callable[[Connection], T], *, write: bool = False) -> T:
        with self._lock:
            if not write:
                return work(self._conn)
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return result

    def forget(self, subject: str) -> list[str]:
        gone = super().forget(subject)
        if gone:  # the log's older frames still hold the deleted row: empty it
            with self._lock:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return gone

    def close(self) -> None:
        with self._lock:
            self._conn.close()
