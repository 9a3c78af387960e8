"""The few places where SQLite and PostgreSQL differ, for the projections' own tables.

eskit's projection SQL is written once, with ``?`` placeholders; on PostgreSQL (psycopg)
they become ``%s``. Handlers' SQL goes through ``ReadModelConnection``, which does the same
(``portable``): a read model written with ``?`` or ``:name`` placeholders runs on both.
"""

from __future__ import annotations

import re
import sqlite3
from functools import lru_cache
from typing import Any

Connection = Any
"""A DB-API connection: ``sqlite3.Connection`` or ``psycopg.Connection``."""


def is_sqlite(conn: Connection) -> bool:
    return isinstance(conn, sqlite3.Connection)


def execute(conn: Connection, statement: str, parameters: Any = ()) -> Any:
    """Run one of eskit's statements (``?`` placeholders) on either database."""
    if not is_sqlite(conn):
        statement = statement.replace("?", "%s")
    return conn.execute(statement, parameters)


_TOKENS = re.compile(
    r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/|::|(?<![\w:]):([A-Za-z_]\w*)|\?|%""",
    re.DOTALL,
)
"""What ``portable`` looks at: string literals, quoted names and comments (whose ``?``
and ``:`` are not placeholders), ``::`` casts, ``:name`` and ``?`` placeholders, and ``%``
(doubled for psycopg, everywhere)."""


@lru_cache(maxsize=4096)
def portable(statement: str) -> str:
    """``statement`` with its ``?`` and ``:name`` placeholders in psycopg's style (``%s``,
    ``%(name)s``; a literal ``%`` doubled). A statement without either is returned as it
    is: it may be written for psycopg already (``%s``)."""
    found = False

    def swap(match: re.Match[str]) -> str:
        nonlocal found
        text = match.group(0)
        if text == "?":
            found = True
            return "%s"
        if match.group(1) is not None:
            found = True
            return f"%({match.group(1)})s"
        return text.replace("%", "%%")  # psycopg reads every %, in literals too

    translated = _TOKENS.sub(swap, statement)
    return translated if found else statement


def kind_of(conn: Connection, name: str) -> str | None:
    """'table', 'view' or None: what ``name`` is in the current schema."""
    if is_sqlite(conn):
        row = conn.execute(
            "SELECT type FROM sqlite_master WHERE name = ? AND type IN ('table', 'view')",
            (name,),
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT CASE c.relkind WHEN 'v' THEN 'view' ELSE 'table' END FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = %s"
            " AND n.nspname = current_schema() AND c.relkind IN ('r', 'v', 'p', 'm', 'f')",
            (name,),
        ).fetchone()
    return None if row is None else str(row[0])


def columns(conn: Connection, table: str) -> set[str]:
    """The columns ``table`` has in the current schema; empty if there is no such table."""
    if is_sqlite(conn):
        return {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")').fetchall()}
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s",
        (table,),
    ).fetchall()
    return {row[0] for row in rows}


def lock_setup(conn: Connection) -> None:
    """Serialise the creation of projection tables with other processes for the rest of the
    transaction. SQLite's write lock already does; PostgreSQL's ``CREATE TABLE IF NOT
    EXISTS`` run at the same moment by two sessions fails in one of them."""
    if not is_sqlite(conn):
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('eskit_projections:' || current_schema()))"
        )


def now_sql(conn: Connection) -> str:
    """SQL for the database's clock in microseconds since 1970: leases and deadlines kept
    by machines whose clocks disagree still agree."""
    if is_sqlite(conn):
        return "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)"
    return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)"
