"""Subject keys in a SQLite file of their own (never the event store's file).

Forgetting must leave no copy of the wrapped key in the file: ``secure_delete`` overwrites
the deleted row with zeros, and a ``wal_checkpoint(TRUNCATE)`` after the delete empties the
write-ahead log, whose older frames still held the row. Its result is checked: while
another connection holds a read transaction the log cannot be emptied, and ``forget``
retries for ``forget_timeout`` seconds, then raises ``ForgetIncomplete`` rather than
report a forget whose key can still be read. Keys are written with
``synchronous=FULL``: a key is durable before any event encrypted with it is appended.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from eskit.errors import ForgetIncomplete
from eskit.privacy.keystore import no_such_key_store
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
CREATE TABLE IF NOT EXISTS eskit_forgotten_subjects (
    subject      TEXT PRIMARY KEY,
    forgotten_at TEXT NOT NULL
);
"""

_BUSY_TIMEOUT_MS = 10_000


class SQLiteKeyStore(SQLKeyStore):
    """Wrapped subject keys in a SQLite file; safe to share between threads and processes."""

    table = "eskit_subject_keys"
    forgotten_table = "eskit_forgotten_subjects"

    def __init__(
        self, path: str | Path, *, forget_timeout: float = 30.0, create: bool = True
    ) -> None:
        """``create=False``: the file must be a key store already (``ValueError`` if not,
        and nothing is created)."""
        if not forget_timeout >= 0:
            raise ValueError(f"forget_timeout must be >= 0 seconds, got {forget_timeout!r}")
        self.path = Path(path)
        self.forget_timeout = forget_timeout
        """How long ``forget`` waits for readers to let it empty the write-ahead log."""
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        elif not self.path.is_file():
            raise no_such_key_store(str(self.path.absolute()), "no such file")
        else:  # mode=rw: never creates the file
            uri = f"{self.path.absolute().as_uri()}?mode=rw"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            if _has_table(conn, "events", self.path):
                raise ValueError(
                    f"{self.path} holds an event store: keep the keys in a file of their own"
                )
            if not (create or _has_table(conn, self.table, self.path)):
                raise no_such_key_store(str(self.path.absolute()), "the file is no key store")
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
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
    def from_url(cls, url: urllib.parse.SplitResult, *, create: bool = True) -> SQLiteKeyStore:
        """``sqlite:///relative/keys.db`` or ``sqlite:////absolute/keys.db``, optionally
        with ``?forget_timeout=<seconds>``."""
        options = dict(urllib.parse.parse_qsl(url.query))
        timeout = options.pop("forget_timeout", "30")
        if url.netloc or options:
            raise ValueError(
                "a sqlite key store URL is sqlite:///path[?forget_timeout=seconds]"
                " (no host, no other options)"
            )
        try:
            seconds = float(timeout)
        except ValueError:
            raise ValueError(
                f"forget_timeout must be a number of seconds, got {timeout!r}"
            ) from None
        path = urllib.parse.unquote(url.path[1:] if url.path.startswith("/") else url.path)
        return cls(path, forget_timeout=seconds, create=create)

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
        """Delete the subject's keys, then empty the write-ahead log, whose older frames
        still hold the deleted rows (also when a subject forgotten before had nothing left
        to delete: that forget may have been unable to). ``ForgetIncomplete`` if readers
        kept it from doing so for ``forget_timeout`` seconds."""
        gone = super().forget(subject)
        if gone or self.forgotten(subject):  # an unknown subject left nothing in the log
            waited = self._empty_log()
            if waited is not None:
                raise ForgetIncomplete(subject, gone, f"{self.path}-wal", waited)
        return gone

    def _empty_log(self) -> float | None:
        """Checkpoint the whole log into the file and truncate it, retrying while another
        connection's read transaction keeps it busy; None once done, else the seconds
        waited in vain."""
        started = time.monotonic()
        deadline = started + self.forget_timeout
        while True:
            left = deadline - time.monotonic()
            with self._lock:  # the busy handler waits for readers, up to a second a try
                self._conn.execute(f"PRAGMA busy_timeout = {int(min(max(left, 0), 1) * 1000)}")
                try:
                    busy, log, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                finally:
                    self._conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            if not busy and log <= 0:  # truncated (-1: the file is not in WAL mode)
                return None
            if left <= 0:
                return time.monotonic() - started
            time.sleep(min(0.05, left))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _has_table(conn: sqlite3.Connection, name: str, path: Path) -> bool:
    """Whether the file holds the table ``name``; ``ValueError`` if it is no SQLite file."""
    try:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
    except sqlite3.DatabaseError as error:
        raise ValueError(f"{path}: not a SQLite database: {error}") from None
    return found is not None
