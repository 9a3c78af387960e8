"""One projection, several workers: partitions by stream hash under leases, exactly once
(SQL read models), per-stream order, take-over, fencing of a paused worker, scaling, and a
partition stuck on a poison event while the others go on, until it is skipped.

Each worker opens the store on its own, as a worker in another process would. The
process-level tests (SIGKILL, SIGSTOP) are in ``test_partitioned_processes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import eskit
from eskit.projections import Database, PartitionedWorker, ProjectionRunner, database_for, leases
from eskit.projections import state as st
from eskit.projections.leases import partition_of
from eskit.projections.sql import execute
from tests.projections.models import store_url
from tests.projections.partitioning import (
    Ordered,
    Poisoned,
    all_at,
    eventually,
    fill,
    ordered_counts,
    stuck,
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
            # A checkpoint is visible at COMMIT, a worker counts its batch just after.
            await eventually(lambda: a.applied + b.applied >= 240)
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


POISONED = "poison-0"
BAD = partition_of(POISONED, 4)
"""The partition the poison event is in, of 4."""


async def poisoned_log(store: eskit.EventStore) -> tuple[int, int]:
    """5 events on each of 12 streams, a ``Poison`` event on a stream of its own, 3 more
    events on each stream: the poison's position and the last one."""
    assert any(partition_of(f"s-{n}", 4) == BAD for n in range(12)), "BAD has streams"
    await fill(store, streams=12, each=5)
    poison = (await store.append(POISONED, [eskit.NewEvent("Poison", {})])).last_position
    return poison, await fill(store, streams=12, each=3)


def counts_with_bad_at(before: int, after: int) -> dict[str, int]:
    """Events per stream when the streams of the bad partition have ``before``, the others
    ``after``."""
    return {f"s-{n}": before if partition_of(f"s-{n}", 4) == BAD else after for n in range(12)}


async def test_a_poison_event_sticks_its_partition_and_the_others_go_on(url: str) -> None:
    """The failing batch is retried event by event; the poison event, still failing, marks
    its partition stuck before it, with the error and the event; the other partitions reach
    the head. A worker taking the partition over later sees it stuck and leaves it be."""
    async with opened(url) as (store, db), opened(url) as (other, _):
        poison, last = await poisoned_log(store)
        events = (await store.read_page(after=0, limit=1000)).events
        event = next(e for e in events if e.position == poison)
        before = max(
            e.position for e in events if partition_of(e.stream, 4) == BAD and e.position < poison
        )
        handler = Poisoned()
        async with PartitionedWorker(
            store, handler, partitions=4, lease=0.6, backoff=0.01
        ) as worker:
            (row,) = await stuck(db, "ordered")
            await all_at(db, "ordered", last, but=BAD)
            assert row.partition == BAD
            assert (row.error, row.error_position, row.error_event, row.error_type) == (
                "RuntimeError: cannot digest poison",
                poison,
                str(event.id),
                "Poison",
            )
            assert row.position == before  # the partition's events before it are applied
            assert handler.tries[poison] == 1 + 4  # the batch, then 1 + 3 retries alone
            assert worker.held[BAD].stuck
            assert worker.error is None
        assert await ordered_counts(db) == counts_with_bad_at(5, 8)

        fresh = Poisoned()
        async with PartitionedWorker(other, fresh, partitions=4, lease=0.6) as taker:
            await eventually(lambda: len(taker.held) == 4)
            more = await fill(store, streams=12, each=1)
            await all_at(db, "ordered", more, but=BAD)
            assert taker.held[BAD].stuck
            assert fresh.tries == {}  # never tried again
        (again,) = await stuck(db, "ordered")
        assert (again.position, again.error_position) == (before, poison)
        assert await ordered_counts(db) == counts_with_bad_at(5, 9)


async def test_a_skipped_poison_event_lets_its_partition_go_on(url: str) -> None:
    async with opened(url) as (store, db):
        poison, _ = await poisoned_log(store)
        async with PartitionedWorker(
            store, Poisoned(), partitions=4, lease=0.6, backoff=0.01
        ) as worker:
            await stuck(db, "ordered")
            (record,) = await worker.skip("poison, ticket 7")
            assert (record.position, record.event_type, record.error, record.reason) == (
                poison,
                "Poison",
                "RuntimeError: cannot digest poison",
                "poison, ticket 7",
            )
            more = await fill(store, streams=12, each=2)
            await all_at(db, "ordered", more)
            assert not any(row.stuck for row in await worker.partitions())
            assert await worker.skip("nothing stuck") == []
        assert await ordered_counts(db) == {f"s-{n}": 10 for n in range(12)}
        assert await db.read(lambda c: st.skips(c, "ordered")) == [record]


async def test_a_handler_that_fails_twice_then_succeeds_is_not_stuck(url: str) -> None:
    async with opened(url) as (store, db):
        poison, last = await poisoned_log(store)
        handler = Poisoned(fails=2)
        async with PartitionedWorker(
            store, handler, partitions=4, lease=0.6, backoff=0.01
        ) as worker:
            await all_at(db, "ordered", last)
            await eventually(lambda: worker.applied >= 12 * 8 + 1)  # counted after COMMIT
            assert not any(row.stuck for row in await worker.partitions())
            assert worker.applied == 12 * 8 + 1
        assert handler.tries[poison] == 3
        assert await ordered_counts(db) == {**counts_with_bad_at(8, 8), POISONED: 1}


OLD_PARTITIONS = """CREATE TABLE eskit_partitions (
    name TEXT NOT NULL, partition BIGINT NOT NULL, count BIGINT NOT NULL,
    build BIGINT NOT NULL, position BIGINT NOT NULL, owner TEXT,
    generation BIGINT NOT NULL, expires_at BIGINT NOT NULL, PRIMARY KEY (name, partition))"""


async def test_a_partitions_table_of_an_older_version_gets_the_stuck_columns(url: str) -> None:
    """Workers of the version before stuck partitions made the table without its error
    columns: it reads as never stuck, and the first worker of this version adds them."""
    async with opened(url) as (store, db):
        await fill(store, streams=4, each=2)
        await db.write(lambda c: execute(c, OLD_PARTITIONS))
        row = "INSERT INTO eskit_partitions VALUES ('ordered', ?, 2, 1, 0, NULL, 0, 0)"
        await db.write(lambda c: [execute(c, row, (p,)) for p in (0, 1)])
        worker = PartitionedWorker(store, Ordered(), partitions=2, lease=0.6)
        assert [(r.partition, r.stuck) for r in await worker.partitions()] == [
            (0, False),
            (1, False),
        ]
        async with worker:
            await all_at(db, "ordered", 8)
        assert await ordered_counts(db) == {f"s-{n}": 2 for n in range(4)}


class PoisonedV2(Poisoned):
    version = 2


async def test_a_rebuild_starts_a_stuck_partition_afresh(url: str) -> None:
    """Version 2 digests the poison: rebuilt beside the stuck version 1, its workers take
    every partition on the new build, none stuck."""
    async with opened(url) as (store, db), opened(url) as (other, _):
        _, last = await poisoned_log(store)
        async with PartitionedWorker(store, Poisoned(), partitions=4, lease=0.6, backoff=0.01):
            await stuck(db, "ordered")
        async with ProjectionRunner(other, [PoisonedV2(fails=0)]) as runner:
            await runner.rebuild("ordered")
        async with PartitionedWorker(other, PoisonedV2(fails=0), partitions=4, lease=0.6) as new:
            await all_at(db, "ordered", last)
            assert not any(row.stuck for row in await new.partitions())
        assert await ordered_counts(db) == {**counts_with_bad_at(8, 8), POISONED: 1}


def test_a_batch_whose_commit_answer_was_lost_cannot_move_the_checkpoint_again(
    tmp_path: Path,
) -> None:
    """A worker that believes its batch failed (the COMMIT's answer was lost in a failover)
    while it went through still holds the lease: applying the batch again must be refused,
    or its events would be applied twice."""
    conn = sqlite3.connect(tmp_path / "leases.db", isolation_level=None)
    leases.prepare(conn, "p", count=2, build=1, position=0)
    held = leases.heartbeat(conn, "p", "w", ttl=60_000_000, count=2, build=1, position=0)
    assert sorted(held) == [0, 1]
    leases.advance(conn, "p", "w", held, 10)  # committed; the worker never heard
    with pytest.raises(leases.LeaseLost):
        leases.advance(conn, "p", "w", held, 10)  # the same batch again, from 0
    fresh = leases.heartbeat(conn, "p", "w", ttl=60_000_000, count=2, build=1, position=0)
    assert [lease.position for lease in fresh.values()] == [10, 10]
    leases.advance(conn, "p", "w", fresh, 20)  # from where it really is
