"""Versioned schema migrations for the PostgreSQL store.

Each file ``postgres_migrations/NNN_name.sql`` is one version, applied once, in order. All
pending versions are applied in one transaction that first takes an advisory lock keyed by
the schema, so two processes migrating at once take turns (the second finds nothing left
to do), and a failing migration leaves the schema as it was. A migration that needs what
SQL cannot do (a hash keyed with the audit key, which the database must not see) has a
step in Python, run right after its file in the same transaction (``_AFTER``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Final

import psycopg

from eskit.errors import StoreError, StoreNotFound
from eskit.store.chain import ChainStart, audit_key, chain_start_hash
from eskit.store.migrations import Migration, load, newest

__all__ = ["Migration", "check_schema", "check_version", "migrate", "migrations"]

_SCHEMA: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def migrations() -> list[Migration]:
    """The PostgreSQL migrations shipped with eskit, in version order."""
    return load("postgres_migrations")


def check_schema(schema: object) -> str:
    if not isinstance(schema, str) or not _SCHEMA.match(schema):
        raise ValueError(
            f"invalid PostgreSQL schema {schema!r}: use 1-63 lower-case letters, digits and"
            " underscores, not starting with a digit"
        )
    return schema


def _lock_key(schema: str) -> int:
    """A stable 63-bit advisory lock key for the schema's migrations."""
    return int.from_bytes(hashlib.sha256(f"eskit:{schema}".encode()).digest()[:8], "big") >> 1


Connection = psycopg.Connection[object]


def record_chain_start(conn: Connection, key: bytes | None) -> None:
    """Record that the chain starts at the next position (migration 005): 1 in a new store,
    after the last event in an upgraded one. The head is locked: no event can slip in."""
    cursor = conn.execute("SELECT position FROM eskit_head FOR UPDATE")
    row = cursor.fetchone()
    assert row is not None
    position = int(row[0]) + 1  # type: ignore[index]
    conn.execute(
        "INSERT INTO eskit_chain_start (position, hash) VALUES (%s, %s)",
        (position, chain_start_hash(position, key)),
    )


def read_chain_start(conn: Connection) -> ChainStart | None:
    """The chain start record, or None if it was removed (in autocommit mode)."""
    try:
        cursor = conn.execute("SELECT position, hash FROM eskit_chain_start")
        row = cursor.fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return None if row is None else ChainStart(int(row[0]), bytes(row[1]))  # type: ignore[index]


_AFTER: Final[dict[int, Callable[[Connection, bytes | None], None]]] = {
    5: record_chain_start,
}
"""Steps a migration needs that SQL cannot say, run right after its SQL, in its transaction,
with the audit key (a record keyed with it: the database must not see the key)."""


def migrate(conn: Connection, schema: str, key: bytes | None = None) -> list[Migration]:
    """Apply the pending migrations to ``schema``; the ones applied (none if up to date).
    ``key`` (default ``ESKIT_AUDIT_KEY``) keys the records a migration writes: give the
    writers' key."""
    check_schema(schema)
    if _version(conn, schema) == newest(migrations()):
        return []  # up to date: no lock, no DDL, so a role without CREATE rights can open
    key = key if key is not None else audit_key()
    applied: list[Migration] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(schema),))
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'SET LOCAL search_path TO "{schema}"')
        conn.execute(
            "CREATE TABLE IF NOT EXISTS eskit_migrations (version INTEGER PRIMARY KEY,"
            " name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        cursor = conn.execute("SELECT version FROM eskit_migrations")
        done = {row[0] for row in cursor.fetchall()}  # type: ignore[index]
        known = newest(migrations())
        if done and max(done) > known:
            raise StoreError(
                f"schema {schema} is at version {max(done)}, newer than this eskit knows"
                f" ({known}): upgrade eskit"
            )
        for migration in migrations():
            if migration.version in done:
                continue
            conn.execute(migration.sql.encode())
            after = _AFTER.get(migration.version)
            if after is not None:
                after(conn, key)
            conn.execute(
                "INSERT INTO eskit_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
            applied.append(migration)
    return applied


def check_version(conn: Connection, schema: str) -> None:
    """Raise a clear ``StoreError`` unless ``schema`` holds exactly this eskit's version:
    ``StoreNotFound`` if it has no eskit tables (or does not exist); nothing is created."""
    check_schema(schema)
    known = newest(migrations())
    version = _version(conn, schema)
    if version is None:
        raise StoreNotFound(
            f"PostgreSQL schema {schema}",
            "it has no eskit tables: `eskit migrate URL` creates them",
        )
    if version != known:
        raise StoreError(
            f"schema {schema} is at version {version}; this eskit needs version {known}: run"
            " `eskit migrate URL` (or open the store with migrate_on_open=True)"
        )


def _version(conn: psycopg.Connection[object], schema: str) -> int | None:
    """The newest migration recorded in ``schema``; None if it has no eskit tables. Reads
    only (no error inside the caller's transaction when the table is missing)."""
    cursor = conn.execute("SELECT to_regclass(%s)", (f'"{schema}".eskit_migrations',))
    row = cursor.fetchone()
    if row is None or row[0] is None:  # type: ignore[index]
        return None
    cursor = conn.execute(f'SELECT max(version) FROM "{schema}".eskit_migrations')
    row = cursor.fetchone()
    return None if row is None else row[0]  # type: ignore[index]
