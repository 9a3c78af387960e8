"""Stored projection errors about a forgotten subject's events, scrubbed by ``forget``.

Errors are redacted before they are stored (``eskit.projections.failure``), but an error
stored by an older eskit, or one that quotes a value redaction could not recognise, may
still hold personal data. Forgetting a subject therefore replaces the text of every stored
error about an event that holds a field its key no longer opens (``scrubbed``): the stuck
projections and partitions, the record of skipped events, and the reasons consumer groups
parked events for. The error's type, the
event, its position and the projection stay, for the operator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final, NamedTuple

from eskit.projections.database import PostgresDatabase, StoreDatabase, database_for
from eskit.projections.failure import scrubbed
from eskit.projections.sql import Connection, columns, execute
from eskit.store.base import EventStore
from eskit.store.model import RecordedEvent

ERROR_TABLES: Final = (
    ("eskit_projections", "error_event", "error_position", "error"),
    ("eskit_partitions", "error_event", "error_position", "error"),
    ("eskit_projection_skips", "event_id", "position", "error"),
    ("eskit_group_parked", "event_id", "position", "reason"),
)
"""The tables that keep an error text, with the columns naming its event and the text's
(a consumer group's parked events keep the reason they were parked for)."""


class StoredError(NamedTuple):
    table: str
    event_id: str
    position: int
    error: str


async def scrub_errors(store: EventStore, forgotten: Callable[[RecordedEvent], bool]) -> int:
    """Replace the stored errors about events ``forgotten`` says are a forgotten
    subject's, in the store's own database; return how many were replaced. A memory
    store keeps none that outlive it."""
    try:
        database = database_for(store)
    except ValueError:  # a store without a database of its own: no stored errors
        return 0
    if not isinstance(database, StoreDatabase | PostgresDatabase):
        await database.close()
        return 0
    try:
        found = await database.read(stored_errors)
        doomed = [row for row in found if await _about_forgotten(store, row, forgotten)]
        if doomed:
            await database.write(lambda conn: replace(conn, doomed))
        return len(doomed)
    finally:
        await database.close()


def stored_errors(conn: Connection) -> list[StoredError]:
    """Every error text the projections' tables keep, with its event."""
    found: list[StoredError] = []
    for table, event_column, position_column, text in ERROR_TABLES:
        if event_column not in columns(conn, table):  # no such table (yet), or an old one
            continue
        rows = execute(
            conn,
            f"SELECT {event_column}, {position_column}, {text} FROM {table}"
            f" WHERE {text} IS NOT NULL AND {text} <> '' AND {event_column} IS NOT NULL",
        ).fetchall()
        found.extend(StoredError(table, *row) for row in rows)
    return found


def replace(conn: Connection, rows: list[StoredError]) -> None:
    """Scrub these errors (unless they changed since they were read)."""
    named = {table: (event_column, text) for table, event_column, _, text in ERROR_TABLES}
    for row in rows:
        event_column, text = named[row.table]
        execute(
            conn,
            f"UPDATE {row.table} SET {text} = ? WHERE {event_column} = ? AND {text} = ?",
            (scrubbed(row.error), row.event_id, row.error),
        )


async def _about_forgotten(
    store: EventStore, row: StoredError, forgotten: Callable[[RecordedEvent], bool]
) -> bool:
    page = await store.read_page(after=row.position - 1, limit=1)
    for event in page.events:
        if str(event.id) == row.event_id:
            return await asyncio.to_thread(forgotten, event)  # it may ask the key store
    return False
