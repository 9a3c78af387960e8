"""Faults, with a nats-server each test owns (its own port and store directory): the
broker killed mid-stream while appends go on, its duplicate window expiring during the
outage, and a relay killed between publishing and checkpointing. Every event arrives once,
each stream in order, and the read-model counts are exact."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import eskit
from eskit.brokers.nats import NatsPublisher
from eskit.projections import SQLiteDatabase
from eskit.projections.consumers.nats import NatsConsumer
from eskit.relay import Relay, relay_runner, relay_status
from tests import services
from tests.brokers.fixtures import StreamLog, counts, counts_then_close, until, until_counted
from tests.brokers.reading import nats_messages

pytestmark = pytest.mark.anyio
PREFIX = "faults"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[services.NatsServer]:
    owned = services.NatsServer(tmp_path)
    owned.start()
    yield owned
    owned.kill()


class Appender:
    """Appends to 20 streams until told to stop; notes the slowest append."""

    def __init__(self, store: eskit.EventStore) -> None:
        self.store, self.per_stream, self.slowest = store, dict[str, int](), 0.0
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            stream = f"thing-{i * 7 % 20}"
            started = time.perf_counter()
            await self.store.append(stream, [eskit.NewEvent("Happened", {"i": i})])
            self.slowest = max(self.slowest, time.perf_counter() - started)
            self.per_stream[stream] = self.per_stream.get(stream, 0) + 1
            i += 1
            await asyncio.sleep(0.002)


async def test_broker_killed_mid_stream_while_appends_go_on(
    server: services.NatsServer, store: eskit.EventStore, tmp_path: Path
) -> None:
    """Kill -9 NATS while events are being appended, relayed and consumed; keep it down
    past its 1 s duplicate window; restart it on the same store directory."""
    publisher = NatsPublisher(
        server.url, PREFIX, partitions=4, duplicate_window=1.0, ack_timeout=1.0
    )
    await publisher.published()  # creates the stream the consumers bind to
    relay = Relay(publisher, batch_size=25)
    databases = [SQLiteDatabase(tmp_path / "read.db") for _ in range(2)]
    workers = [
        NatsConsumer(server.url, StreamLog(), db, prefix=PREFIX, ack_wait=1.0, fetch_wait=0.2)
        for db in databases
    ]
    appender = Appender(store)
    try:
        async with relay_runner(store, relay, backoff=0.05) as runner:
            for worker in workers:
                await worker.start()
            appending = asyncio.create_task(appender.run())
            await until(lambda: sum(w.applied for w in workers) >= 100, within=20)
            server.kill()
            await asyncio.sleep(1.5)  # appends go on; the duplicate window expires
            during_outage = await relay_status(runner, relay)
            server.start()
            await asyncio.sleep(1.0)
            appender.stopping.set()
            await appending
            total = sum(appender.per_stream.values())
            await until(lambda: sum(w.applied for w in workers) >= total, within=60)
            after = await relay_status(runner, relay)
            deadline = asyncio.get_running_loop().time() + 10
            while after.lag and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)  # consumers may apply a batch before its checkpoint
                after = await relay_status(runner, relay)
    finally:
        for worker in workers:
            await worker.stop()
        await publisher.close()
    found, errors = await counts_then_close(databases)
    assert found == appender.per_stream
    assert errors == []
    assert sum(w.applied for w in workers) == total
    assert during_outage.lag > 0
    assert during_outage.status != "stuck"
    assert after.lag == 0
    assert after.position == total
    assert appender.slowest < 0.5, "appends never wait for the relay or the broker"
    events = [e async for e in store.read_all()]
    assert [e for _, _, e in await nats_messages(server.url, PREFIX)] == events


async def test_relay_killed_between_publishing_and_checkpointing(
    server: services.NatsServer, store: eskit.EventStore, tmp_path: Path
) -> None:
    """SIGKILL right after NATS acked a batch, before the checkpoint: the next relay starts
    from the older checkpoint, finds those events in the stream and sends them no more;
    consumers count every event once."""
    for i in range(100):
        await store.append(f"thing-{i % 9}", [eskit.NewEvent("Happened", {"i": i})])
    child = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "tests.brokers.relay_child",
            str(tmp_path / "events.db"),
            server.url,
            PREFIX,
            "3",
            "20",
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -9, child.stderr.decode()
    assert len(await nats_messages(server.url, PREFIX)) == 60  # three batches acked ...
    publisher = NatsPublisher(server.url, PREFIX, partitions=4)
    relay = Relay(publisher, batch_size=20)
    runner = relay_runner(store, relay)
    assert (await runner.status())[0].position in (0, 40)  # ... at most two checkpointed
    await runner.run_until_caught_up()
    await runner.stop()
    assert relay.sent == 40
    events = [e async for e in store.read_all()]
    assert [e for _, _, e in await nats_messages(server.url, PREFIX)] == events
    database = SQLiteDatabase(tmp_path / "read.db")
    async with NatsConsumer(server.url, StreamLog(), database, prefix=PREFIX) as worker:
        await until(lambda: worker.applied >= 100)
    found, errors = await counts(database)
    await database.close()
    assert sum(found.values()) == 100
    assert errors == []
    await publisher.close()


async def test_relay_waits_for_a_broker_that_starts_late(
    store: eskit.EventStore, tmp_path: Path
) -> None:
    """No broker when the relay starts: it backs off, then publishes everything once the
    broker is up."""
    server = services.NatsServer(tmp_path)
    for i in range(30):
        await store.append(f"thing-{i % 3}", [eskit.NewEvent("Happened", {"i": i})])
    publisher = NatsPublisher(server.url, PREFIX, connect_timeout=0.2)
    relay = Relay(publisher)
    try:
        async with relay_runner(store, relay, backoff=0.02) as runner:
            await asyncio.sleep(0.3)
            assert (await relay_status(runner, relay)).lag == 30
            server.start()
            async with asyncio.timeout(30):
                await runner.wait_until(30)
    finally:
        await publisher.close()
        server.kill()
    assert relay.sent == 30


@pytest.mark.slow
async def test_repeated_outages_and_relay_restarts(
    server: services.NatsServer, store: eskit.EventStore, tmp_path: Path
) -> None:
    """Soak: five rounds of NATS killed for 0.2-1.5 s, the relay stopped and started again
    each round, appends never pausing; at the end every event is in the stream once, in
    order, and applied once, in order per stream."""
    publisher = NatsPublisher(
        server.url, PREFIX, partitions=8, duplicate_window=0.5, ack_timeout=0.5
    )
    await publisher.published()
    databases = [SQLiteDatabase(tmp_path / "read.db") for _ in range(2)]
    workers = [
        NatsConsumer(server.url, StreamLog(), db, prefix=PREFIX, ack_wait=1.0, fetch_wait=0.2)
        for db in databases
    ]
    appender = Appender(store)
    appending = asyncio.create_task(appender.run())
    try:
        for worker in workers:
            await worker.start()
        for outage in (0.2, 1.5, 0.5, 1.0, 0.3):
            async with relay_runner(store, Relay(publisher, batch_size=30), backoff=0.02):
                await asyncio.sleep(0.7)
                server.kill()
                await asyncio.sleep(outage)
                server.start()
                await asyncio.sleep(0.7)
        appender.stopping.set()
        await appending
        total = sum(appender.per_stream.values())
        async with relay_runner(store, Relay(publisher, batch_size=30)) as runner:
            await runner.wait_until(await store.last_position())
            await until_counted(databases[0], total)
    finally:
        appender.stopping.set()
        for worker in workers:
            await worker.stop()
        await publisher.close()
    found, errors = await counts_then_close(databases)
    assert found == appender.per_stream
    assert errors == []
    assert appender.slowest < 0.5
    events = [e async for e in store.read_all()]
    assert [e for _, _, e in await nats_messages(server.url, PREFIX)] == events
