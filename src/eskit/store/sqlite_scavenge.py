"""Scavenging a SQLite store (``eskit.store.scavenge``): each step runs in a group commit of
the store's own writer, so appends of this process and of others take turns with it at the
file's write lock, one bounded transaction at a time."""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections.abc import Sequence
from typing import Any, Final

from eskit.store.scavenge import SQLITE as DIALECT
from eskit.store.scavenge import (
    Removal,
    Step,
    remove_through,
    removed_page,
    restore_rows,
    scavenge_streams,
    stream_rows,
)
from eskit.store.sqlite_engine import SQLiteEngine
from eskit.store.sqlite_writer import connect

INCREMENTAL: Final = 2
"""``PRAGMA auto_vacuum`` of a file that gives free pages back on request."""
VACUUM_STEP: Final = 2048
"""Pages given back per transaction (8 MiB of 4 KiB pages): appends wait at most that long."""


class SQLiteScavenger:
    def __init__(self, engine: SQLiteEngine, path: str) -> None:
        self.engine, self.path = engine, path

    def candidates(self, after: str, limit: int) -> list[str]:
        rows = self.engine.read(
            lambda conn: conn.execute(
                "SELECT stream FROM streams WHERE stream > ? ORDER BY stream LIMIT ?",
                (after, limit),
            ).fetchall()
        )
        return [row[0] for row in rows]

    def count_candidates(self) -> int:
        count: int = self.engine.read(
            lambda conn: conn.execute("SELECT count(*) FROM streams").fetchone()[0]
        )
        return count

    def step(self, streams: Sequence[str], budget: int, now: dt.datetime, by: str) -> Step:
        return self.engine.write(
            lambda conn: scavenge_streams(conn, DIALECT, streams, budget, now, by)
        )

    def removed_page(self, after: int, limit: int) -> list[Removal]:
        return self.engine.read(lambda conn: removed_page(conn, DIALECT, after, limit))

    def rows(self, stream: str, after_version: int, limit: int) -> list[tuple[Any, ...]]:
        return self.engine.read(
            lambda conn: stream_rows(conn, DIALECT, stream, after_version, limit)
        )

    def remove_through(self, stream: str, version: int, now: dt.datetime, by: str) -> int | None:
        return self.engine.write(
            lambda conn: remove_through(conn, DIALECT, stream, version, now, by)
        )

    def restore(self, rows: Sequence[tuple[Any, ...]]) -> int:
        return self.engine.write(lambda conn: restore_rows(conn, DIALECT, rows))

    def size(self) -> int:
        def pages(conn: sqlite3.Connection) -> int:
            count = conn.execute("PRAGMA page_count").fetchone()[0]
            size = conn.execute("PRAGMA page_size").fetchone()[0]
            return int(count) * int(size)

        return self.engine.read(pages)

    def maintain(self, full: bool) -> str:
        mode = self.engine.read(lambda conn: conn.execute("PRAGMA auto_vacuum").fetchone()[0])
        if mode != INCREMENTAL and not full:
            return (
                "not vacuumed: the file was made without incremental auto-vacuum;"
                " run once with full_vacuum (--full-vacuum), which blocks writers while it runs"
            )
        if mode != INCREMENTAL:
            with contextlib.closing(connect(self.path)) as conn:
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                conn.execute("VACUUM")  # rewrites the file: from now on, incremental
            return "vacuumed in full; the file now gives space back incrementally"
        freed = 0
        while True:
            left, given = self.engine.write(_vacuum_step)
            freed += given
            if left == 0 or given == 0:
                return f"vacuumed incrementally: {freed} pages given back"

    def close(self) -> None:
        pass


def _vacuum_step(conn: sqlite3.Connection) -> tuple[int, int]:
    """Give back up to ``VACUUM_STEP`` free pages: (pages still free, pages given back)."""
    before = conn.execute("PRAGMA freelist_count").fetchone()[0]
    conn.execute(f"PRAGMA incremental_vacuum({VACUUM_STEP:d})").fetchall()
    after = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int(after), int(before) - int(after)
