"""Bad definitions and bad calls are refused with ``ValueError`` and a clear message, before
anything is written."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import eskit
from eskit.projections import (
    Projection,
    ProjectionRunner,
    ReadModelConnection,
    SQLProjection,
    add_inline,
    handles,
)
from tests.projections.models import Counter, append, store_url

pytestmark = pytest.mark.anyio

BAD_NAMES = ["", "Counter", "1st", "two__parts", "with-dash", "sp ace", "x" * 64, 42, None]


def sql_projection(name: Any = "fine", tables: Any = ("fine",), **attributes: Any) -> type:
    """Define a SQL projection class with these attributes (definition is where it fails)."""

    def count(self: SQLProjection, event: eskit.RecordedEvent, db: ReadModelConnection) -> None:
        pass

    body = {"name": name, "tables": tables, "schema": ("CREATE TABLE {fine} (x)",)}
    body.update(attributes)
    body.setdefault("count", handles("Added")(count))
    return type("Defined", (SQLProjection,), body)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_an_invalid_projection_name_is_refused(name: object) -> None:
    with pytest.raises(ValueError, match="invalid projection name"):
        sql_projection(name=name)


@pytest.mark.parametrize("table", BAD_NAMES)
def test_an_invalid_table_name_is_refused(table: object) -> None:
    with pytest.raises(ValueError, match="invalid table name"):
        sql_projection(tables=(table,))


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"count": None}, "no @handles"),
        ({"tables": ()}, "needs `tables` and `schema`"),
        ({"schema": ()}, "needs `tables` and `schema`"),
        ({"version": 0}, "version must be an int >= 1"),
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
    ],
)
def test_an_incomplete_projection_is_refused(attributes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sql_projection(**attributes)


def test_a_plain_projection_without_handlers_is_refused() -> None:
    with pytest.raises(ValueError, match="no @handles"):
        type("Empty", (Projection,), {"name": "empty"})


def test_handles_needs_event_type_names() -> None:
    with pytest.raises(ValueError, match="one or more event type names"):
        handles()
    with pytest.raises(ValueError, match="one or more event type names"):
        handles("")


def test_two_projections_with_one_name_cannot_share_a_runner(store: eskit.EventStore) -> None:
    with pytest.raises(ValueError, match="unique"):
        ProjectionRunner(store, [Counter(), Counter()])


class Squatter(SQLProjection):
    """Another projection that wants the ``counts`` table of ``Counter``."""

    name = "squatter"
    tables = ("counts",)
    schema = ("CREATE TABLE {counts} (x INTEGER)",)

    @handles("Added")
    def add(self, event: eskit.RecordedEvent, db: ReadModelConnection) -> None:
        pass


async def test_two_projections_cannot_claim_one_table(store: eskit.EventStore) -> None:
    runner = ProjectionRunner(store, [Counter(), Squatter()])
    try:
        with pytest.raises(ValueError, match="'counts' belongs to projection counter"):
            await runner.run_until_caught_up()
    finally:
        await runner.stop()


async def test_a_projection_cannot_take_over_an_application_table(
    store: eskit.EventStore,
) -> None:
    runner = ProjectionRunner(store, [Counter()])
    try:
        await runner.database.write(lambda c: c.execute("CREATE TABLE counts (x INTEGER)"))
        with pytest.raises(ValueError, match="a table named 'counts' already exists"):
            await runner.run_until_caught_up()
    finally:
        await runner.stop()


async def test_inline_projections_need_a_sql_store(tmp_path: Path) -> None:
    async with eskit.open_store(store_url("memory", tmp_path)) as store:
        with pytest.raises(ValueError, match="need a SQLite or PostgreSQL store"):
            await add_inline(store, Counter())


async def test_an_inline_projection_cannot_live_in_another_file(
    sqlite_store: eskit.EventStore,
) -> None:
    class Apart(Counter):
        database = "elsewhere.db"

    with pytest.raises(ValueError, match="in the store's database"):
        await add_inline(sqlite_store, Apart())


async def test_only_a_stuck_projection_can_be_skipped(store: eskit.EventStore) -> None:
    last = await append(store, "cart-1", "Added")
    async with ProjectionRunner(store, [Counter()]) as runner:
        await runner.wait_until(last.last_position)

        with pytest.raises(ValueError, match="is not stuck"):
            await runner.skip("counter", "why not")
        with pytest.raises(ValueError, match="no projection named 'nobody'"):
            await runner.skip("nobody", "why not")


async def test_an_unknown_projection_name_is_refused_by_the_runner(
    store: eskit.EventStore,
) -> None:
    async with ProjectionRunner(store, [Counter()]) as runner:
        with pytest.raises(ValueError, match="no projection named 'nobody'"):
            await runner.wait_until(0, name="nobody")
        with pytest.raises(ValueError, match="no projection named 'nobody'"):
            await runner.rebuild("nobody")


async def test_a_projection_that_cannot_start_fails_wait_until(store: eskit.EventStore) -> None:
    """A projection that cannot even start (its table is taken) should fail ``wait_until``
    as a stuck one does, not leave it waiting forever."""
    last = await append(store, "cart-1", "Added")
    async with ProjectionRunner(store, [Counter(), Squatter()], backoff=0.01) as runner:
        with pytest.raises(ValueError, match="'counts' belongs to projection counter"):
            async with asyncio.timeout(1):
                await runner.wait_until(last.last_position)
