"""The PostgreSQL workloads' database: one per benchmark run, a fresh schema per side and run.

The server is ``--postgres URL``, else ``$ESKIT_BENCH_POSTGRES``, else the machine's
``postgresql://postgres@127.0.0.1:5432/test``. The first PostgreSQL workload creates a
database ``eskit_bench_<host>_<pid>_<hex>`` on it, which ``python -m benchmarks`` drops at
the end (a later run on this machine drops those of killed runs); each side of each run
gets a schema of its own in it (eskit's own migrations, applied by ``eskit.open_store`` or
by :func:`prepare`), dropped right after. If the server cannot be
reached, :func:`unavailable` says why and the PostgreSQL workloads are skipped.

Both sides use eskit's schema (``eskit_head``, ``eskit_events`` with its indexes), so they
write and read the very same table layout.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any, Final

import msgspec
import psycopg

from benchmarks.common import EVENT_TYPE, Payload, event_ids
from eskit.store.postgres_schema import migrate
from eskit.testing.databases import drop_orphans, run_database

DEFAULT_SERVER: Final = "postgresql://postgres@127.0.0.1:5432/test"
COLUMNS: Final = "id, stream, category, version, type, data, metadata, recorded_at"
"""The columns of ``eskit_events`` a writer supplies, besides the position."""
CHECK: Final = """
    WITH s AS (
        SELECT stream, count(*) AS n, max(version) AS last, min(position) AS lo,
               max(position) AS hi
        FROM eskit_events WHERE position > %(mark)s GROUP BY stream)
    SELECT coalesce(sum(n), 0)::bigint, coalesce(min(lo), 0), coalesce(max(hi), 0),
           (SELECT position FROM eskit_head), coalesce(bool_and(last = n - 1), true)
    FROM s
"""
"""What :func:`written` checks after the clock: the events past a mark, their positions and
versions, and the head."""

Row = tuple[uuid.UUID, str, str, int, str, str, str, int]
"""An event row as a writer supplies it (``COLUMNS``), prepared before the clock."""


class _Run:
    server: str = os.environ.get("ESKIT_BENCH_POSTGRES", DEFAULT_SERVER)
    database: str | None = None
    error: str | None = None
    version: str = ""


def configure(server: str) -> None:
    """Use ``server`` (a ``postgresql://`` URL) for this run's database."""
    _Run.server, _Run.database, _Run.error = server, None, None


def _with_database(url: str, database: str) -> str:
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(path=f"/{database}"))


def unavailable() -> str | None:
    """None once this run's database exists (it is created on the first call), else why
    the PostgreSQL workloads cannot run."""
    if _Run.database is None and _Run.error is None:
        name = run_database("bench")
        try:
            with psycopg.connect(_Run.server, autocommit=True, connect_timeout=5) as conn:
                drop_orphans(conn, "bench")
                conn.execute(f'CREATE DATABASE "{name}"')
                row = conn.execute("SHOW server_version").fetchone()
                durability = conn.execute(
                    "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name)"
                    " FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit')"
                ).fetchone()
            _Run.database = name
            settings = durability[0] if durability else "?"
            _Run.version = f"PostgreSQL {row[0] if row else '?'} ({settings})"
        except psycopg.Error as error:
            _Run.error = f"PostgreSQL at {_safe(_Run.server)} is not reachable: {error}".strip()
    return None if _Run.database is not None else _Run.error


def _safe(url: str) -> str:
    """The server URL without a password."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{netloc}:{parts.port or 5432}"))


def describe() -> str:
    """One line: the server, its durability settings and the run's database."""
    return f"{_Run.version} at {_safe(_Run.server)}, database {_Run.database} (dropped at the end)"


def database_url() -> str:
    """The URL of this run's database (which must exist: see :func:`unavailable`)."""
    if unavailable() is not None or _Run.database is None:
        raise RuntimeError(_Run.error or "PostgreSQL is not available")
    return _with_database(_Run.server, _Run.database)


def drop_database() -> None:
    """Drop this run's database if it made one."""
    if _Run.database is None:
        return
    with psycopg.connect(_Run.server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{_Run.database}" WITH (FORCE)')
    _Run.database = None


def store_url(schema: str) -> str:
    """``eskit.open_store``'s URL for ``schema`` in this run's database."""
    return f"{database_url()}?schema={schema}"


@contextlib.contextmanager
def fresh_schema() -> Iterator[str]:
    """A new schema name in this run's database; the schema is dropped afterwards (whoever
    created it: ``eskit.open_store`` or :func:`prepare`)."""
    schema = f"bench_{uuid.uuid4().hex[:16]}"
    try:
        yield schema
    finally:
        with psycopg.connect(database_url(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def connect(schema: str) -> psycopg.Connection[Any]:
    """A plain autocommit connection working in ``schema`` (raw's)."""
    return psycopg.connect(database_url(), autocommit=True, options=f"-c search_path={schema}")


async def aconnect(schema: str) -> psycopg.AsyncConnection[Any]:
    """The same, async."""
    return await psycopg.AsyncConnection.connect(
        database_url(), autocommit=True, options=f"-c search_path={schema}"
    )


async def prepare(schema: str, rows: list[Row] | None = None) -> None:
    """Create ``schema`` with eskit's migrations and, with ``rows``, fill it with them
    (positions 1, 2, ...; ``COPY``, then ``VACUUM ANALYZE``: setup, never timed)."""
    with psycopg.connect(database_url(), autocommit=True) as conn:
        migrate(conn, schema)
        if not rows:
            return
        conn.execute(f'SET search_path TO "{schema}"')
        with conn.transaction():
            cursor = conn.cursor()
            with cursor.copy(f"COPY eskit_events (position, {COLUMNS}) FROM STDIN") as copy:
                for position, row in enumerate(rows, 1):
                    copy.write_row((position, *row))
            conn.execute("UPDATE eskit_head SET position = %s", (len(rows),))
        conn.execute("VACUUM ANALYZE eskit_events")


def rows(where: list[tuple[str, int]], items: list[Payload], id_start: int = 0) -> list[Row]:
    """The rows of ``items`` at (stream, version) ``where``, as eskit would store them:
    UUIDv7-shaped ids, category ``invoice``, JSON text, one timestamp (µs)."""
    encode = msgspec.json.encode
    now = time.time_ns() // 1_000
    ids = event_ids(len(items), id_start)
    return [
        (
            uuid.UUID(bytes=id_),
            stream,
            stream.partition("-")[0],
            version,
            EVENT_TYPE,
            encode(data).decode(),
            encode(meta).decode(),
            now,
        )
        for id_, (stream, version), (data, meta) in zip(ids, where, items, strict=True)
    ]


def written(check: tuple[Any, ...] | None, mark: int) -> int:
    """How many events were written past position ``mark``, if they are as they must be:
    positions mark + 1, mark + 2, ... without a gap, the head at the last of them, every
    stream's versions 0, 1, 2, ... Returns 0 (so the row shows WRONG COUNT) otherwise."""
    assert check is not None
    count, low, high, head, versions_dense = check
    if count == 0:
        return 0
    dense = low == mark + 1 and high == mark + count
    return int(count) if dense and head == high and versions_dense else 0
