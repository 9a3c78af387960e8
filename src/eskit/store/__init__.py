"""The event store: envelopes in and out, one contract, a backend per technology."""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Any

from eskit.store.base import EventStore
from eskit.store.memory import MemoryStore
from eskit.store.model import RawData
from eskit.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from eskit.store.postgres import PostgresStore

__all__ = [
    "EventStore",
    "MemoryStore",
    "PostgresStore",
    "RawData",
    "SQLiteStore",
    "open_store",
]


def open_store(url: str, **options: Any) -> EventStore:
    """Create the store named by ``url``; open it with ``async with`` (or ``await .open()``).

    - ``memory://`` keeps events in this process (tests, examples).
    - ``sqlite:///relative/events.db`` or ``sqlite:////absolute/events.db`` is an embedded
      file; ``?synchronous=NORMAL`` trades the last commits on power loss for speed.
    - ``postgresql://user@host:port/database?schema=name`` is PostgreSQL (the schema, by
      default ``public``, is created and migrated on open).

    Options (``max_event_size=``, ``clock=``, ...) go to the backend's constructor.
    Raises ``ValueError`` for a URL eskit cannot open.

    ``readonly=True`` opens an existing store to inspect it and never creates one: opening
    raises ``StoreNotFound`` (a missing file or folder, a file or a PostgreSQL schema
    without eskit's tables, any ``memory://``) and leaves nothing behind; a schema that
    needs an upgrade raises ``StoreError`` (a read-only open cannot migrate); every write
    raises ``StoreError``. Neither SQLite nor PostgreSQL opens a write connection then.
    """
    if not isinstance(url, str):
        raise ValueError(f"store URL must be a str, got {url!r}")
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "memory":
        return MemoryStore(**options)
    if parsed.scheme == "sqlite":
        return SQLiteStore.from_url(parsed, **options)
    if parsed.scheme in ("postgresql", "postgres"):
        from eskit.store.postgres import PostgresStore  # psycopg only loads when used

        return PostgresStore.from_url(parsed, **options)
    raise ValueError(
        f"unsupported store URL {url!r}: use memory://, sqlite:///path/to/file.db"
        " or postgresql://user@host/database"
    )


def __getattr__(name: str) -> Any:
    """``eskit.store.PostgresStore`` without importing psycopg for SQLite-only users."""
    if name == "PostgresStore":
        from eskit.store.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
