"""The test run's own PostgreSQL database, created on first use and dropped at the end.

Tests find the server at ``ESKIT_TEST_POSTGRES`` (default: the machine's
``postgresql://postgres@127.0.0.1:5432/test``). Each run creates a database of its own and
each test a schema in it, so runs and tests never collide. Outside CI a missing server
skips the PostgreSQL tests with the reason; under ``CI=true`` it fails them.
"""

from __future__ import annotations

import hashlib
import os
import socket
import urllib.parse
import uuid

import psycopg
import pytest

SERVER = os.environ.get("ESKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
_database: str | None = None
_error: str | None = None
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
"""Tags this machine's test databases, so that orphans are only dropped by their machine."""


def _with_database(url: str, database: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{database}"))


def database_url() -> str:
    """The URL of this run's database (created on first call); skips or fails if the
    server cannot be reached."""
    global _database, _error
    if _database is None and _error is None:
        name = f"eskit_test_{_HOST}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        try:
            with psycopg.connect(SERVER, autocommit=True, connect_timeout=5) as conn:
                _drop_orphans(conn)
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


def _drop_orphans(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Drop the databases of earlier runs on this machine whose process is gone (a run
    killed before its session ended could not drop its own). Other machines' runs on a
    shared server carry another host tag and are left alone."""
    for (database,) in conn.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"eskit\\_test\\_{_HOST}\\_%",)
    ).fetchall():
        pid = str(database).split("_")[3]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


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
