"""Reading and writing a SQL projection's live tables from outside its handlers.

Handlers get their tables from the runner. Other code (a process manager's ``tick``, a
query that needs the physical FTS5 table for ``bm25``/``snippet``) resolves the live build
here, in the same transaction as the work, so a concurrent rebuild's switch cannot slip
between the lookup and the use.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TypeVar

from eskit.projections import state as st
from eskit.projections.database import Database
from eskit.projections.projection import ReadModelConnection, SQLProjection, physical_names

T = TypeVar("T")


def live_tables(
    conn: sqlite3.Connection, projection: SQLProjection | type[SQLProjection]
) -> dict[str, str]:
    """The physical tables of the projection's live build, by logical name (read them in
    the transaction that uses them)."""
    current = st.load(conn, projection.name)
    if current is None:
        raise LookupError(f"projection {projection.name} has not been built yet")
    return physical_names(current.tables, current.generation)


def _live(
    conn: sqlite3.Connection,
    projection: SQLProjection | type[SQLProjection],
    run: Callable[[ReadModelConnection], T],
) -> T:
    db = ReadModelConnection(conn, live_tables(conn, projection))
    result = run(db)
    db.flush()
    return result


async def read_live(
    database: Database,
    projection: SQLProjection | type[SQLProjection],
    run: Callable[[ReadModelConnection], T],
) -> T:
    """Run ``run(db)`` in a read transaction, ``{table}`` naming the live build's tables."""
    return await database.read(lambda conn: _live(conn, projection, run))


async def write_live(
    database: Database,
    projection: SQLProjection | type[SQLProjection],
    run: Callable[[ReadModelConnection], T],
) -> T:
    """Run ``run(db)`` in a write transaction on the live build's tables."""
    return await database.write(lambda conn: _live(conn, projection, run))
