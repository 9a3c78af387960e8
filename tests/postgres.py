"""The test run's own PostgreSQL database, created on first use and dropped at the end.

Tests find the server at ``ESKIT_TEST_POSTGRES`` (default: the machine's
``postgresql://postgres@127.0.0.1:5432/test``). Each run creates a database of its own and
each test a schema in it, so runs and tests never collide. Outside CI a missing server
skips the PostgreSQL tests with the reason; under ``CI=true`` it fails them.
"""

from __future__ import annotations

import os
import urllib.parse
import uuid

import psycopg
import pytest

from eskit.testing.databases import drop_orphans, run_database

SERVER = os.environ.get("ESKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
_database: str | None = None
_error: str | None = None


def _with_database(url: str, database: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{database}"))


def database_url() -> str:
    """The URL of this run's database (created on first call); skips or fails if the
    server cannot be reached."""
    global _database, _error
    if _database is None and _error is None:
        name = run_database("test")
        try:
            with psycopg.connect(SERVER, autocommit=True, connect_timeout=5) as conn:
                drop_orphans(conn, "test")
                conn.execute(f'CREATE DATABASE "{name}"')
            _database = name
        except psycopg.Error as error:
            _error = f"PostgreSQL at {SERVER} is not reachable: {error}"
    if _database is None:
        reason = _error or "PostgreSQL is not reachable"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: service tests must run)")
        pytest.skip(reason)
    return _with_database(SERVER, _database)


def store_url() -> str:
    """A store URL with a schema of its own in this run's database."""
    return f"{database_url()}?schema=t_{uuid.uuid4().hex[:16]}"


def drop_database() -> None:
    """Drop this run's database, if it made one (at the end of the session)."""
    global _database
    if _database is None:
        return
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{_database}" WITH (FORCE)')
    _database = None
