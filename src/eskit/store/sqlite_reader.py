"""SQLite reader threads: each owns a read-only connection and answers reads in batches;
and the check that a file opened only to read (``readonly=True``) holds a store.

Reads wait on SQLite in these threads, never in the event loop. A thread takes every read
waiting in the shared queue and hands all their results back to the loop in one call, so a
burst of concurrent reads (many commands loading their aggregates at once) costs one
loop wake-up, not one per read.
"""

from __future__ import annotations

import queue
import sqlite3
from collections.abc import Callable
from typing import Final

from eskit.errors import StoreError, StoreNotFound
from eskit.store import sqlite_schema
from eskit.store.migrations import newest
from eskit.store.sqlite_writer import (
    STOP,
    ConnectionThread,
    Operation,
    Outcome,
    answer,
    connect,
    take_batch,
)

MAX_BATCH: Final = 64


class Reader(ConnectionThread):
    """One reader: its connection, then reads from ``requests`` until it takes a STOP."""

    def __init__(
        self,
        path: str,
        requests: queue.SimpleQueue[Operation | object],
        setup: Callable[[], None],
    ) -> None:
        super().__init__(f"eskit-sqlite-reader:{path}")
        self.requests = requests
        self._path = path
        self._setup = setup  # per-thread state of the store (its row decoder)

    def _connect(self) -> sqlite3.Connection:
        conn = connect(self._path, readonly=True)
        self._setup()
        return conn

    def _serve(self, conn: sqlite3.Connection) -> None:
        stop = False
        while not stop:
            batch, stop = take_batch(self.requests, self.requests.get(), MAX_BATCH)
            outcomes: list[Outcome] = []
            for op in batch:
                try:
                    outcomes.append((op, op.run(conn), None))
                except Exception as error:
                    outcomes.append((op, None, error))
            answer(outcomes)


def stop(requests: queue.SimpleQueue[Operation | object], readers: int) -> None:
    """Ask every reader to finish (after the reads queued before)."""
    for _ in range(readers):
        requests.put(STOP)


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
