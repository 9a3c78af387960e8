"""What the backup tests share: a store holding every kind of thing a backup must carry,
and a picture of everything a reader can see in a store, to compare two stores by."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import msgspec

import eskit
from eskit import Snapshot
from eskit.projections import ProjectionRunner, SQLProjection, handles
from eskit.subscriptions import Groups, Source
from tests.postgres import store_url
from tests.store.test_transfer import fill

BACKENDS = ("sqlite", "postgresql")


def new_url(backend: str, folder: Path, name: str) -> str:
    """A store URL of its own: a file in ``folder``, or a schema in the run's database."""
    return f"sqlite:///{folder}/{name}.db" if backend == "sqlite" else store_url()


class Counts(SQLProjection):
    """A read model and a checkpoint in the store's own database."""

    name = "backup_counts"
    tables = ("counts",)
    schema = ("CREATE TABLE {counts} (stream TEXT PRIMARY KEY, n BIGINT NOT NULL)",)

    @handles("Held", "Touched", "Created")
    def counted(self, event: eskit.RecordedEvent, db: Any) -> None:
        db.write(
            "INSERT INTO {counts} VALUES (?, 1)"
            " ON CONFLICT (stream) DO UPDATE SET n = {counts}.n + 1",
            (event.stream,),
        )


async def furnish(store: eskit.EventStore) -> None:
    """Events of every kind of JSON, a soft-deleted and a tombstoned stream, stream metadata,
    a snapshot, a projection's read model and checkpoint, a subscription group with an
    acked and a parked event."""
    await fill(store)
    await store.append("order-1", [eskit.NewEvent("Placed", {"n": 1})])
    await store.tombstone_stream("order-1")
    await store.set_stream_metadata("invoice-1", eskit.StreamMetadata(max_count=50))
    await store.save_snapshot(Snapshot("invoice-2", 4, 1, {"total": 10}))
    async with ProjectionRunner(store, [Counts()]) as runner:
        await runner.run_until_caught_up()
    groups = Groups(store)
    await groups.create("mails", Source.category("invoice"))
    consumer = groups.consumer("mails")
    first, second, *_ = await consumer.fetch(3)
    await consumer.ack([first])
    await second.nack("park", "no address")


async def picture(store: eskit.EventStore) -> dict[str, Any]:
    """Everything a reader sees: the log with positions and times, every stream's state and
    metadata, the snapshot, the read model, the projection's checkpoint, the group."""
    streams = await store.list_streams(limit=1000)
    names = [s.stream for s in streams]
    status = await _projection_status(store)
    groups = Groups(store)
    return {
        "log": [msgspec.to_builtins(e) async for e in store.read_all()],
        "head": await store.last_position(),
        "streams": [msgspec.to_builtins(s) for s in streams],
        "metadata": {n: msgspec.to_builtins(await store.get_stream_metadata(n)) for n in names},
        "snapshot": msgspec.to_builtins(await store.load_snapshot("invoice-2", 1)),
        "read_model": await _rows(store, "SELECT stream, n FROM counts ORDER BY stream"),
        "checkpoint": status,
        "group": _without_times(msgspec.to_builtins(await groups.get("mails"))),
        "parked": [msgspec.to_builtins(p) for p in await groups.parked("mails")],
    }


async def _projection_status(store: eskit.EventStore) -> list[Any]:
    async with ProjectionRunner(store, [Counts()]) as runner:
        await runner.run_until_caught_up()  # its state loaded: a starting one shows 0
        return [(s.name, s.position) for s in await runner.status()]


async def _rows(store: eskit.EventStore, query: str) -> list[tuple[Any, ...]]:
    database = store.read_model_database()
    assert database is not None
    rows = await database.read(lambda conn: conn.execute(query).fetchall())
    return [tuple(row) for row in rows]


def _without_times(group: dict[str, Any]) -> dict[str, Any]:
    """A group's record; consumers' heartbeats are times of day, not data."""
    return {k: v for k, v in group.items() if not isinstance(v, dt.datetime)}
