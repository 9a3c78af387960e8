"""A failing handler: retried, then stuck with its error while the others go on; an
operator's skip (here or from another process) lets it continue; a transient error heals."""

from __future__ import annotations

import asyncio

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
from eskit.projections.runner import now
from tests.projections.models import Counter, append, counts

pytestmark = pytest.mark.anyio

RETRIES = 2
STUCK_POLL = 0.02


class Fragile(SQLProjection):
    """Records the events it handles; fails on the first ``failures`` ``Poison`` calls."""

    name = "fragile"
    tables = ("handled",)
    schema = ("CREATE TABLE {handled} (position INTEGER PRIMARY KEY, type TEXT NOT NULL)",)

    def __init__(self, failures: int = 1_000) -> None:
        self.failures = failures
        self.poison_calls = 0

    @handles("Added")
    def added(self, event: eskit.RecordedEvent, db: ReadModelConnection) -> None:
        db.execute("INSERT INTO {handled} VALUES (?, ?)", (event.position, event.type))

    @handles("Poison")
    def poison(self, event: eskit.RecordedEvent, db: ReadModelConnection) -> None:
        self.poison_calls += 1
        db.execute("INSERT INTO {handled} VALUES (?, ?)", (event.position, event.type))
        if self.poison_calls <= self.failures:
            raise RuntimeError("cannot digest poison")


def runner_of(
    store: eskit.EventStore, *projections: SQLProjection, database: Database | None = None
) -> ProjectionRunner:
    """Quick retries, and a stuck worker that looks for an operator's skip often."""
    return ProjectionRunner(
        store,
        projections,
        database=database,
        retries=RETRIES,
        backoff=0.001,
        stuck_poll=STUCK_POLL,
    )


async def resumed(runner: ProjectionRunner, name: str) -> None:
    """Wait for a stuck worker to notice a skip made elsewhere. It polls the stored state
    every ``stuck_poll``; until then its last failure is all the runner knows, and there is
    no event to wait for, so this polls too."""
    async with asyncio.timeout(10):
        while runner.worker(name).failure is not None:  # noqa: ASYNC110 (nothing to await)
            await asyncio.sleep(STUCK_POLL)


async def handled(database: Database) -> list[tuple[int, str]]:
    return await database.read(
        lambda c: c.execute("SELECT position, type FROM handled ORDER BY position").fetchall()
    )


async def write_history(store: eskit.EventStore) -> tuple[int, int]:
    """Added, Poison, Added: the poison's position and the last one."""
    await append(store, "cart-1", "Added")
    poison = await append(store, "cart-1", "Poison")
    last = await append(store, "cart-1", "Added")
    return poison.last_position, last.last_position


async def test_a_failing_handler_is_retried_then_the_projection_is_stuck(
    store: eskit.EventStore,
) -> None:
    poison, last = await write_history(store)
    fragile = Fragile()

    async with runner_of(store, fragile) as runner:
        with pytest.raises(eskit.ProjectionError) as raised:
            await runner.wait_until(last)
        [status] = await runner.status()
        rows = await handled(runner.database)
        state = await runner.database.read(lambda c: st.load(c, "fragile"))

    error = raised.value
    assert fragile.poison_calls == 1 + RETRIES + 1  # in the batch, then alone with retries
    assert (error.name, error.position, error.event_type) == ("fragile", poison, "Poison")
    assert error.error == "RuntimeError: cannot digest poison"
    assert f"position {poison}" in str(error)
    assert "Poison" in str(error)
    assert "cannot digest poison" in str(error)
    assert (status.status, status.position, status.error_position) == ("stuck", poison - 1, poison)
    assert status.error == "RuntimeError: cannot digest poison"
    assert state is not None
    assert (state.status, state.error_type, state.error_position) == ("stuck", "Poison", poison)
    assert rows == [(poison - 1, "Added")]


async def test_other_projections_in_the_runner_keep_going(store: eskit.EventStore) -> None:
    poison, _ = await write_history(store)

    async with runner_of(store, Fragile(), Counter()) as runner:
        with pytest.raises(eskit.ProjectionError):
            await runner.wait_until(poison, name="fragile")
        live = await append(store, "cart-2", "Removed")
        await runner.wait_until(live.last_position, name="counter")
        counted = await counts(runner.database)
        statuses = {s.name: s.status for s in await runner.status()}

    assert counted == {("cart-1", "Added"): 2, ("cart-2", "Removed"): 1}
    assert statuses == {"fragile": "stuck", "counter": "running"}


async def test_a_skip_is_recorded_and_the_projection_continues(store: eskit.EventStore) -> None:
    poison, last = await write_history(store)

    async with runner_of(store, Fragile()) as runner:
        with pytest.raises(eskit.ProjectionError):
            await runner.wait_until(last)
        record = await runner.skip("fragile", "bad data, ticket 12")
        async with asyncio.timeout(10):
            await runner.wait_until(last)
        skips = await runner.database.read(lambda c: st.skips(c, "fragile"))
        rows = await handled(runner.database)
        [status] = await runner.status()

    assert (record.position, record.event_type, record.reason) == (
        poison,
        "Poison",
        "bad data, ticket 12",
    )
    assert record.error == "RuntimeError: cannot digest poison"
    assert skips == [record]
    assert rows == [(poison - 1, "Added"), (last, "Added")]
    assert (status.status, status.position, status.error) == ("running", last, None)


async def test_a_skip_from_another_process_reaches_the_stuck_worker(
    store: eskit.EventStore, readmodels: Database, elsewhere: Database
) -> None:
    poison, last = await write_history(store)

    async with runner_of(store, Fragile(), database=readmodels) as runner:
        with pytest.raises(eskit.ProjectionError):
            await runner.wait_until(last)
        # ``elsewhere`` is what `eskit projections skip` opens: a connection of its own.
        await elsewhere.write(lambda c: st.skip(c, "fragile", "from the CLI", now()))
        await resumed(runner, "fragile")
        async with asyncio.timeout(10):
            await runner.wait_until(last)
        skips = await runner.database.read(lambda c: st.skips(c, "fragile"))

    assert [(s.position, s.reason) for s in skips] == [(poison, "from the CLI")]


async def test_a_transient_error_heals_without_getting_stuck(store: eskit.EventStore) -> None:
    poison, last = await write_history(store)
    fragile = Fragile(failures=2)

    async with runner_of(store, fragile) as runner:
        async with asyncio.timeout(10):
            await runner.wait_until(last)
        rows = await handled(runner.database)
        [status] = await runner.status()

    assert fragile.poison_calls == 3  # the batch, one retry alone that fails, one that works
    assert rows == [(poison - 1, "Added"), (poison, "Poison"), (last, "Added")]
    assert (status.status, status.error) == ("running", None)
