"""What the NATS consumer does beyond the broker suite (tests/brokers/test_conformance):
workers share the partitions, a PostgreSQL read model of its own, a new version refused
until reset, a worker started before the relay."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

import eskit
from eskit.brokers.nats import NatsPublisher
from eskit.errors import BrokerUnavailable
from eskit.projections import PostgresDatabase, SQLiteDatabase
from eskit.projections.consumers.base import drop_consumer
from eskit.projections.consumers.nats import NatsConsumer
from tests import postgres, services
from tests.brokers.fixtures import (
    StreamLog,
    append_events,
    counts,
    counts_then_close,
    relay_to_head,
    running,
    until,
)
from tests.brokers.reading import delete_nats_stream

pytestmark = pytest.mark.anyio


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    url, name = services.nats_url(), services.unique("t")
    yield name
    await delete_nats_stream(url, name)


async def until_applied(workers: Sequence[NatsConsumer], total: int) -> None:
    await until(lambda: sum(w.applied for w in workers) >= total)


async def test_workers_share_the_partitions(
    store: eskit.EventStore, prefix: str, tmp_path: Path
) -> None:
    """Each worker pulls from every partition: both take part (order and exactly once:
    the suite)."""
    await append_events(store, 300)
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
    await counts_then_close(databases)
    assert all(w.applied > 0 for w in workers), "both workers took part"
    assert [s.partition for s in statuses] == list(range(6))


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
        NatsConsumer(services.nats_url(), StreamLog(), db, prefix=prefix) for db in databases
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
