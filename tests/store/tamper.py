"""Changing a store's log behind eskit's back, past its guard triggers, as an intruder with
the SQLite file or with PostgreSQL's superuser (or the tables' owner) can: for the tests of
``eskit verify``, which must find what such a change did.

- SQLite: ``sqlite_past_guard(path)`` drops every trigger on ``events``, ``removals`` and
  ``chain_start`` inside one transaction, yields the connection, then recreates them from
  their saved SQL and commits: outside that transaction the guard never looked absent.
- PostgreSQL: ``postgres_past_guard(url)`` connects as the server's superuser to the store's
  schema and sets ``session_replication_role = replica`` for one transaction, in which
  ordinary triggers do not fire.

``tamper_sqlite`` and ``tamper_postgres`` run statements (SQL, or SQL and its parameters)
that way; the guard stays in place for everyone else.
"""

from __future__ import annotations

import contextlib
import sqlite3
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg

Statement = str | tuple[str, Sequence[Any]]

GUARDED = ("events", "removals", "chain_start")
"""The SQLite tables whose triggers the intruder drops."""


@contextlib.contextmanager
def sqlite_past_guard(path: str | Path) -> Iterator[sqlite3.Connection]:
    """A connection to the store file inside one transaction without the guard triggers;
    committed (triggers back) when the block ends, rolled back if it raises."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("BEGIN IMMEDIATE")
        triggers = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
            f" AND tbl_name IN ({', '.join('?' * len(GUARDED))})",
            GUARDED,
        ).fetchall()
        for name, _ in triggers:
            conn.execute(f'DROP TRIGGER "{name}"')
        try:
            yield conn
            for _, sql in triggers:
                conn.execute(sql)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()


def tamper_sqlite(path: str | Path, *statements: Statement) -> None:
    """Run ``statements`` on the store file at ``path`` past its guard triggers."""
    with sqlite_past_guard(path) as conn:
        for statement in statements:
            _run(conn, statement)


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///`` store URL."""
    return urllib.parse.unquote(url.removeprefix("sqlite:///"))


@contextlib.contextmanager
def postgres_past_guard(url: str) -> Iterator[psycopg.Connection[Any]]:
    """A superuser connection to the store at ``url`` (``...?schema=name``), its search
    path on the store's schema, inside one transaction in which triggers do not fire."""
    parts = urllib.parse.urlsplit(url)
    schema = dict(urllib.parse.parse_qsl(parts.query)).get("schema", "public")
    server = urllib.parse.urlunsplit(parts._replace(query=""))
    with psycopg.connect(server, autocommit=True) as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(f'SET LOCAL search_path TO "{schema}"')
        yield conn


def tamper_postgres(url: str, *statements: Statement) -> None:
    """Run ``statements`` on the store at ``url`` past its guard triggers."""
    with postgres_past_guard(url) as conn:
        for statement in statements:
            _run(conn, statement)


def _run(conn: sqlite3.Connection | psycopg.Connection[Any], statement: Statement) -> None:
    if isinstance(statement, str):
        conn.execute(statement)
    else:
        conn.execute(statement[0], statement[1])
