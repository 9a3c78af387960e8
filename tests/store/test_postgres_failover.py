"""PostgreSQL high availability, for real: a primary and a standby of the test's own
(``ha_cluster``), the primary killed and the standby promoted while a writer, a subscriber
and a projection run; and reads of the log served by a replica.

The figures (time from the primary's death to the first append on the new primary, events/s
before and after, what asynchronous replication lost) are printed: run with ``-s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

import eskit
from eskit.brokers import message
from eskit.brokers.publisher import publisher_for
from eskit.projections import (
    PartitionedWorker,
    ProjectionRunner,
    ReadModelConnection,
    SQLProjection,
    database_for,
    handles,
)
from eskit.relay import Relay, relay_runner
from eskit.store.model import RecordedEvent
from eskit.store.postgres_failover import bounded, connect_timeout, retrying
from eskit.web.readiness import Readiness, readiness
from tests import services
from tests.brokers.reading import redis_entries, redis_key
from tests.projections.partitioning import Ordered, all_at, eventually, fill, ordered_counts
from tests.store.ha_cluster import Cluster

pytestmark = pytest.mark.anyio
WRITERS = 4
"""Writers appending at once (their appends share group commits)."""


class Seen(SQLProjection):
    """Every event once, by id: applying one twice fails on the primary key (and sticks)."""

    name = "seen"
    tables: ClassVar[tuple[str, ...]] = ("seen",)
    schema: ClassVar[tuple[str, ...]] = (
        "CREATE TABLE {seen} (id UUID PRIMARY KEY, position BIGINT NOT NULL)",
    )
    batch_size = 50

    @handles("Wrote")
    def wrote(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        db.write("INSERT INTO {seen} VALUES (%s, %s)", (event.id, event.position))


class Reached:
    """Where a subscriber got to, waited for."""

    def __init__(self) -> None:
        self.position = 0
        self.target: int | None = None
        self.there = asyncio.Event()

    def notify(self, position: int) -> None:
        self.position = position
        if self.target is not None and position >= self.target:
            self.there.set()

    async def wait(self, position: int) -> None:
        self.target = position
        self.notify(self.position)
        await self.there.wait()


@dataclass
class Run:
    """What a writer, a subscriber and a projection saw across a failover."""

    acked: dict[int, tuple[int, float, float]] = field(default_factory=dict)
    """Each acknowledged append's number: its position, when it was sent and acknowledged."""
    errors: list[tuple[float, BaseException]] = field(default_factory=list)
    readiness: list[tuple[float, Readiness]] = field(default_factory=list)
    received: list[RecordedEvent] = field(default_factory=list)
    log: list[RecordedEvent] = field(default_factory=list)
    projected: list[tuple[uuid.UUID, int]] = field(default_factory=list)
    died: float = 0.0
    held: float = 0.0
    promoted: float = 0.0
    started: float = 0.0
    stopped: float = 0.0

    def back(self) -> float:
        """When the first append sent after the primary's death was acknowledged."""
        return min(at for _, sent, at in self.acked.values() if sent > self.died)

    def rate(self, start: float, end: float) -> float:
        return sum(start < at <= end for _, _, at in self.acked.values()) / (end - start)

    def unready(self) -> float:
        """Seconds ``/health/ready`` answered unready."""
        times = [at for at, answer in self.readiness if answer.status != "ready"]
        return max(times) - min(times) if times else 0.0

    def report(self, title: str) -> str:
        back = self.back()
        return (
            f"\n{title}: first append on the new primary {back - self.died:.2f} s after the"
            f" primary died ({back - self.promoted:.2f} s after the promotion ended);"
            f" {self.rate(self.started, self.died):.0f} events/s before,"
            f" {self.rate(back, self.stopped):.0f} after; {len(self.acked)} acknowledged,"
            f" {len(self.errors)} errors; /health/ready unready for {self.unready():.1f} s"
            f" {sorted({r for _, answer in self.readiness for r in answer.reasons})}"
        )


async def ride(cluster: Cluster, before: float = 2.0, after: float = 3.0, hold: float = 0) -> Run:
    """Write, subscribe and project through the cluster's multi-host URL; kill the primary
    after ``before`` seconds (the last ``hold`` of them with the standby held back by the
    cluster's proxy), promote the standby, go on ``after`` seconds more."""
    run = Run()
    async with (
        eskit.open_store(cluster.url()) as store,
        ProjectionRunner(store, [Seen()]) as runner,
    ):
        stop = asyncio.Event()
        caught_up = Reached()

        async def write(first: int) -> None:
            n = first
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    result = await store.append(f"ha-{n % 10}", [eskit.NewEvent("Wrote", {"n": n})])
                    run.acked[n] = (result.last_position, sent, time.monotonic())
                except eskit.StoreError as error:
                    run.errors.append((time.monotonic(), error))
                n += WRITERS

        async def check() -> None:
            while not stop.is_set():
                answer = await readiness(store, runner, max_lag=1000)
                run.readiness.append((time.monotonic(), answer))
                await asyncio.sleep(0.1)

        async def subscribe() -> None:
            async for event in store.subscribe():
                run.received.append(event)
                caught_up.notify(event.position)

        run.started = time.monotonic()
        writers = [asyncio.create_task(write(first)) for first in range(WRITERS)]
        subscriber = asyncio.create_task(subscribe())
        checker = asyncio.create_task(check())
        await asyncio.sleep(before - hold)
        if hold:
            assert cluster.proxy is not None
            cluster.proxy.held.set()
            run.held = time.monotonic()
            await asyncio.sleep(hold)
        await asyncio.to_thread(cluster.kill)
        run.died = time.monotonic()
        await asyncio.to_thread(cluster.promote)
        run.promoted = time.monotonic()
        await asyncio.sleep(after)
        stop.set()
        await asyncio.gather(*writers, checker)
        run.stopped = time.monotonic()
        head = await store.last_position()
        async with asyncio.timeout(30):
            await runner.wait_until(head)
            await caught_up.wait(head)
        subscriber.cancel()
        run.log = [e async for e in store.read_all()]
        rows = await runner.database.read(
            lambda conn: conn.execute("SELECT id, position FROM seen ORDER BY position").fetchall()
        )
        run.projected = [(id_, position) for id_, position in rows]
    return run


@pytest.fixture
def synchronous() -> Iterator[Cluster]:
    cluster = Cluster(synchronous=True).start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def asynchronous() -> Iterator[Cluster]:
    cluster = Cluster(synchronous=False, proxied=True).start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.mark.slow
async def test_a_writer_subscriber_and_projection_ride_through_a_failover(
    synchronous: Cluster, anyio_backend: str
) -> None:
    run = await ride(synchronous)
    print(run.report("synchronous (remote_apply)"))
    assert run.errors == []  # nobody had to be restarted, no call gave up
    numbers = Counter(e.data["n"] for e in run.log)
    assert set(run.acked) <= set(numbers)  # every acknowledged event is there
    assert max(numbers.values()) == 1  # once
    for n, (position, _, _) in run.acked.items():  # where its append said it is
        assert next(e for e in run.log if e.data["n"] == n).position == position
    assert [e.position for e in run.received] == [e.position for e in run.log]
    assert run.projected == [(e.id, e.position) for e in run.log]
    assert run.back() - run.died < 30
    assert run.readiness[-1][1].status == "ready"


@pytest.mark.slow
async def test_asynchronous_replication_loses_at_most_the_last_commits(
    asynchronous: Cluster, anyio_backend: str
) -> None:
    run = await ride(asynchronous, hold=0.5)  # the standby 0.5 s behind when the primary dies
    on_new = {e.data["n"]: e.position for e in run.log}
    assert max(Counter(e.data["n"] for e in run.log).values()) == 1  # nothing twice
    lost = {n: acked for n, acked in run.acked.items() if n not in on_new}
    kept = [acked[0] for n, acked in run.acked.items() if n in on_new and acked[2] < run.died]
    held = sum(run.held <= at <= run.died for _, _, at in run.acked.values())
    ids = {e.id for e in run.log}
    seen_lost = sum(e.id not in ids for e in run.received)
    print(
        run.report("asynchronous"),
        f"; lost {len(lost)} acknowledged events of the {held} acknowledged while the"
        f" standby was held back; the subscriber had received {seen_lost} of them",
    )
    assert lost  # the last commits, that had not reached the standby
    assert min(position for position, _, _ in lost.values()) > max(kept)  # a suffix
    assert min(at for _, _, at in lost.values()) >= run.held - 0.1
    assert run.projected == [(e.id, e.position) for e in run.log]  # lost with the log
    assert run.back() - run.died < 30


@pytest.mark.slow
async def test_listen_is_re_established_on_the_new_primary(
    synchronous: Cluster, anyio_backend: str
) -> None:
    async with (
        eskit.open_store(synchronous.url()) as follower,
        eskit.open_store(synchronous.url()) as writer,  # another process, as far as LISTEN goes
    ):
        follower.poll_interval = 30.0  # a wake-up within seconds is LISTEN's, not a poll's
        received: list[float] = []
        arrived = asyncio.Event()

        async def follow() -> None:
            async for _ in follower.subscribe():
                received.append(time.monotonic())
                arrived.set()

        task = asyncio.create_task(follow())
        await writer.append("l-1", [eskit.NewEvent("Wrote", {"n": 0})])
        async with asyncio.timeout(5):
            await arrived.wait()
        await asyncio.to_thread(synchronous.kill)
        await asyncio.to_thread(synchronous.promote)
        await asyncio.sleep(3)  # the listener finds the new primary
        arrived.clear()
        sent = time.monotonic()
        await writer.append("l-1", [eskit.NewEvent("Wrote", {"n": 1})])
        async with asyncio.timeout(5):
            await arrived.wait()
        task.cancel()
        assert received[-1] - sent < 2


@pytest.mark.slow
async def test_partitioned_workers_take_their_leases_again_on_the_new_primary(
    synchronous: Cluster, anyio_backend: str
) -> None:
    """The failover outlasts the leases (1 s): on the new primary each worker finds its
    leases expired, and whatever it commits is checked against them again. The handlers
    count blindly (``strict=False``): only the fencing keeps a batch whose COMMIT's answer
    was lost from being counted twice."""
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(eskit.open_store(synchronous.url()))
        other = await stack.enter_async_context(eskit.open_store(synchronous.url()))
        db = database_for(store)
        stack.push_async_callback(db.close)
        a = await stack.enter_async_context(
            PartitionedWorker(store, Ordered(strict=False), partitions=8, lease=1.0)
        )
        b = await stack.enter_async_context(
            PartitionedWorker(other, Ordered(strict=False), partitions=8, lease=1.0)
        )
        await eventually(lambda: len(a.held) == len(b.held) == 4)
        await fill(store, streams=16, each=5)
        await asyncio.to_thread(synchronous.kill)
        await asyncio.sleep(1.5)  # every lease expires meanwhile
        await asyncio.to_thread(synchronous.promote)
        last = await fill(store, streams=16, each=5)
        await all_at(db, "ordered", last, within=30)
        await eventually(lambda: len(a.held) + len(b.held) == 8, within=30)
        assert set(a.held).isdisjoint(b.held)
        assert await ordered_counts(db) == {f"s-{n}": 10 for n in range(16)}  # exactly once


@pytest.mark.slow
async def test_the_relay_resumes_from_its_checkpoint_on_the_new_primary(
    synchronous: Cluster, anyio_backend: str
) -> None:
    url, prefix = services.redis_url(), services.unique("ha")
    async with redis_key(url, prefix), eskit.open_store(synchronous.url()) as store:
        publisher = publisher_for(url, prefix)
        runner = relay_runner(store, Relay(publisher, batch_size=20))
        await runner.start()
        try:
            for n in range(200):
                if n == 100:  # the relay is following: it is cut off in the middle
                    await asyncio.to_thread(synchronous.kill)
                    await asyncio.to_thread(synchronous.promote)
                await store.append(f"relay-{n % 5}", [eskit.NewEvent("Wrote", {"n": n})])
            head = await store.last_position()
            async with asyncio.timeout(30):
                await runner.wait_until(head)
        finally:
            await runner.stop()
            await publisher.close()
        events = [e async for e in store.read_all()]
        entries = await redis_entries(url, prefix)
    assert len(events) == 200
    assert [entry[message.EVENT_ID].decode() for entry in entries] == [str(e.id) for e in events]


# -- deadlines: no call hangs ----------------------------------------------------------------


def test_every_wait_on_a_connection_is_bounded_unless_the_url_says_otherwise() -> None:
    given = conninfo_to_dict(bounded("postgresql://u@h1:1,h2:2/db?connect_timeout=9", 30))
    assert given["connect_timeout"] == "9"  # the caller's
    assert given["tcp_user_timeout"] == "30000"
    assert given["keepalives"] == "1"
    assert given["host"] == "h1,h2"


def test_a_retry_gives_up_at_the_deadline_and_only_for_connection_failures() -> None:
    calls: list[float] = []
    pauses: list[float] = []

    def paused(seconds: float) -> None:
        pauses.append(seconds)
        time.sleep(seconds)

    def broken() -> None:
        calls.append(time.monotonic())
        raise psycopg.OperationalError("gone")

    with pytest.raises(psycopg.OperationalError):
        retrying(lambda _: broken(), 0.5, lambda: False, sleep=paused)
    assert len(calls) >= 3
    assert calls[-1] - calls[0] < 0.5 + 0.2  # no attempt starts after the deadline
    assert calls[-1] - calls[0] >= 0.5 - 0.01  # and the last one is made at the deadline
    assert pauses[0] == 0  # a dropped idle connection: again at once
    assert all(0 < pause <= 1.5 for pause in pauses[1:])  # then with backoff
    calls.clear()
    with pytest.raises(psycopg.errors.UniqueViolation):
        retrying(lambda _: broken_by(psycopg.errors.UniqueViolation()), 5, lambda: False)
    with pytest.raises(psycopg.OperationalError):
        retrying(lambda _: broken(), 5, lambda: True)  # closing: no second attempt
    assert len(calls) == 1


def test_the_last_attempt_ends_at_the_deadline() -> None:
    """An attempt may wait as long as the time left (a connection from the pool, a new
    connection): the last one ends at the deadline, not one whole wait after it. A wait that
    timed out counts from its start."""
    allowed: list[float] = []

    class Waited(Exception):
        pass

    def waiting(seconds: float) -> None:
        allowed.append(seconds)
        time.sleep(min(seconds, 0.3))
        raise Waited

    started = time.monotonic()
    with pytest.raises(Waited):
        retrying(waiting, 1.0, lambda: False, also=(Waited,))
    assert time.monotonic() - started < 1.0 + 0.15
    assert allowed[0] == 1.0
    assert all(later < 1.0 for later in allowed[1:])
    assert connect_timeout(0.2) == 2  # libpq's least
    assert connect_timeout(3.5) == 4
    assert connect_timeout(30, "5") == 5  # never more than the URL's


def broken_by(error: Exception) -> None:
    raise error


async def test_a_failover_deadline_must_be_positive(anyio_backend: str) -> None:
    with pytest.raises(ValueError, match="failover_deadline must be positive"):
        eskit.open_store("postgresql://u@127.0.0.1/db?failover_deadline=0")


async def timed_append(store: eskit.EventStore, stream: str) -> float:
    """Seconds an append took to fail."""
    started = time.monotonic()
    with pytest.raises(eskit.StoreUnavailable):
        await store.append(stream, [eskit.NewEvent("Wrote", {})])
    return time.monotonic() - started


async def test_with_no_primary_every_call_gives_up_at_the_deadline(anyio_backend: str) -> None:
    cluster = Cluster(synchronous=False).start()
    try:
        url = cluster.url(failover_deadline="1")
        async with eskit.open_store(url) as store:
            await store.append("d-1", [eskit.NewEvent("Wrote", {"n": 0})])
            await asyncio.to_thread(cluster.kill)  # and nobody promotes the standby
            started = time.monotonic()
            with pytest.raises(eskit.OutcomeUnknown, match="may or may not"):
                await store.append("d-1", [eskit.NewEvent("Wrote", {"n": 1})])
            assert 0.5 < time.monotonic() - started < 4
            started = time.monotonic()
            with pytest.raises(eskit.StoreUnavailable, match="could not be reached"):
                await store.append("d-1", [eskit.NewEvent("Wrote", {"n": 2})])
            assert time.monotonic() - started < 4
            ahead = asyncio.ensure_future(store.append("q-0", [eskit.NewEvent("Wrote", {})]))
            await asyncio.sleep(0.1)  # its group is being retried: these queue behind it
            took = await asyncio.gather(*(timed_append(store, f"q-{n}") for n in range(1, 6)))
            with pytest.raises(eskit.StoreUnavailable):
                await ahead
            assert max(took) < 1 + 0.5  # their own deadline, not the group's and then theirs
            started = time.monotonic()
            with pytest.raises(eskit.StoreUnavailable):
                await store.stream_version("d-1")
            assert time.monotonic() - started < 4
            answer = await readiness(store, None, max_lag=1000)  # /health/ready
            assert answer.status == "unready"
            assert answer.reasons[0] in (
                "the store is not reachable (StoreUnavailable)",
                "the store did not answer within 2 s",  # its last attempt outlasted 2 s
            )
            started = time.monotonic()
        assert time.monotonic() - started < 4  # close
    finally:
        cluster.close()


@pytest.mark.slow
async def test_a_commit_waiting_for_a_standby_that_is_gone_is_not_waited_for_ever(
    anyio_backend: str,
) -> None:
    cluster = Cluster(synchronous=True, inherited=True).start()
    try:
        async with eskit.open_store(cluster.url(failover_deadline="2")) as store:
            await store.append("w-1", [eskit.NewEvent("Wrote", {"n": 0})])
            await asyncio.to_thread(cluster.kill)
            await asyncio.to_thread(cluster.promote)  # it waits for a synchronous standby
            started = time.monotonic()
            result = await store.append("w-1", [eskit.NewEvent("Wrote", {"n": 1})])
            assert 1.5 < time.monotonic() - started < 5  # the watchdog cancelled the wait
            assert [e.position async for e in store.read_all()] == [1, result.last_position]
    finally:
        cluster.close()


# -- reads from a replica -------------------------------------------------------------------


@pytest.fixture
async def replicated(anyio_backend: str) -> AsyncIterator[tuple[Cluster, eskit.EventStore]]:
    cluster = Cluster(synchronous=False).start()
    try:
        replica = urllib.parse.quote(cluster.dsn("standby"), safe="")
        async with eskit.open_store(f"{cluster.dsn('primary')}?replica={replica}") as store:
            yield cluster, store
    finally:
        cluster.close()


def replay(cluster: Cluster, paused: bool) -> None:
    with psycopg.connect(cluster.dsn("standby"), autocommit=True) as conn:
        conn.execute(f"SELECT pg_wal_replay_{'pause' if paused else 'resume'}()")


async def test_reads_of_the_log_wait_for_the_replica_to_replay(
    replicated: tuple[Cluster, eskit.EventStore],
) -> None:
    cluster, store = replicated
    first = await store.append("r-1", [eskit.NewEvent("Wrote", {"n": 0})])
    await asyncio.to_thread(cluster.wait_replayed)
    async with ProjectionRunner(store, [Seen()]) as runner:
        async with asyncio.timeout(10):
            await runner.wait_until(first.last_position)
        await asyncio.to_thread(replay, cluster, True)
        second = await store.append("r-1", [eskit.NewEvent("Wrote", {"n": 1})])
        assert await store.written_position() == second.last_position
        assert await store.last_position() == first.last_position  # not replayed yet
        assert [e.position async for e in store.read_all()] == [first.last_position]
        waiting = asyncio.ensure_future(runner.wait_until(second.last_position))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # read your writes: not before the replica has them
        await asyncio.to_thread(replay, cluster, False)
        async with asyncio.timeout(10):
            await waiting
        assert await store.last_position() == second.last_position
    async with eskit.open_store(cluster.dsn("standby"), readonly=True) as alone:
        assert [e.position async for e in alone.read_all()] == [1, 2]
        waiting = asyncio.ensure_future(alone.wait_for_events(after=2))
        third = await store.append("r-1", [eskit.NewEvent("Wrote", {"n": 2})])
        async with asyncio.timeout(10):  # a standby cannot LISTEN: found by polling
            await waiting
        assert await alone.last_position() == third.last_position


@pytest.mark.slow
async def test_a_replica_serves_a_subscription_and_a_projection_while_the_primary_writes(
    replicated: tuple[Cluster, eskit.EventStore],
) -> None:
    _, store = replicated
    for n in range(300):  # a log to catch up on
        await store.append(f"c-{n % 7}", [eskit.NewEvent("Wrote", {"n": n})])
    received: list[int] = []
    caught_up = Reached()
    heads: list[int] = []
    older: list[int] = []

    async def subscribe() -> None:
        async for event in store.subscribe():
            received.append(event.position)
            caught_up.notify(event.position)

    async def watch() -> None:  # a reader that saw p never later sees a new event <= p
        seen = 0
        while True:
            page = await store.read_page(after=seen, limit=100)
            heads.append(seen)
            if page.events:
                if page.events[0].position <= seen:
                    older.append(page.events[0].position)
                seen = page.events[-1].position
            await asyncio.sleep(0.001)

    subscriber = asyncio.create_task(subscribe())
    watcher = asyncio.create_task(watch())
    async with ProjectionRunner(store, [Seen()]) as runner:
        started = time.monotonic()
        n = 300
        while time.monotonic() - started < 3:
            await store.append(f"c-{n % 7}", [eskit.NewEvent("Wrote", {"n": n})])
            n += 1
        head = await store.written_position()
        async with asyncio.timeout(30):
            await runner.wait_until(head)
            await caught_up.wait(head)
        subscriber.cancel()
        watcher.cancel()
        log = [e async for e in store.read_all()]
        rows = await runner.database.read(
            lambda conn: conn.execute("SELECT id, position FROM seen ORDER BY position").fetchall()
        )
    assert received == [e.position for e in log] == list(range(1, n + 1))
    assert [(id_, position) for id_, position in rows] == [(e.id, e.position) for e in log]
    assert older == []
    assert heads == sorted(heads)
