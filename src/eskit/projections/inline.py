"""Inline projections: read models updated in the very transaction that appends.

For read models that must never lag (a uniqueness index a command checks, a balance shown
right after a payment). The projection is first caught up from its checkpoint; then, in one
write transaction so no append can fall between, the last events are applied and a hook is
installed that runs in every later append's transaction. If the hook raises, that append
fails (``ProjectionError``) and nothing of it is written. SQLite store only: the read model
must live in the store's own file.
"""

from __future__ import annotations

import json
import sqlite3

from eskit.errors import ProjectionError
from eskit.projections import state as st
from eskit.projections.database import StoreDatabase
from eskit.projections.projection import SQLProjection, apply, physical_names
from eskit.projections.runner import ProjectionRunner, apply_to_head, now
from eskit.store.base import EventStore
from eskit.store.model import RecordedEvent
from eskit.store.sqlite import SQLiteStore


class InlineProjection:
    """An installed inline projection; ``await remove()`` to stop updating it inline."""

    def __init__(self, database: StoreDatabase, projection: SQLProjection) -> None:
        self.database = database
        self.projection = projection

    def __call__(self, conn: sqlite3.Connection, events: list[RecordedEvent]) -> None:
        """Run inside an append's transaction with the events it wrote."""
        projection = self.projection
        row = conn.execute(
            "UPDATE eskit_projections SET position = ?, updated_at = ?"
            " WHERE name = ? AND status = ? RETURNING generation, tables",
            (events[-1].position, now(), projection.name, st.RUNNING),
        ).fetchone()
        if row is None:
            raise self._refused(events[0], "the inline projection was reset or is stuck")
        names = physical_names(json.loads(row[1]), row[0])
        try:
            apply(projection, conn, names, events)
        except Exception as error:
            raise self._refused(events[0], f"{type(error).__name__}: {error}") from error

    def _refused(self, first: RecordedEvent, why: str) -> ProjectionError:
        """The error the append gets: it names the projection and the append's first event."""
        return ProjectionError(
            self.projection.name,
            first.position,
            first.type,
            str(first.id),
            f"{why}; the append was refused",
        )

    def catch_up_in(self, conn: sqlite3.Connection) -> None:
        """Apply every event past the checkpoint, reading the log in this transaction."""
        projection = self.projection
        state = st.setup(conn, projection, now())
        names = physical_names(state.tables, state.generation)
        position = apply_to_head(self.database, conn, projection, names, state.position)
        st.advance(conn, projection.name, state, position, now())

    async def remove(self) -> None:
        await self.database.remove_inline(self)


async def add_inline(store: EventStore, projection: SQLProjection) -> InlineProjection:
    """Keep ``projection`` updated inside every append's transaction from now on."""
    if not isinstance(store, SQLiteStore):
        raise ValueError("inline projections need a SQLite store (the read model shares its file)")
    if not isinstance(projection, SQLProjection) or projection.database is not None:
        raise ValueError("an inline projection must be a SQLProjection in the store's database")
    database = StoreDatabase(store)
    runner = ProjectionRunner(store, [projection], database=database)
    await runner.run_until_caught_up()  # the bulk in batches, without holding up appends
    failure = runner.worker(projection.name).failure
    if failure is not None:
        raise failure
    inline = InlineProjection(database, projection)
    await database.add_inline(inline, inline.catch_up_in)
    return inline
