"""Versioned schema migrations for SQLite store files.

Each file ``sqlite_migrations/NNN_name.sql`` is one version, applied once, in order, when the
writer opens the file. The file's version is its ``PRAGMA user_version`` (0 for a new file
and for files written before eskit versioned them). All pending versions are applied in one
``BEGIN IMMEDIATE`` transaction: it takes the file's write lock before reading the version,
so two processes opening the same file at once take turns (the second finds nothing left to
do), and a failing migration leaves the file as it was. ``user_version`` lives in the file's
header page, which SQLite writes inside the transaction, so it moves with the migrations or
not at all. A file newer than this eskit knows is refused: its schema may hold rules (a
trigger, a column) this code would break.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from typing import Final

from eskit.errors import StoreError
from eskit.store.migrations import Migration, load, newest
from eskit.store.sqlite_chain import record_chain_start


def migrations() -> list[Migration]:
    """The SQLite migrations shipped with eskit, in version order."""
    return load("sqlite_migrations")


def version(conn: sqlite3.Connection) -> int:
    """The file's schema version (``PRAGMA user_version``)."""
    found: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return found


def not_newer(conn: sqlite3.Connection, path: str) -> int:
    """The file's schema version; raises ``StoreError`` if it is newer than this eskit."""
    at, known = version(conn), newest(migrations())
    if at > known:
        raise StoreError(
            f"{path}: the store file's schema is at version {at}, newer than this eskit"
            f" knows ({known}): upgrade eskit to open it"
        )
    return at


def migrate(conn: sqlite3.Connection, path: str, key: bytes | None = None) -> list[Migration]:
    """Apply the pending migrations to the file of ``conn`` (in autocommit mode); the ones
    applied (none if it is up to date). ``key`` is the audit key the records a migration
    writes are keyed with (the writers' key). Raises ``StoreError`` for a file newer than
    this eskit."""
    shipped = migrations()
    conn.execute("BEGIN IMMEDIATE")
    try:
        at = not_newer(conn, path)
        applied = [m for m in shipped if m.version > at]
        for migration in applied:
            for statement in statements(migration.sql):
                conn.execute(statement)
            after = _AFTER.get(migration.version)
            if after is not None:
                after(conn, key)
            conn.execute(f"PRAGMA user_version = {migration.version:d}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return applied


def statements(script: str) -> Iterator[str]:
    """The statements of ``script``, one at a time (``executescript`` would COMMIT the
    migration's transaction first). A trigger's body, with its own semicolons, stays whole:
    ``complete_statement`` runs SQLite's own tokenizer."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    if pending.strip() and not _only_comments(pending):
        raise ValueError(f"migration ends inside a statement: {pending.strip()[:60]!r}")


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())


def _add_hash_column(conn: sqlite3.Connection, key: bytes | None) -> None:
    """Files written before the hash chain have an events table without ``hash``: 001's
    ``CREATE TABLE IF NOT EXISTS`` leaves it as it is, so add the column (their events stay
    unlinked). SQLite has no ``ADD COLUMN IF NOT EXISTS``, hence this step in Python."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    if "hash" not in columns:
        conn.execute("ALTER TABLE events ADD COLUMN hash BLOB")


_AFTER: Final[dict[int, Callable[[sqlite3.Connection, bytes | None], None]]] = {
    1: _add_hash_column,
    3: record_chain_start,
}
"""Steps a migration needs that SQL cannot say, run right after its SQL, in its transaction,
with the audit key (a record keyed with it: the database must not see the key)."""
