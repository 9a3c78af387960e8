"""Opening a SQLite file (``sqlite_writer.connect``, what the store and the read models'
``SQLiteDatabase`` open files with) never waits behind another connection's write."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from eskit.store.sqlite_writer import connect


def test_a_new_file_frees_pages_in_steps(tmp_path: Path) -> None:
    conn = connect(str(tmp_path / "new.db"))
    try:
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_opening_does_not_wait_for_a_write_in_progress(tmp_path: Path) -> None:
    """Another process's first transaction (its tables not committed yet) holds the write
    lock: opening the file asked for its auto_vacuum mode again, which waits for that lock,
    and failed with 'database is locked' after the 10 s busy timeout (seen in the broker
    suite's kill test, whose worker creates its read model slowly)."""
    path = str(tmp_path / "busy.db")
    connect(path).close()  # the file, as eskit makes it, without tables
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("CREATE TABLE read_model (x)")
        start = time.monotonic()
        conn = connect(path)
        conn.close()
        assert time.monotonic() - start < 1.0
    finally:
        writer.execute("ROLLBACK")
        writer.close()
