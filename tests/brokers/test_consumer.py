"""Broker-fed projections against the machine's NATS: workers share the load, keep each
stream's order, and apply every event once (repeats the broker stored included), into
SQLite and PostgreSQL read models."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

import eskit
from eskit.brokers import message
from eskit.brokers.nats import MSG_ID, NatsPublisher, connect, subject
from eskit.errors import BrokerUnavailable
from eskit.projections import PostgresDatabase, SQLiteDatabase
from eskit.projections.consumers.base import drop_consumer
from eskit.projections.consumers.nats import NatsConsumer
from tests import postgres, services
from tests.brokers.fixtures import (
    append_events,
    counts,
    counts_then_close,
    relay_to_head,
    running,
    until,
)
from tests.brokers.models import PgStreamLog, StreamLog
from tests.brokers.reading import delete_nats_stream

pytestmark = pytest.mark.anyio


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    url, name = services.nats_url(), services.unique("t")
    yield name
    await delete_nats_stream(url, name)


async def until_applied(workers: Sequence[NatsConsumer], total: int) -> None:
    await until(lambda: sum(w.applied for w in workers) >= total)


async def test_workers_share_partitions_and_keep_stream_order(
    store: eskit.EventStore, prefix: str, tmp_path: Path
) -> None:
    per_stream = await append_events(store, 300)
    publisher = NatsPublisher(services.nats_url(), prefix, partitions=6)
    await relay_to_head(store, publisher)
    await publisher.close()
    databases = [SQLiteDatabase(tmp_path / "read.db") for _ in range(2)]
    workers = [
        NatsConsumer(services.nats_url(), StreamLog(), db, prefix=prefix) for db in databases
    ]
    async with running(workers):
        await until_applied(workers, 300)
        statuses = await workers[0].status()
    found, errors = await counts_then_close(databases)
    assert found == per_stream
    assert errors == []
    assert all(w.applied > 0 for w in workers), "both workers took part"
    assert sum(w.repeats for w in workers) == 0
    assert [s.partition for s in statuses] == list(range(6))
    assert all(s.pending == 0 and s.error is None for s in statuses)


async def test_repeats_stored_after_the_duplicate_window_are_applied_once(
    store: eskit.EventStore, prefix: str, tmp_path: Path
) -> None:
    """The broker's dedupe window expired and it stored events again: the inbox, written
    in the read model's transaction, drops them."""
    per_stream = await append_events(store, 40, streams=4)
    publisher = NatsPublisher(services.nats_url(), prefix, partitions=2, duplicate_window=0.3)
    await relay_to_head(store, publisher)
    await publisher.close()
    await asyncio.sleep(0.4)
    events = [e async for e in store.read_all()]
    client = await connect(services.nats_url())
    js = client.jetstream()
    for event in events[:25]:  # the same messages again, same Nats-Msg-Id
        headers = message.headers(event) | {MSG_ID: str(event.id)}
        ack = await js.publish(subject(prefix, event, 2), message.body(event), headers=headers)
        assert not ack.duplicate, "the window has expired: NATS stores the repeat"
    await client.close()
    database = SQLiteDatabase(tmp_path / "read.db")
    async with NatsConsumer(services.nats_url(), StreamLog(), database, prefix=prefix) as w:
        await until(lambda: w.applied + w.repeats >= 65)
    found, errors = await counts(database)
    await database.close()
    assert found == per_stream
    assert errors == []
    assert (w.applied, w.repeats) == (40, 25)


async def test_postgresql_read_model_of_its_own(store: eskit.EventStore, prefix: str) -> None:
    """Workers on another machine: the read model in a PostgreSQL database and schema of
    its own (no store there), shared by two workers."""
    per_stream = await append_events(store, 60, streams=5)
    publisher = NatsPublisher(services.nats_url(), prefix, partitions=3)
    await relay_to_head(store, publisher)
    await publisher.close()
    schema = services.unique("read")
    databases = [PostgresDatabase(url=postgres.database_url(), schema=schema) for _ in range(2)]
    workers = [
        NatsConsumer(services.nats_url(), PgStreamLog(), db, prefix=prefix) for db in databases
    ]
    async with running(workers):
        await until_applied(workers, 60)
    tables = await databases[0].read(
        lambda c: {
            row[0]
            for row in c.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            )
        }
    )
    found, errors = await counts_then_close(databases)
    assert found == per_stream
    assert errors == []
    assert "eskit_consumer_inbox" in tables
    assert not {"eskit_events", "eskit_head"} & tables  # the log is not here


async def test_a_new_version_is_refused_until_reset(
    store: eskit.EventStore, prefix: str, tmp_path: Path
) -> None:
    await append_events(store, 5, streams=2)
    publisher = NatsPublisher(services.nats_url(), prefix, partitions=1)
    await relay_to_head(store, publisher)
    await publisher.close()
    database = SQLiteDatabase(tmp_path / "read.db")
    async with NatsConsumer(services.nats_url(), StreamLog(), database, prefix=prefix) as w:
        await until_applied([w], 5)

    class StreamLogV2(StreamLog):
        name = "stream_log"
        version = 2

    v2 = NatsConsumer(services.nats_url(), StreamLogV2(), database, prefix=prefix)
    with pytest.raises(ValueError, match="built by version 1, not 2"):
        await v2.start()
    await database.write(lambda c: drop_consumer(c, StreamLogV2()))
    await v2.forget()
    async with v2:
        await until_applied([v2], 5)  # replayed from the stream's start
    assert sum((await counts(database))[0].values()) == 5
    await database.close()


async def test_a_worker_started_before_the_relay_says_so(prefix: str, tmp_path: Path) -> None:
    database = SQLiteDatabase(tmp_path / "read.db")
    worker = NatsConsumer(services.nats_url(), StreamLog(), database, prefix=prefix)
    with pytest.raises(BrokerUnavailable, match="start the relay first"):
        await worker.start()
    await database.close()
    with pytest.raises(ValueError, match="applies a SQLProjection"):
        NatsConsumer(services.nats_url(), object(), database)  # type: ignore[arg-type]
