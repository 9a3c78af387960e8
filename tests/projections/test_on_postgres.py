"""Projections over the PostgreSQL store: read models and checkpoints in the store's own
database and schema, written in one transaction, rebuilt beside the live build.

The whole read-side suite runs on PostgreSQL too (the ``store`` fixture's ``postgres``
param, and the crash test); this file holds what is particular to it: handlers written in
PostgreSQL's own SQL, a read-model connection the server drops, two runners on one schema.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, ClassVar

import psycopg
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


async def test_a_read_model_connection_the_server_drops_is_replaced() -> None:
    """The server ends the read-model connection (a restart, a failover, an admin's
    ``pg_terminate_backend``): the next batch opens a new one, and no event is lost or
    applied twice."""
    async with eskit.open_store(postgres.store_url()) as store:
        first = await fill(store, streams=2, each=3)
        async with ProjectionRunner(store, [Totals()], backoff=0.01) as runner:
            async with asyncio.timeout(10):
                await runner.wait_until(first)
            pid = await runner.database.read(lambda conn: conn.info.backend_pid)
            async with await psycopg.AsyncConnection.connect(
                postgres.database_url(), autocommit=True
            ) as admin:
                await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            last = await fill(store, streams=2, each=2)
            async with asyncio.timeout(10):
                await runner.wait_until(last)
            replaced = await runner.database.read(lambda conn: conn.info.backend_pid)
            [status] = await runner.status()
            assert await totals(runner.database) == {"cart-0": (5, 3 + 1), "cart-1": (5, 3 + 1)}
        assert replaced != pid
        assert (status.status, status.position) == ("running", last)


async def test_two_runners_of_one_projection_apply_each_event_once() -> None:
    """Two processes (here: two stores on one schema) run the same projection: there are no
    leases yet, so both try every batch, but a batch commits only from the checkpoint it
    was read at; the other runner's transaction rolls back before applying anything, and it
    reloads and goes on from there. (The projection is set up first: two sessions creating
    eskit's tables at the same moment collide in PostgreSQL's catalog, and one retries.)"""
    url = postgres.store_url()
    async with eskit.open_store(url) as one, eskit.open_store(url) as two:
        setup = ProjectionRunner(one, [Totals()])
        await setup.run_until_caught_up()
        await setup.stop()
        await fill(one, streams=5, each=40)
        async with (
            ProjectionRunner(one, [Totals()]) as first,
            ProjectionRunner(two, [Totals()]) as second,
        ):
            live = await fill(two, streams=5, each=10)
            async with asyncio.timeout(20):
                await first.wait_until(live)
                await second.wait_until(live)
            counted = await totals(first.database)
    assert counted == {f"cart-{s}": (50, 780 + 45) for s in range(5)}


async def test_two_processes_setting_up_the_same_projection_at_once_both_succeed() -> None:
    url = postgres.store_url()
    async with eskit.open_store(url) as one, eskit.open_store(url) as two:
        await fill(one, streams=2, each=2)
        first, second = ProjectionRunner(one, [Totals()]), ProjectionRunner(two, [Totals()])
        await asyncio.gather(first.run_until_caught_up(), second.run_until_caught_up())
        assert await totals(first.database) == {"cart-0": (2, 1), "cart-1": (2, 1)}
        await first.stop()
        await second.stop()


async def test_a_read_model_connection_that_cannot_reopen_for_a_while_blames_no_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database, not a handler, failed: the runner backs off and carries on; it never
    marks a good event as the one it is stuck on."""
    async with eskit.open_store(postgres.store_url()) as store:
        first = await fill(store, streams=2, each=3)
        async with ProjectionRunner(store, [Totals()], backoff=0.01) as runner:
            async with asyncio.timeout(10):
                await runner.wait_until(first)
            database = runner.database
            assert isinstance(database, PostgresDatabase)
            pid = await database.read(lambda conn: conn.info.backend_pid)
            refusals = iter(range(6))
            reopen = PostgresDatabase._connection

            def refusing(self: PostgresDatabase) -> psycopg.Connection[Any]:
                if self._conn is None and next(refusals, None) is not None:
                    raise psycopg.OperationalError("connection refused (server restarting)")
                return reopen(self)

            monkeypatch.setattr(PostgresDatabase, "_connection", refusing)
            async with await psycopg.AsyncConnection.connect(
                postgres.database_url(), autocommit=True
            ) as admin:
                await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            last = await fill(store, streams=2, each=1)
            async with asyncio.timeout(10):
                await runner.wait_until(last)
            (status,) = await runner.status()
            assert status.status == "running"
            assert await totals(database) == {"cart-0": (4, 3), "cart-1": (4, 3)}


async def test_a_runner_with_a_postgres_database_of_its_own() -> None:
    """The read model in another PostgreSQL database and schema than the log: batches are
    read from the store, then applied there (the schema is created on first use)."""
    schema = f"read_{uuid.uuid4().hex[:12]}"
    database = PostgresDatabase(url=postgres.database_url(), schema=schema)
    assert not database.holds_log
    async with eskit.open_store(postgres.store_url()) as store:
        for n in range(3):
            await store.append(f"order-{n}", [eskit.NewEvent("Added", {"amount": 10 * n})])
        runner = ProjectionRunner(store, [Totals()], database=database)
        await runner.run_until_caught_up()
        found = await totals(database)
    await database.close()
    assert found == {"order-0": (1, 0), "order-1": (1, 10), "order-2": (1, 20)}


def test_a_postgres_database_needs_a_store_or_a_url() -> None:
    with pytest.raises(ValueError, match="either a PostgresStore or url="):
        PostgresDatabase()
    with pytest.raises(ValueError, match="invalid PostgreSQL schema"):
        PostgresDatabase(url="postgresql://localhost/x", schema="Bad-Name")
