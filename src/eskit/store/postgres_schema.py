"""Versioned schema migrations for the PostgreSQL store.

Each file ``postgres_migrations/NNN_name.sql`` is one version, applied once, in order. All
pending versions are applied in one transaction that first takes an advisory lock keyed by
the schema, so two processes migrating at once take turns (the second finds nothing left
to do), and a failing migration leaves the schema as it was.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from typing import Final, NamedTuple

import psycopg

from eskit.errors import StoreError, StoreNotFound

_FILE: Final = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_SCHEMA: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class Migration(NamedTuple):
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The migrations shipped with eskit, in version order."""
    folder = importlib.resources.files("eskit.store").joinpath("postgres_migrations")
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    return sorted(found)


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


async def migrate(conn: psycopg.AsyncConnection[object], schema: str) -> list[Migration]:
    """Apply the pending migrations to ``schema``; the ones applied (none if up to date)."""
    check_schema(schema)
    applied: list[Migration] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(schema),))
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(f'SET LOCAL search_path TO "{schema}"')
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS eskit_migrations (version INTEGER PRIMARY KEY,"
            " name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        cursor = await conn.execute("SELECT version FROM eskit_migrations")
        done = {row[0] for row in await cursor.fetchall()}  # type: ignore[index]
        newest = max((m.version for m in migrations()), default=0)
        if done and max(done) > newest:
            raise StoreError(
                f"schema {schema} is at version {max(done)}, newer than this eskit knows"
                f" ({newest}): upgrade eskit"
            )
        for migration in migrations():
            if migration.version in done:
                continue
            await conn.execute(migration.sql.encode())
            await conn.execute(
                "INSERT INTO eskit_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
            applied.append(migration)
    return applied


async def check_version(conn: psycopg.AsyncConnection[object], schema: str) -> None:
    """Raise a clear ``StoreError`` unless ``schema`` holds exactly this eskit's version:
    ``StoreNotFound`` if it has no eskit tables (or does not exist); nothing is created."""
    check_schema(schema)
    newest = max((m.version for m in migrations()), default=0)
    try:
        cursor = await conn.execute(f'SELECT max(version) FROM "{schema}".eskit_migrations')
        row = await cursor.fetchone()
        version = row[0] if row is not None else None  # type: ignore[index]
    except psycopg.errors.UndefinedTable:
        version = None
    if version is None:
        raise StoreNotFound(
            f"PostgreSQL schema {schema}",
            "it has no eskit tables: `eskit migrate URL` creates them",
        )
    if version != newest:
        raise StoreError(
            f"schema {schema} is at version {version}; this eskit needs version {newest}: run"
            " `eskit migrate URL` (or open the store with migrate_on_open=True)"
        )
