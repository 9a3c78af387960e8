"""Inline projections: read models updated in the very transaction that appends.

For read models that must never lag (a uniqueness index a command checks, a balance shown
right after a payment). The projection is first caught up from its checkpoint; then, in one
write transaction so no append can fall between, the last events are applied and a hook is
installed that runs in every later append's transaction. If the hook raises, that append
fails (``ProjectionError``) and nothing of it is written; the other appends of its group
commit. The read model lives in the store's own database: the SQLite store's file, or the
PostgreSQL store's schema.

The SQLite writer calls the hook once per append, which moves the checkpoint with it. The
PostgreSQL writer works per group commit, where every statement is a round trip: ``begin``
finds the checkpoint and the live build, ``apply`` runs the handlers of each append, whose
``db.write`` statements wait to be sent together as in a runner's batch (``flush`` sends
them per append only when the group runs with a savepoint per append), and ``end`` sends
them with the statement that moves the checkpoint to the group's last event. ``begin``
reads the checkpoint only if this process did not write it last: ``end`` moves it only
from where ``begin`` found it, and the group runs again if it moved. So with one process
appending, an append costs no round trip beyond its handlers' statements. On both
backends, the events another process appended without the projection are applied first,
in the same transaction.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, NamedTuple

from eskit.errors import ProjectionError
from eskit.projections import state as st
from eskit.projections.database import PostgresDatabase, StoreDatabase, database_for
from eskit.projections.failure import describe
from eskit.projections.projection import (
    ReadModelConnection,
    SQLProjection,
    apply,
    physical_names,
)
from eskit.projections.runner import ProjectionRunner, apply_to_head, now
from eskit.projections.sql import Connection, execute
from eskit.store.base import EventStore
from eskit.store.model import RecordedEvent

RESET_OR_STUCK = "the inline projection was reset or is stuck"


class _Checkpoint(NamedTuple):
    """A projection's checkpoint and live build, as a group commit found or left them."""

    generation: int
    names: dict[str, str]
    position: int


class InlineProjection:
    """An installed inline projection; ``await remove()`` to stop updating it inline.

    The SQLite writer calls it once per append; the PostgreSQL writer calls ``begin``,
    ``apply`` (per append), ``flush`` and ``end`` in each group commit."""

    def __init__(
        self, database: StoreDatabase | PostgresDatabase, projection: SQLProjection
    ) -> None:
        self.database = database
        self.projection = projection
        # PostgreSQL: the group being written, and what the last one committed left.
        self._db: ReadModelConnection | None = None
        """The handlers' connection on the live build's tables; None if the projection
        refuses the group's appends, for ``_why``."""
        self._why = RESET_OR_STUCK
        self._found: _Checkpoint | None = None
        self._left: _Checkpoint | None = None
        self._waiting: RecordedEvent | None = None
        """The first event of the last append whose writes may wait for ``flush``."""

    def __call__(self, conn: sqlite3.Connection, events: list[RecordedEvent]) -> None:
        """Run inside an append's transaction with the events it wrote (SQLite)."""
        name = self.projection.name
        row = conn.execute(
            "SELECT generation, tables, position FROM eskit_projections"
            " WHERE name = ? AND status = ?",
            (name, st.RUNNING),
        ).fetchone()
        if row is None:
            raise self._refused(events[0], RESET_OR_STUCK)
        names = physical_names(json.loads(row[1]), row[0])
        try:
            self._catch_up(conn, names, row[2], events[0].position - 1)
        except Exception as error:
            raise self._refused(events[0], _behind(row[2], error)) from error
        self._apply(conn, names, events)
        conn.execute(
            "UPDATE eskit_projections SET position = ?, updated_at = ? WHERE name = ?",
            (events[-1].position, now(), name),
        )

    def begin(self, conn: Connection, head: int, verify: bool) -> None:
        """Start a group commit (PostgreSQL) whose appends follow ``head``. Unless this
        process's last group left the checkpoint there (and ``verify`` is false), read and
        lock it, and apply what was appended up to ``head`` without this projection."""
        self._db = self._found = None
        found = self._left
        if found is None or found.position != head or verify:
            row = execute(
                conn,
                "UPDATE eskit_projections SET updated_at = ? WHERE name = ? AND status = ?"
                " RETURNING generation, tables, position",
                (now(), self.projection.name, st.RUNNING),
            ).fetchone()
            if row is None:
                self._why = RESET_OR_STUCK
                return
            found = _Checkpoint(row[0], physical_names(json.loads(row[1]), row[0]), row[2])
            if found.position < head:
                try:
                    with conn.transaction():  # a savepoint: a failure leaves the group usable
                        self._catch_up(conn, found.names, found.position, head)
                except Exception as error:
                    self._why = _behind(found.position, error)
                    return
        self._found = found
        self._db = ReadModelConnection(conn, found.names)

    def apply(self, conn: Connection, events: list[RecordedEvent]) -> None:
        """Run the handlers on one append's events (PostgreSQL); raise to refuse it. Their
        ``db.write`` statements may wait for ``flush``."""
        if self._db is None:
            raise self._refused(events[0], self._why)
        self._waiting = events[0]
        try:
            self.projection.handle_batch(events, self._db)
        except Exception as error:
            self._db = ReadModelConnection(conn, self._db.names)  # its writes are not sent
            raise self._refused(events[0], describe(error)) from error

    def flush(self, conn: Connection) -> None:
        """Send the writes waiting since ``apply``; a failure refuses the last append."""
        if self._db is not None and self._waiting is not None:
            first, self._waiting = self._waiting, None
            try:
                self._db.flush()
            except Exception as error:
                raise self._refused(first, describe(error)) from error

    def end(self, conn: Connection, position: int) -> None:
        """Send the writes waiting and move the checkpoint to the group's last event, in
        one round trip (PostgreSQL); raise ``ProjectionMoved`` if it is no longer where
        ``begin`` found it (reset, stuck, rebuilt, or moved by another process)."""
        found, name = self._found, self.projection.name
        if self._db is None or found is None:
            return
        self._left = None
        with conn.pipeline():
            self._db.flush()
            moved = execute(
                conn,
                "UPDATE eskit_projections SET position = ?, updated_at = ? WHERE name = ?"
                " AND status = ? AND generation = ? AND position = ? RETURNING position",
                (position, now(), name, st.RUNNING, found.generation, found.position),
            )
        if moved.fetchone() is None:
            raise st.ProjectionMoved(name)
        self._left = found._replace(position=position)

    def _catch_up(self, conn: Any, names: dict[str, str], after: int, until: int) -> None:
        """Apply the events after the checkpoint up to ``until``: appended by a process
        without this inline projection."""
        projection = self.projection
        while after < until:
            page = self.database.page_in(conn, after, projection.batch_size, projection.types)
            assert page is not None, "the log is in the read model's database"
            events = [event for event in page.events if event.position <= until]
            apply(projection, conn, names, events)
            if len(events) < projection.batch_size:
                break
            after = page.next_after

    def _apply(self, conn: Any, names: dict[str, str], events: list[RecordedEvent]) -> None:
        try:
            apply(self.projection, conn, names, events)
        except Exception as error:
            raise self._refused(events[0], describe(error)) from error

    def _refused(self, first: RecordedEvent, why: str) -> ProjectionError:
        """The error the append gets: it names the projection and the append's stream and
        first event (the projection is not stuck: later appends go on). The writer logs it
        once the refusal is final (a PostgreSQL group may run twice)."""
        return ProjectionError(
            self.projection.name,
            first.position,
            first.type,
            str(first.id),
            why,
            refused=first.stream,
        )

    def catch_up_in(self, conn: Connection) -> None:
        """Apply every event past the checkpoint, reading the log in this transaction."""
        projection = self.projection
        state = st.setup(conn, projection, now())
        names = physical_names(state.tables, state.generation)
        position, _ = apply_to_head(self.database, conn, projection, names, state.position)
        st.advance(conn, projection.name, state, position, now())

    async def remove(self) -> None:
        store = self.database.store
        assert store is not None  # add_inline takes only a store's own database
        await store.remove_inline(self)


async def add_inline(store: EventStore, projection: SQLProjection) -> InlineProjection:
    """Keep ``projection`` updated inside every append's transaction from now on."""
    try:
        database = database_for(store)
    except ValueError:
        database = None
    if not isinstance(database, StoreDatabase | PostgresDatabase):
        raise ValueError(
            "inline projections need a SQLite or PostgreSQL store (the read model shares"
            " its database)"
        )
    if not isinstance(projection, SQLProjection) or projection.database is not None:
        raise ValueError("an inline projection must be a SQLProjection in the store's database")
    runner = ProjectionRunner(store, [projection], database=database)
    try:
        await runner.run_until_caught_up()  # the bulk in batches, without holding up appends
    finally:
        await database.close()  # its own connection, if any; the log is read from the store
    failure = runner.worker(projection.name).failure
    if failure is not None:
        raise failure
    inline = InlineProjection(database, projection)
    assert database.store is not None  # database_for gives a store's own database
    await database.store.add_inline(inline, inline.catch_up_in)
    return inline


def _behind(checkpoint: int, error: Exception) -> str:
    return (
        f"it cannot apply the events appended without it after position {checkpoint}"
        f" ({describe(error)})"
    )
