"""The runner on every backend: catch-up then live, several projections, batches, filtered
projections at the head, read-your-writes, a graceful stop, and a restart that resumes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

import eskit
from eskit.projections import Database, ProjectionRunner, ReadModelConnection
from tests.projections.models import (
    Counter,
    Totals,
    append,
    append_each,
    batched,
    counts,
    fold,
    stored,
)

pytestmark = pytest.mark.anyio


async def test_catches_up_on_the_backlog_then_follows_live(store: eskit.EventStore) -> None:
    await append(store, "cart-1", "Added", "Added", "Other")
    backlog = await append(store, "cart-2", "Removed")

    async with ProjectionRunner(store, [Counter()]) as runner:
        await runner.wait_until(backlog.last_position)
        caught_up = await counts(runner.database)
        live = await append(store, "cart-1", "Removed", "Added")
        await runner.wait_until(live.last_position)
        followed = await counts(runner.database)
        [status] = await runner.status()

    assert caught_up == {("cart-1", "Added"): 2, ("cart-2", "Removed"): 1}
    assert followed == {("cart-1", "Added"): 3, ("cart-1", "Removed"): 1, ("cart-2", "Removed"): 1}
    assert (status.name, status.status, status.position, status.lag) == (
        "counter",
        "running",
        live.last_position,
        0,
    )


async def test_several_projections_run_in_one_runner(store: eskit.EventStore) -> None:
    await append(store, "cart-1", "Added", "Added", "Removed")
    last = await append(store, "cart-2", "Added")

    async with ProjectionRunner(store, [Counter(), Totals()]) as runner:
        await runner.wait_until(last.last_position)
        counted = await counts(runner.database)
        totals = await runner.database.read(
            lambda c: dict(c.execute("SELECT stream, amount FROM totals").fetchall())
        )
        statuses = await runner.status()

    assert counted == {("cart-1", "Added"): 2, ("cart-1", "Removed"): 1, ("cart-2", "Added"): 1}
    assert totals == {"cart-1": 2, "cart-2": 1}
    assert {(s.name, s.status, s.position) for s in statuses} == {
        ("counter", "running", last.last_position),
        ("totals", "running", last.last_position),
    }


async def test_a_backlog_larger_than_a_batch_is_read_in_batches(store: eskit.EventStore) -> None:
    batches: list[int] = []

    class Recording(Counter):
        batch_size = 3

        def handle_batch(
            self, events: Sequence[eskit.RecordedEvent], db: ReadModelConnection
        ) -> None:
            batches.append(len(events))
            super().handle_batch(events, db)

    written = [(f"cart-{i % 3}", "Added" if i % 4 else "Removed") for i in range(20)]
    last = await append_each(store, written)

    async with ProjectionRunner(store, [Recording()]) as runner:
        await runner.wait_until(last)
        counted = await counts(runner.database)

    assert counted == fold(written)
    assert sum(batches) == 20
    assert max(batches) == 3
    assert len(batches) >= 7


async def test_a_filtered_projection_reaches_the_head_and_stores_it(
    store: eskit.EventStore, readmodels: Database
) -> None:
    """A projection reads only its own types, yet its checkpoint moves past the others, so
    ``wait_until`` returns and a restart does not search those events again."""
    await append(store, "cart-1", "Added")
    tail = await append(store, "other-1", *["Other"] * 5)

    async with ProjectionRunner(store, [Counter()], database=readmodels) as runner:
        async with asyncio.timeout(10):
            await runner.wait_until(tail.last_position)
        idle = await append(store, "other-2", "Other", "Other")
        async with asyncio.timeout(10):
            await runner.wait_until(idle.last_position)
    checkpoint = await stored(readmodels, "counter")

    assert checkpoint.position == idle.last_position
    assert await counts(readmodels) == {("cart-1", "Added"): 1}


async def test_the_read_model_is_ready_once_wait_until_returns_on_an_empty_log(
    store: eskit.EventStore,
) -> None:
    async with ProjectionRunner(store, [Counter()]) as runner:
        await runner.wait_until(await store.last_position())

        assert await counts(runner.database) == {}


async def test_wait_until_reads_your_own_writes(store: eskit.EventStore) -> None:
    async with ProjectionRunner(store, [Counter()]) as runner:
        for n in range(1, 21):
            result = await append(store, "cart-1", "Added")
            await runner.wait_until(result.last_position, name="counter")

            assert await counts(runner.database) == {("cart-1", "Added"): n}


async def test_stop_while_live_returns_promptly(store: eskit.EventStore) -> None:
    last = await append(store, "cart-1", "Added")
    runner = ProjectionRunner(store, [Counter()])
    await runner.start()
    await runner.wait_until(last.last_position)

    async with asyncio.timeout(5):
        await runner.stop()

    [status] = await runner.status()
    assert status.status == "stopped"
    assert runner.worker("counter").task is None


async def test_a_restart_resumes_from_the_checkpoint(
    store: eskit.EventStore, readmodels: Database
) -> None:
    first = [("cart-1", "Added"), ("cart-2", "Removed"), ("cart-1", "Other")]
    done = await append_each(store, first)
    async with ProjectionRunner(store, [Counter()], database=readmodels) as runner:
        await runner.wait_until(done)
    later = [("cart-1", "Added"), ("cart-3", "Added")]
    done = await append_each(store, later)

    restarted = Counter()
    async with ProjectionRunner(store, [restarted], database=readmodels) as runner:
        await runner.wait_until(done)

    assert restarted.applied == 2
    assert await counts(readmodels) == fold(first + later)


async def test_a_stop_in_the_middle_of_a_catch_up_loses_and_repeats_nothing(
    store: eskit.EventStore, readmodels: Database
) -> None:
    written = [(f"cart-{i // 10 % 7}", ("Added", "Removed", "Other")[i % 3]) for i in range(300)]
    last = await append_each(store, written)
    first = batched(5)
    async with ProjectionRunner(store, [first], database=readmodels) as runner:
        await runner.wait_until(last // 3)
    interrupted = await stored(readmodels, "counter")

    second = batched(5)
    async with ProjectionRunner(store, [second], database=readmodels) as runner:
        await runner.wait_until(last)

    assert interrupted.position < last
    assert first.applied + second.applied == 200
    assert await counts(readmodels) == fold(written)
