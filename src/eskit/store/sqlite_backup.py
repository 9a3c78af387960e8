"""Backup and restore of a SQLite store file: SQLite's online backup API, page by page.

- **Copy.** The source connection first opens a read transaction and holds it for the
  whole copy, so every step of ``sqlite3_backup_step`` reads that one snapshot: appends go
  on meanwhile (WAL mode), and the copy holds a prefix of the log with every table as it
  was at that moment (without the held transaction, each write of another connection
  would restart the copy from the first page).
- **Restore.** The checked payload is copied into the target the same way. The backup API
  holds the target's write transaction from the first page to the last and commits only
  then, so a restore killed midway leaves the target as it was (or, for a new file, an
  empty one): never half a store.
- **Digests** of every table (``sqlite_sequence`` included: it keeps positions from being
  reused) are measured in the copy, in the payload before it is restored, and in the
  restored file.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Final

import msgspec

from eskit.store.backup_file import (
    BackupError,
    Progress,
    RowDigest,
    Snapshot,
    TableDigest,
    differences,
)

PAGES = 1024
"""Pages copied per backup step (4 MiB with the default page size)."""
BOOKKEEPING: Final = frozenset({"chain_start", "sqlite_sequence"})
"""Tables that hold rows in a new, empty store."""


class SQLiteBackup:
    """The backup capability of a store file (``SQLiteStore.backup_engine``)."""

    backend: Final = "sqlite"
    steps: Final = "pages"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.scratch = path.absolute().parent
        """Where a restore unpacks the copy first: beside the target, on its disk."""

    def copy(self, payload: Path, progress: Progress | None = None) -> Snapshot:
        """Copy the store, as of one moment, into a new database file ``payload``."""
        if not self.path.is_file():
            raise BackupError(f"no such store file: {self.path}")
        with contextlib.closing(_connect(self.path, readonly=True)) as source:
            source.execute("BEGIN")
            source.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot
            with contextlib.closing(_connect(payload)) as copy:
                source.backup(copy, pages=PAGES, progress=_steps(progress))
            source.execute("COMMIT")
        with contextlib.closing(_connect(payload, readonly=True)) as copy:
            return measure(copy)

    def is_empty(self) -> bool:
        """Whether the target holds nothing worth keeping: no file, an empty file, or a
        store whose tables are empty but for the bookkeeping of a new store."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return True
        try:
            with contextlib.closing(_connect(self.path, readonly=True)) as conn:
                return all(
                    name in BOOKKEEPING
                    or conn.execute(f'SELECT 1 FROM "{name}" LIMIT 1').fetchone() is None
                    for name in _tables(conn)
                )
        except sqlite3.DatabaseError:
            return False  # not a database: refuse to overwrite what we cannot read

    def restore(
        self, payload: Path, snapshot: Snapshot, force: bool, progress: Progress | None = None
    ) -> None:
        """Check the payload's tables against ``snapshot``, then copy it into the store
        file in one transaction of the target (the caller checked ``force``)."""
        with contextlib.closing(_connect(payload, readonly=True)) as copy:
            problems = differences(snapshot.tables, measure(copy).tables)
        if problems:
            raise BackupError(
                f"the backup's copy does not match its manifest, {self.path} is unchanged: "
                + "; ".join(problems)
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with (
                contextlib.closing(_connect(payload, readonly=True)) as source,
                contextlib.closing(_connect(self.path)) as target,
            ):
                source.backup(target, pages=PAGES, progress=_steps(progress))
        except sqlite3.Error as error:
            raise BackupError(
                f"restoring into {self.path} failed, it is unchanged: {error}"
            ) from error

    def digests(self) -> Snapshot:
        """The store file's head, events and table digests, as ``copy`` measures them."""
        with contextlib.closing(_connect(self.path, readonly=True)) as conn:
            return measure(conn)


def measure(conn: sqlite3.Connection) -> Snapshot:
    """Measure a store file in one read transaction."""
    conn.execute("BEGIN")
    try:
        tables = {name: _digest(conn, name) for name in _tables(conn)}
        head = conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]
    finally:
        conn.execute("COMMIT")
    events = tables["events"].rows if "events" in tables else 0
    return Snapshot(int(head), events, tables)


def _tables(conn: sqlite3.Connection) -> list[str]:
    """Every table of the file but virtual ones (their shadow tables hold their rows)."""
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'"
        " AND sql NOT LIKE 'CREATE VIRTUAL%' ORDER BY name"
    ).fetchall()
    return [str(name) for (name,) in rows]


_encode = msgspec.msgpack.Encoder().encode


def _digest(conn: sqlite3.Connection, table: str) -> TableDigest:
    digest = RowDigest()
    for row in conn.execute(f'SELECT * FROM "{table}"'):
        digest.add(_encode(row))
    return digest.result()


def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode; ``readonly``: never creates the file."""
    if readonly:
        uri = f"{path.absolute().as_uri()}?mode=rw"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA query_only=1")
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def _steps(progress: Progress | None) -> Callable[[int, int, int], object] | None:
    if progress is None:
        return None

    def step(status: int, remaining: int, total: int) -> None:
        progress(total - remaining, total)

    return step
