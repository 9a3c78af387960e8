"""One projection, several workers: partitions by stream hash under leases, exactly once
(SQL read models), per-stream order, take-over, fencing of a paused worker, scaling.

Each worker opens the store on its own, as a worker in another process would. The
process-level tests (SIGKILL, SIGSTOP) are in ``test_partitioned_processes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import eskit
from eskit.projections import Database, PartitionedWorker, ProjectionRunner, database_for
from eskit.projections.leases import partition_of
from tests.projections.models import store_url
from tests.projections.partitioning import (
    Ordered,
    all_at,
    eventually,
    fill,
    ordered_counts,
)

pytestmark = pytest.mark.anyio

SQL_BACKENDS = ("sqlite", "postgres")


@pytest.fixture(params=SQL_BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(request.param, tmp_path)


@contextlib.asynccontextmanager
async def opened(url: str) -> AsyncIterator[tuple[eskit.EventStore, Database]]:
    """A store and its read-model database, opened as another process would."""
    async with eskit.open_store(url) as store:
        db = database_for(store)
        try:
            yield store, db
        finally:
            await db.close()


def test_a_stream_always_lands_in_the_same_partition() -> None:
    assert partition_of("invoice-42", 16) == partition_of("invoice-42", 16)
    assert partition_of("invoice-42", 16) == 11  # CRC-32: the same on every machine
    spread = {partition_of(f"s-{n}", 8) for n in range(200)}
    assert spread == set(range(8))


async def test_two_workers_share_the_partitions_and_apply_each_event_once(url: str) -> None:
    async with opened(url) as (store, db), opened(url) as (other, _):
        async with (
            PartitionedWorker(store, Ordered(), partitions=8, lease=0.6) as a,
            PartitionedWorker(other, Ordered(), partitions=8, lease=0.6) as b,
        ):
            await eventually(lambda: len(a.held) == len(b.held) == 4)
            assert set(a.held).isdisjoint(b.held)
            last = await fill(store, streams=24, each=10)
            await all_at(db, "ordered", last)
            assert a.applied > 0
            assert b.applied > 0
            assert a.applied + b.applied == 240
        assert await ordered_counts(db) == {f"s-{n}": 10 for n in range(24)}


async def test_a_worker_refuses_another_partition_count(url: str) -> None:
    async with opened(url) as (store, _):
        async with PartitionedWorker(store, Ordered(), partitions=8):
            pass
        with pytest.raises(ValueError, match="has 8 partitions; this worker was started with 4"):
            await PartitionedWorker(store, Ordered(), partitions=4).start()


async def test_a_paused_sql_worker_cannot_commit_after_its_lease_is_taken() -> None:
    """PostgreSQL: the paused worker's transaction is open; its late checkpoint statement
    finds another generation and the whole batch rolls back. (On SQLite a paused writer
    holds the file's only write lock, so nobody could take over meanwhile.)"""
    url = store_url("postgres", Path("."))
    Ordered.paused.clear()
    Ordered.resume.clear()
    paused_on = "p-0"
    async with opened(url) as (store, db), opened(url) as (other, _):
        slow = Ordered(pause_on=paused_on, strict=False)
        async with PartitionedWorker(store, slow, partitions=4, lease=1.0) as a:
            last = await fill(store, streams=8, each=5, prefix="p")
            await asyncio.to_thread(Ordered.paused.wait, 10)
            async with PartitionedWorker(other, Ordered(), partitions=4, lease=1.0) as b:
                await eventually(lambda: len(b.held) == 4)
                Ordered.resume.set()
                await eventually(lambda: a.rejected > 0)
                await all_at(db, "ordered", last)
            assert await ordered_counts(db) == {f"p-{n}": 5 for n in range(8)}


async def test_scaling_from_one_to_four_workers_and_back_while_events_flow(url: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        opens = [await stack.enter_async_context(opened(url)) for _ in range(4)]
        (store, db), others = opens[0], [s for s, _ in opens[1:]]
        written = itertools.count()
        stop = asyncio.Event()

        async def appender() -> None:
            while not stop.is_set():
                n = next(written)
                await store.append(f"f-{n % 30}", [eskit.NewEvent("Added", {})])
                await asyncio.sleep(0.002)

        feeding = asyncio.create_task(appender())
        first = PartitionedWorker(store, Ordered(), partitions=16, lease=0.9)
        await first.start()
        await asyncio.sleep(0.5)
        assert len(first.held) == 16
        more = [PartitionedWorker(s, Ordered(), partitions=16, lease=0.9) for s in others]
        for worker in more:
            await worker.start()
            await asyncio.sleep(0.3)
        await eventually(lambda: sorted(len(w.held) for w in [first, *more]) == [4, 4, 4, 4])
        for worker in more:
            await worker.stop()
            await asyncio.sleep(0.3)
        await eventually(lambda: len(first.held) == 16)
        stop.set()
        await feeding
        last = await store.last_position()
        await all_at(db, "ordered", last)
        assert all(w.applied > 0 for w in more)
        await first.stop()
        total = next(written)
        want: dict[str, int] = {}
        for n in range(total):
            want[f"f-{n % 30}"] = want.get(f"f-{n % 30}", 0) + 1
        assert await ordered_counts(db) == want


class OrderedV2(Ordered):
    version = 2


async def test_a_rebuild_moves_the_partitions_to_the_new_build(url: str) -> None:
    """Workers of version 1 run while version 2 is rebuilt beside them; at the switch they
    give their partitions up (their code is outdated) and version-2 workers go on from the
    rebuilt build's position, each event applied once."""
    async with opened(url) as (store, db), opened(url) as (other, _):
        async with PartitionedWorker(store, Ordered(), partitions=4, lease=0.6) as old:
            first = await fill(store, streams=6, each=5)
            await all_at(db, "ordered", first)
            async with ProjectionRunner(other, [OrderedV2()]) as runner:
                await runner.rebuild("ordered")
            await eventually(lambda: not old.held and old.error is not None)
            assert "rebuilt at version 2" in (old.error or "")
        last = await fill(store, streams=6, each=3)
        async with PartitionedWorker(other, OrderedV2(), partitions=4, lease=0.6):
            await all_at(db, "ordered", last)
        assert await ordered_counts(db) == {f"s-{n}": 8 for n in range(6)}


async def test_a_runner_refuses_to_follow_a_partitioned_projection(url: str) -> None:
    async with opened(url) as (store, _):
        async with PartitionedWorker(store, Ordered(), partitions=2):
            pass
        async with ProjectionRunner(store, [Ordered()]) as runner:
            with pytest.raises(ValueError, match="is run by partitioned workers"):
                await runner.wait_until(1)
