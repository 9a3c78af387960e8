"""SQLite reader connections, used in the caller's thread; and the check that a file opened
only to read (``readonly=True``) holds a store.

A read checks a connection out of the pool, runs on it in the thread that asked, and gives
it back: no reader thread, no queue, no hand-off. WAL lets readers run while the writer
writes. Connections are opened on demand, up to a bound; a caller that finds them all busy
waits for one.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import TypeVar

from eskit.errors import StoreClosed, StoreError, StoreNotFound
from eskit.store import sqlite_schema
from eskit.store.migrations import newest
from eskit.store.sqlite_reads import RowDecoder
from eskit.store.sqlite_writer import _CLOSING, connect

T = TypeVar("T")


class Busy(Exception):
    """Every reader is in use (``ReaderPool.read`` told not to wait)."""


class Reader:
    """A read-only connection, its own row decoder (it caches the last timestamp) and a
    cursor kept for the hottest read (``events_after``, one per command on a kept state:
    ``conn.execute`` makes a cursor every time)."""

    __slots__ = ("conn", "cursor", "decode")

    def __init__(self, path: str) -> None:
        self.conn = connect(path, readonly=True)
        self.cursor = self.conn.cursor()
        self.decode = RowDecoder()


class ReaderPool:
    """Up to ``size`` readers, each used by one caller at a time (see the module)."""

    def __init__(self, path: str, size: int) -> None:
        self._path = path
        self._size = size
        self._idle: list[Reader] = []
        self._opened = 0  # readers that exist: idle or checked out
        self._closed = False
        self._waiting = 0  # callers waiting for a reader (a give-back notifies only then)
        self._lock = threading.Lock()
        self._returned = threading.Condition(self._lock)

    def read(self, run: Callable[[Reader], T], wait: bool = True) -> T:
        """Run ``run`` on a reader of the pool, in this thread. Not ``wait``: raise ``Busy``
        rather than wait for a reader (an event loop must not)."""
        reader = self._check_out(wait)
        try:
            return run(reader)
        finally:
            self._give_back(reader)

    def _check_out(self, wait: bool) -> Reader:
        with self._lock:
            while True:
                if self._closed:
                    raise StoreClosed("the store is closing")
                if self._idle:
                    return self._idle.pop()
                if self._opened < self._size:
                    self._opened += 1
                    break
                if not wait:
                    raise Busy
                self._waiting += 1
                try:
                    self._returned.wait()
                finally:
                    self._waiting -= 1
        try:
            return Reader(self._path)
        except BaseException:
            with self._lock:
                self._opened -= 1
                self._returned.notify()
            raise

    def _give_back(self, reader: Reader) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(reader)
                if self._waiting:  # Condition.notify is Python code: not on every read
                    self._returned.notify()
                return
        self._close_one(reader)

    def _close_one(self, reader: Reader) -> None:
        with _CLOSING:
            reader.conn.close()
        with self._lock:
            self._opened -= 1
            self._returned.notify_all()

    def close(self) -> None:
        """Refuse new reads, wait for those running, close every connection (one at a
        time: the last to close a WAL file removes it)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._returned.notify_all()  # callers waiting for a reader give up
        for reader in idle:
            self._close_one(reader)
        with self._lock:
            while self._opened:
                self._returned.wait()


def check_store(conn: sqlite3.Connection, path: str) -> None:
    """Raise unless the file holds an eskit store at this eskit's schema version (a
    read-only open cannot create or upgrade tables; the writer does that when it connects)."""
    try:
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        at = sqlite_schema.not_newer(conn, path)
    except sqlite3.DatabaseError as error:
        raise StoreNotFound(path, f"not a SQLite database: {error}") from error
    if "events" not in tables:
        raise StoreNotFound(path, "the file has no eskit tables")
    known = newest(sqlite_schema.migrations())
    if at < known:
        raise StoreError(
            f"{path}: its schema (version {at}) is older than this eskit's ({known}): run"
            " `eskit migrate URL` (or open it once for writing, e.g. with your application)"
            " to upgrade it, then read it again"
        )
