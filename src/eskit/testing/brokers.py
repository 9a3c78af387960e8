"""The conformance suite every broker consumer must pass, as ``EventStoreConformance`` is
for stores. Subclass ``BrokerConsumerConformance`` in a test module and say how to make a
publisher and a consumer of your broker::

    from eskit.testing.brokers import BrokerConsumerConformance

    class TestMyBroker(BrokerConsumerConformance):
        def url(self): return "my://127.0.0.1:1234"
        def unreachable_url(self): return "my://127.0.0.1:1"
        def publisher(self, url, prefix): return MyPublisher(url, prefix)
        def consumer(self, url, prefix, projection, database):
            return MyConsumer(url, projection, database, prefix=prefix)
        async def publish_again(self, url, prefix, events): ...  # repeats, stored
        async def clean_up(self, url, prefix): ...  # delete what the test made

The consumer must take events back after its process is killed within a few seconds
(a short lease, ack wait...): the suite kills one, in a process of its own
(``python -m eskit.testing.consumer_child``, which imports your class, so it must live in
an importable module). ``queue_first``: the broker drops what no queue is bound to (start
a consumer once before publishing). The suite needs pytest and anyio's pytest plugin.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import random
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from eskit.brokers.publisher import Publisher
from eskit.errors import BrokerUnavailable
from eskit.projections import state as st
from eskit.projections.consumers.base import BrokerWorker
from eskit.projections.database import Database, SQLiteDatabase
from eskit.projections.projection import ReadModelConnection, SQLProjection, handles
from eskit.relay import Relay, relay_runner
from eskit.store.base import EventStore
from eskit.store.memory import MemoryStore
from eskit.store.model import NewEvent, RecordedEvent

RETRIES = 2
STUCK_POLL = 0.05


class StreamLog(SQLProjection):
    """A read model that notices disorder: per stream, how many events arrived and
    whether each came right after the one before (version = last + 1). Portable SQL: it
    runs on SQLite and PostgreSQL alike."""

    name = "stream_log"
    tables = ("stream_counts", "order_errors")
    schema = (
        "CREATE TABLE {stream_counts} (stream TEXT PRIMARY KEY, version BIGINT NOT NULL,"
        " count BIGINT NOT NULL)",
        "CREATE TABLE {order_errors} (stream TEXT NOT NULL, expected BIGINT, got BIGINT)",
    )
    delay: ClassVar[float] = 0.0
    """Seconds each event takes (a worker that holds events when it is stopped or killed)."""

    @handles("Happened")
    def happened(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        if self.delay:
            time.sleep(self.delay)
        row = db.execute(
            "SELECT version FROM {stream_counts} WHERE stream = ?", (event.stream,)
        ).fetchone()
        expected = 0 if row is None else row[0] + 1
        if event.version != expected:
            db.execute(
                "INSERT INTO {order_errors} VALUES (?, ?, ?)",
                (event.stream, expected, event.version),
            )
        db.execute(
            "INSERT INTO {stream_counts} VALUES (?, ?, 1) ON CONFLICT (stream)"
            " DO UPDATE SET version = excluded.version, count = {stream_counts}.count + 1",
            (event.stream, event.version),
        )


class SlowStreamLog(StreamLog):
    delay = 0.01


class SlowerStreamLog(StreamLog):
    """The worker the kill test kills: 300 events take it seconds even spread over six
    streams, so a kill after the first 30 lands mid-stream on a loaded machine too (at
    0.01 s a child once applied all 300 between the count of 30 and the kill)."""

    delay = 0.05


class Poisoned(StreamLog):
    """``StreamLog`` whose handler of ``Poison`` always raises."""

    def __init__(self) -> None:
        self.poison_calls = 0

    @handles("Poison")
    def poison(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        self.poison_calls += 1
        raise RuntimeError("cannot digest poison")


# -- helpers ---------------------------------------------------------------------------------


async def append_events(
    store: EventStore, count: int, streams: int = 12, seed: int = 1
) -> dict[str, int]:
    """``count`` events over ``streams`` streams in random interleaving; events per stream."""
    chosen = random.Random(seed)
    per_stream: dict[str, int] = {}
    for _ in range(count):
        stream = f"thing-{chosen.randrange(streams)}"
        await store.append(stream, [NewEvent("Happened", {"n": per_stream.get(stream, 0)})])
        per_stream[stream] = per_stream.get(stream, 0) + 1
    return per_stream


async def relay_to_head(store: EventStore, publisher: Publisher) -> Relay:
    """Publish every event of ``store`` (the relay's own checkpoint kept in the store)."""
    relay = Relay(publisher, batch_size=50)
    runner = relay_runner(store, relay)
    try:
        await runner.run_until_caught_up()
    finally:
        await runner.stop()
    return relay


async def counts(database: Database) -> tuple[dict[str, int], list[Any]]:
    """Events per stream in the ``StreamLog`` read model, and the order errors it noticed."""

    def read(conn: Any) -> tuple[dict[str, int], list[Any]]:
        rows = conn.execute("SELECT stream, count FROM stream_counts").fetchall()
        errors = conn.execute("SELECT * FROM order_errors").fetchall()
        return {stream: count for stream, count in rows}, list(errors)

    return await database.read(read)


async def until(done: Callable[[], bool], within: float = 30.0) -> None:
    """Poll ``done`` until it holds; ``TimeoutError`` after ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            if done():
                return
            await asyncio.sleep(0.02)


async def until_counted(database: Database, total: int, within: float = 60.0) -> None:
    """Wait until the ``StreamLog`` read model counts ``total`` events."""
    async with asyncio.timeout(within):
        while True:
            found, _ = await counts(database)
            if sum(found.values()) >= total:
                return
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(workers: Sequence[BrokerWorker]) -> AsyncIterator[None]:
    """Every worker started in turn, and every one stopped at the end, whatever happens."""
    async with contextlib.AsyncExitStack() as stack:
        for worker in workers:
            await stack.enter_async_context(worker)
        yield


# -- the suite -------------------------------------------------------------------------------


class BrokerConsumerConformance(abc.ABC):
    """The broker consumer contract as tests; subclass it once per broker."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.anyio]
    queue_first: ClassVar[bool] = False
    """The broker drops messages no queue is bound to: a consumer starts once first."""

    @abc.abstractmethod
    def url(self) -> str:
        """The broker the tests use (skip or fail the test here if it cannot be reached)."""

    @abc.abstractmethod
    def unreachable_url(self) -> str:
        """An address where no broker listens (with a user and password, if it takes them:
        the error must not show them)."""

    @abc.abstractmethod
    def publisher(self, url: str, prefix: str) -> Publisher: ...

    @abc.abstractmethod
    def consumer(
        self, url: str, prefix: str, projection: SQLProjection, database: Database
    ) -> BrokerWorker:
        """A consumer of the group ``projection.name``, taking events back within seconds
        after a worker of the group dies."""

    @abc.abstractmethod
    async def publish_again(self, url: str, prefix: str, events: Sequence[RecordedEvent]) -> None:
        """Store ``events`` on the broker again (a relay resending, a dedupe window past)."""

    @abc.abstractmethod
    async def clean_up(self, url: str, prefix: str) -> None:
        """Delete what a test made on the broker under ``prefix``."""

    # -- fixtures and the steps tests share ---------------------------------------------------

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def prefix(self) -> AsyncIterator[str]:
        """A prefix of the test's own (its stream, key or exchange), cleaned up after."""
        url = self.url()
        name = f"t_{random.getrandbits(48):012x}"
        yield name
        await self.clean_up(url, name)

    @pytest.fixture
    async def events(self) -> AsyncIterator[EventStore]:
        """The store the relay publishes from."""
        async with MemoryStore() as store:
            yield store

    def worker(
        self, prefix: str, projection: SQLProjection, database: Database, url: str | None = None
    ) -> BrokerWorker:
        made = self.consumer(url or self.url(), prefix, projection, database)
        made.retries, made.backoff, made.stuck_poll = RETRIES, 0.001, STUCK_POLL
        return made

    async def publish(self, store: EventStore, prefix: str, database: Database) -> None:
        """Publish the store's events, the broker ready for them (queue bound)."""
        publisher = self.publisher(self.url(), prefix)
        try:
            if self.queue_first:
                async with self.worker(prefix, StreamLog(), database):
                    pass
            await relay_to_head(store, publisher)
        finally:
            await publisher.close()

    # -- the tests ---------------------------------------------------------------------------

    async def test_workers_keep_each_streams_order_and_apply_every_event_once(
        self, events: EventStore, prefix: str, tmp_path: Path
    ) -> None:
        per_stream = await append_events(events, 200, streams=8)
        database = SQLiteDatabase(tmp_path / "read.db")
        await self.publish(events, prefix, database)
        workers = [self.worker(prefix, StreamLog(), database) for _ in range(2)]
        async with running(workers):
            await until(lambda: sum(w.applied for w in workers) >= 200)
            await asyncio.sleep(0.2)  # nothing more comes
            status = await workers[0].status()
        found, errors = await counts(database)
        await database.close()
        assert found == per_stream
        assert errors == []  # every stream in version order
        assert sum(w.applied for w in workers) == 200
        assert sum(w.repeats for w in workers) == 0
        assert [(s.pending, s.stuck, s.error) for s in status] == [(0, False, None)] * len(status)

    async def test_a_message_stored_twice_is_applied_once(
        self, events: EventStore, prefix: str, tmp_path: Path
    ) -> None:
        per_stream = await append_events(events, 40, streams=4)
        database = SQLiteDatabase(tmp_path / "read.db")
        await self.publish(events, prefix, database)
        stored = [event async for event in events.read_all()]
        await self.publish_again(self.url(), prefix, stored[:25])
        async with self.worker(prefix, StreamLog(), database) as worker:
            await until(lambda: worker.applied + worker.repeats >= 65)
        found, errors = await counts(database)
        await database.close()
        assert (found, errors) == (per_stream, [])
        assert (worker.applied, worker.repeats) == (40, 25)

    async def test_a_standby_takes_over_when_the_active_worker_stops(
        self, events: EventStore, prefix: str, tmp_path: Path
    ) -> None:
        per_stream = await append_events(events, 200, streams=5)
        database = SQLiteDatabase(tmp_path / "read.db")
        await self.publish(events, prefix, database)
        first, standby = (
            self.worker(prefix, SlowStreamLog(), database),
            self.worker(prefix, SlowStreamLog(), database),
        )
        async with running([first, standby]):
            await until(lambda: first.applied + standby.applied >= 40)
            active = first if first.applied >= standby.applied else standby
            await active.stop()
            await until(lambda: first.applied + standby.applied >= 200)
        found, errors = await counts(database)
        await database.close()
        assert (found, errors) == (per_stream, [])
        assert first.applied + standby.applied == 200
        assert first.applied > 0
        assert standby.applied > 0

    async def test_a_worker_killed_mid_batch_loses_nothing_and_applies_nothing_twice(
        self, events: EventStore, prefix: str, tmp_path: Path
    ) -> None:
        """SIGKILL a worker process while it applies a batch: its events come back to the
        one left, which applies each once, in order."""
        per_stream = await append_events(events, 300, streams=6)
        path = tmp_path / "read.db"
        database = SQLiteDatabase(path)
        await self.publish(events, prefix, database)
        suite = type(self)
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "eskit.testing.consumer_child",
            f"{suite.__module__}:{suite.__qualname__}",
            self.url(),
            prefix,
            str(path),
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            assert await child.stdout.readline() == b"started\n"
            await until_counted(database, 30)  # the child applied some: mid-stream now
            child.kill()
            await child.wait()
            killed_at = sum((await counts(database))[0].values())
            async with self.worker(prefix, StreamLog(), database) as survivor:
                await until_counted(database, 300)
                await asyncio.sleep(0.2)
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        found, errors = await counts(database)
        await database.close()
        assert (found, errors) == (per_stream, [])
        assert killed_at < 300, "the child was killed before the end"
        assert survivor.applied == 300 - killed_at

    async def test_a_poison_event_ends_stuck_then_a_skip_moves_on(
        self, events: EventStore, prefix: str, tmp_path: Path
    ) -> None:
        await append_events(events, 30, streams=4)
        poison = await events.append("poisoned", [NewEvent("Poison", {})])
        await append_events(events, 30, streams=4, seed=2)
        database = SQLiteDatabase(tmp_path / "read.db")
        await self.publish(events, prefix, database)
        projection = Poisoned()
        async with self.worker(prefix, projection, database) as worker:
            await until(lambda: bool(worker.stuck))
            [(partition, stuck)] = worker.stuck.items()
            await asyncio.sleep(STUCK_POLL * 6)  # redelivered, held again: never applied
            calls = projection.poison_calls
            shown = {s.partition: s for s in await worker.status()}[partition]
            records = await worker.skip("poisoned by a test")
            await until(lambda: worker.applied >= 60 and not worker.stuck)
            found, errors = await counts(database)
            skips = await database.read(lambda c: st.skips(c, worker.group))
        await database.close()
        assert (stuck.position, stuck.event_type) == (poison.last_position, "Poison")
        assert stuck.error == "RuntimeError: cannot digest poison"
        assert (shown.stuck, shown.error_position, shown.error_type, shown.error) == (
            True,
            poison.last_position,
            "Poison",
            "RuntimeError: cannot digest poison",
        )
        assert calls == 1 + RETRIES + 1  # in a batch, then alone with retries; then held
        assert projection.poison_calls == calls  # the skipped event is never applied again
        assert [(r.position, r.event_type, r.reason) for r in records] == [
            (poison.last_position, "Poison", "poisoned by a test")
        ]
        assert skips == records
        assert sum(found.values()) == 60 == worker.applied  # every other event, once
        assert errors == []

    async def test_a_worker_started_later_leaves_a_stuck_partition_be(
        self, events: EventStore, prefix: str, tmp_path: Path
    ) -> None:
        """The stuck partition is kept in the read model: the next worker of the group (a
        restart, a standby) holds the poison event back without applying it, until a skip."""
        await append_events(events, 20, streams=3)
        await events.append("poisoned", [NewEvent("Poison", {})])
        await append_events(events, 20, streams=3, seed=2)
        database = SQLiteDatabase(tmp_path / "read.db")
        await self.publish(events, prefix, database)
        first, second = Poisoned(), Poisoned()
        async with self.worker(prefix, first, database) as worker:
            await until(lambda: bool(worker.stuck))
        async with self.worker(prefix, second, database) as later:
            await asyncio.sleep(STUCK_POLL * 6)
            held = dict(later.stuck)
            await later.skip("poisoned by a test")
            await until(lambda: worker.applied + later.applied >= 40 and not later.stuck)
        found, errors = await counts(database)
        await database.close()
        assert held == worker.stuck
        assert second.poison_calls == 0  # held back, never applied
        assert sum(found.values()) == 40 == worker.applied + later.applied
        assert errors == []

    async def test_an_unreachable_broker_is_said_plainly(self, tmp_path: Path) -> None:
        database = SQLiteDatabase(tmp_path / "read.db")
        url = self.unreachable_url()
        worker = self.worker("nowhere", StreamLog(), database, url)
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as raised:
            await worker.start()
        waited = time.monotonic() - started
        await worker.stop()
        await database.close()
        assert "127.0.0.1" in str(raised.value)  # where it looked
        assert "secret" not in str(raised.value)  # never the password
        assert waited < 30
