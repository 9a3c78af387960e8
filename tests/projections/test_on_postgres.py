"""Projections over the PostgreSQL store: read models and checkpoints in the store's own
database and schema, written in one transaction, rebuilt beside the live build."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest

import eskit
from eskit.projections import (
    Database,
    PostgresDatabase,
    ProjectionRunner,
    ReadModelConnection,
    SQLProjection,
    handles,
)
from eskit.projections import state as st
from eskit.store.model import RecordedEvent
from tests import postgres

pytestmark = pytest.mark.anyio


class Totals(SQLProjection):
    """Events and amounts per stream, in PostgreSQL (``%s`` placeholders)."""

    name = "totals"
    tables: ClassVar[tuple[str, ...]] = ("totals",)
    schema: ClassVar[tuple[str, ...]] = (
        "CREATE TABLE {totals} (stream TEXT PRIMARY KEY, events BIGINT, amount BIGINT)",
    )
    batch_size = 7

    def __init__(self, fail_on: frozenset[str] = frozenset()) -> None:
        self.fail_on = fail_on

    @handles("Added")
    def added(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        db.write(
            "INSERT INTO {totals} VALUES (%s, 1, %s) ON CONFLICT (stream) DO UPDATE"
            " SET events = {totals}.events + 1, amount = {totals}.amount + excluded.amount",
            (event.stream, event.data["amount"]),
        )
        if event.stream in self.fail_on:
            raise RuntimeError(f"cannot count {event.stream}")


async def totals(database: Database) -> dict[str, tuple[int, int]]:
    rows = await database.read(
        lambda conn: conn.execute("SELECT stream, events, amount FROM totals").fetchall()
    )
    return {stream: (events, amount) for stream, events, amount in rows}


async def fill(store: eskit.EventStore, streams: int, each: int) -> int:
    last = 0
    for n in range(each):
        for s in range(streams):
            result = await store.append(f"cart-{s}", [eskit.NewEvent("Added", {"amount": n})])
            last = result.last_position
    return last


async def test_the_read_model_and_its_checkpoint_live_in_the_store_database() -> None:
    async with eskit.open_store(postgres.store_url()) as store:
        last = await fill(store, streams=3, each=10)
        async with ProjectionRunner(store, [Totals()]) as runner:
            assert isinstance(runner.database, PostgresDatabase)
            async with asyncio.timeout(10):
                await runner.wait_until(last)
            live = await fill(store, streams=1, each=2)
            async with asyncio.timeout(10):
                await runner.wait_until(live)
            assert await totals(runner.database) == {
                "cart-0": (12, 45 + 1),
                "cart-1": (10, 45),
                "cart-2": (10, 45),
            }
            state = await runner.database.read(lambda conn: st.load(conn, "totals"))
            assert state is not None
            assert state.position == live


async def test_a_failing_handler_leaves_nothing_of_its_batch_and_gets_stuck() -> None:
    async with eskit.open_store(postgres.store_url()) as store:
        await fill(store, streams=2, each=3)
        failing = Totals(fail_on=frozenset({"cart-1"}))
        async with ProjectionRunner(store, [failing], backoff=0.01) as runner:
            with pytest.raises(eskit.ProjectionError, match="stuck at position 2"):
                async with asyncio.timeout(10):
                    await runner.wait_until(6)
            assert await totals(runner.database) == {"cart-0": (1, 0)}


async def test_a_rebuild_switches_atomically_and_gives_the_same_digest() -> None:
    async with eskit.open_store(postgres.store_url()) as store:
        last = await fill(store, streams=4, each=25)
        async with ProjectionRunner(store, [Totals()]) as runner:
            async with asyncio.timeout(10):
                await runner.wait_until(last)
            database = runner.database
            before = await database.read(lambda conn: st.digest(conn, ["totals"]))
            await runner.rebuild("totals")
            after = await database.read(lambda conn: st.digest(conn, ["totals"]))
            tables = await database.read(
                lambda conn: conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                    " AND tablename LIKE 'totals%%'"
                ).fetchall()
            )
        assert before == after
        assert tables == [("totals__g2",)]
