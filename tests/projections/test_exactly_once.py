"""SQL read models commit with their checkpoint: a batch that fails leaves neither its writes
nor a checkpoint advance, and a read model in a file of its own keeps its checkpoint there."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import eskit
from eskit.projections import (
    Database,
    ProjectionRunner,
    ReadModelConnection,
    SQLProjection,
    handles,
)
from eskit.projections import state as st
from tests.projections.models import Counter, append, counts, stored

pytestmark = pytest.mark.anyio


class WritesThenFails(SQLProjection):
    """Writes a row for every event, then raises on ``Poison``: after the row is written."""

    name = "writes_then_fails"
    tables = ("rows",)
    schema = ("CREATE TABLE {rows} (position INTEGER PRIMARY KEY, type TEXT NOT NULL)",)

    @handles("Added", "Poison")
    def write(self, event: eskit.RecordedEvent, db: ReadModelConnection) -> None:
        db.execute("INSERT INTO {rows} VALUES (?, ?)", (event.position, event.type))
        if event.type == "Poison":
            raise RuntimeError("fails after writing")


async def test_a_handler_that_raises_after_writing_leaves_no_write_and_no_checkpoint(
    store: eskit.EventStore, readmodels: Database
) -> None:
    await append(store, "cart-1", "Added", "Added")
    poison = await append(store, "cart-1", "Poison")
    await append(store, "cart-1", "Added")

    async with ProjectionRunner(
        store, [WritesThenFails()], database=readmodels, retries=1, backoff=0.001
    ) as runner:
        with pytest.raises(eskit.ProjectionError):
            await runner.wait_until(poison.last_position)
    rows = await readmodels.read(lambda c: c.execute("SELECT position, type FROM rows").fetchall())
    state = await stored(readmodels, WritesThenFails.name)

    assert rows == [(1, "Added"), (2, "Added")]
    assert (state.position, state.status) == (2, st.STUCK)


async def test_a_read_model_in_a_file_of_its_own_keeps_its_checkpoint_there(
    store: eskit.EventStore, tmp_path: Path
) -> None:
    path = tmp_path / "readmodels.db"

    class Apart(Counter):
        database = str(path)

    await append(store, "cart-1", "Added", "Other")
    last = await append(store, "cart-2", "Removed")
    async with ProjectionRunner(store, [Apart()]) as runner:
        await runner.wait_until(last.last_position)
        in_main_database = await runner.database.read(st.load_all)

    with sqlite3.connect(path) as conn:
        [(checkpoint, rows)] = conn.execute(
            "SELECT position, (SELECT count(*) FROM counts) FROM eskit_projections"
            " WHERE name = 'counter'"
        ).fetchall()
    assert (checkpoint, rows) == (last.last_position, 2)
    assert in_main_database == []


async def test_the_counter_is_untouched_by_a_failed_batch_of_another_projection(
    store: eskit.EventStore, readmodels: Database
) -> None:
    """Two projections share one database: one's failing transaction takes nothing of the
    other's committed work with it."""
    last = await append(store, "cart-1", "Added", "Poison", "Added")

    async with ProjectionRunner(
        store, [Counter(), WritesThenFails()], database=readmodels, retries=0, backoff=0.001
    ) as runner:
        await runner.wait_until(last.last_position, name="counter")
        with pytest.raises(eskit.ProjectionError):
            await runner.wait_until(last.last_position, name="writes_then_fails")

    assert await counts(readmodels) == {("cart-1", "Added"): 2}
