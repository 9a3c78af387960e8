"""``migrate_events`` on SQLite files and PostgreSQL: upcast, rename a category, split and
drop; kept and derived ids; the record it leaves; a rerun that adds nothing, a catch-up
that adds only what is new, a run cut short that resumes to the same log; targets and
functions it refuses, naming the event."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import eskit
from eskit.domain.sensitive import SEALED
from eskit.migration import RECORD_TYPE, EventMigration, Rewritten, migrate_events
from eskit.store.model import RecordedEvent
from eskit.store.transfer import TransferError
from tests import postgres
from tests.migration.apps import history, split_shipping, v2

pytestmark = pytest.mark.anyio


def url_of(backend: str, directory: Path, name: str) -> str:
    return f"sqlite:///{directory}/{name}.db" if backend == "sqlite" else postgres.store_url()


@pytest.fixture(params=["sqlite", "postgres"])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[tuple[eskit.EventStore, eskit.EventStore]]:
    """A source holding 10 orders, and an empty target, on one backend."""
    async with (
        eskit.open_store(url_of(request.param, tmp_path, "blue")) as source,
        eskit.open_store(url_of(request.param, tmp_path, "green")) as target,
    ):
        await fill(source, 10)
        yield source, target


async def fill(store: eskit.EventStore, orders: int, start: int = 0) -> None:
    for stream, new in history(start + orders)[len(history(start)) :]:
        await store.append(stream, new)


async def log(store: eskit.EventStore) -> list[tuple[Any, ...]]:
    return [(e.id, e.stream, e.version, e.type, e.data, e.metadata) async for e in store.read_all()]


async def test_events_are_upcast_renamed_split_and_dropped(
    stores: tuple[eskit.EventStore, eskit.EventStore],
) -> None:
    source, target = stores
    read = [e async for e in source.read_all()]

    done = await migrate_events(source, target, v2)

    written = await log(target)
    by_id = {e[0]: e for e in written}
    placed_v1 = next(e for e in read if e.type == "OrderPlaced" and e.stream == "order-1")
    assert by_id[placed_v1.id][1:] == (
        "purchase-1",
        0,
        "OrderPlaced",
        {"order_id": "1", "cents": 100},
        {"schema_version": 2},
    )
    shipped = next(e for e in read if e.type == "OrderShipped" and e.stream == "order-1")
    assert by_id[shipped.id][1:4] == ("purchase-1", 1, "OrderShipped")
    assert by_id[shipped.id][4] == {"order_id": "1"}
    split_off = by_id[uuid.uuid5(shipped.id, "1")]
    assert split_off[1:5] == ("purchase-1", 2, "AddressRecorded", {"address": "1 Main St"})
    assert not any(e[3] == "DebugPinged" for e in written)
    assert (done.read.count, done.written.count) == (22, 30)
    assert (done.kept, done.changed, done.split, done.split_off, done.dropped) == (0, 10, 10, 10, 2)
    assert done.appended == done.written.count == 30
    assert done.recorded
    (record,) = [e async for e in target.read_stream("eskit.migration-orders-v2")]
    assert record.type == RECORD_TYPE
    assert record.data == {
        "migration": "orders-v2",
        "description": v2.description,
        "source": {"events": 22, "digest": done.read.digest, "last_position": 22},
        "target": {"events": 30, "digest": done.written.digest},
        "kept": 0,
        "changed": 10,
        "split": 10,
        "split_off": 10,
        "dropped": 2,
    }


async def test_the_source_digest_is_the_one_an_export_computes(
    stores: tuple[eskit.EventStore, eskit.EventStore], tmp_path: Path
) -> None:
    source, target = stores
    exported = await eskit.store.transfer.export_events(source, tmp_path / "blue.jsonl")

    done = await migrate_events(source, target, v2)

    assert done.read == exported


async def test_a_rerun_adds_nothing_and_a_catch_up_adds_only_what_is_new(
    stores: tuple[eskit.EventStore, eskit.EventStore],
) -> None:
    source, target = stores
    first = await migrate_events(source, target, v2)
    again = await migrate_events(source, target, v2)
    assert (again.appended, again.recorded, again.written) == (0, False, first.written)

    await fill(source, 2, start=10)  # the old store keeps serving until the switch
    caught_up = await migrate_events(source, target, v2)

    assert caught_up.appended == 6  # two orders: placed, shipped, address
    assert caught_up.recorded
    records = [e async for e in target.read_stream("eskit.migration-orders-v2")]
    assert [r.data["source"]["events"] for r in records] == [22, 27]
    in_one_go = await fresh_migration(source)
    assert [e for e in await log(target) if e[3] != RECORD_TYPE] == in_one_go


async def fresh_migration(source: eskit.EventStore) -> list[tuple[Any, ...]]:
    async with eskit.open_store("memory://") as clean:
        await migrate_events(source, clean, v2)
        return [e for e in await log(clean) if e[3] != RECORD_TYPE]


async def test_a_run_cut_short_resumes_to_the_same_log(
    stores: tuple[eskit.EventStore, eskit.EventStore],
) -> None:
    source, target = stores
    seen = 0

    def crashes_midway(event: RecordedEvent) -> list[Rewritten]:
        nonlocal seen
        seen += 1
        if seen == 15:
            raise RuntimeError("power cut")
        return list(v2.transform(event))

    with pytest.raises(TransferError, match=r"source position 15 .*failed: RuntimeError"):
        await migrate_events(source, target, EventMigration("orders-v2", crashes_midway))
    done = await migrate_events(source, target, v2)

    assert await target.stream_version("eskit.migration-orders-v2") == 0
    assert [e for e in await log(target) if e[3] != RECORD_TYPE] == await fresh_migration(source)
    assert done.written.count == 30
    assert len({e[0] for e in await log(target)}) == 31  # no duplicates


async def test_a_target_holding_other_events_is_refused(
    stores: tuple[eskit.EventStore, eskit.EventStore],
) -> None:
    source, target = stores
    await target.append("purchase-0", [eskit.NewEvent("Other", {})])

    with pytest.raises(TransferError, match=r"position 1 is purchase-0 v0 Other.*empty store"):
        await migrate_events(source, target, v2)
    assert await target.last_position() == 1


async def test_a_target_holding_more_events_is_refused(
    stores: tuple[eskit.EventStore, eskit.EventStore],
) -> None:
    source, target = stores
    await migrate_events(source, target, v2)
    await target.append("purchase-99", [eskit.NewEvent("Other", {})])

    with pytest.raises(TransferError, match="holds more events than the migration writes"):
        await migrate_events(source, target, v2)


async def test_what_a_function_returns_must_be_rewritten_events(
    stores: tuple[eskit.EventStore, eskit.EventStore],
) -> None:
    source, target = stores
    wrong = EventMigration("wrong", lambda event: [event])  # type: ignore[list-item]
    bad_stream = EventMigration("bad", lambda event: [Rewritten.of(event, stream="")])

    with pytest.raises(TransferError, match=r"source position 1 \(order-0 v0 OrderPlaced"):
        await migrate_events(source, target, wrong)
    with pytest.raises(TransferError, match=r"source position 1 .*stream name must not be empty"):
        await migrate_events(source, target, bad_stream)
    assert await target.last_position() == 0


async def test_an_event_with_encrypted_fields_cannot_move(tmp_path: Path) -> None:
    sealed = {"email": {SEALED: "…", "k": "key-1"}}
    async with (
        eskit.open_store(f"sqlite:///{tmp_path}/blue.db") as source,
        eskit.open_store(f"sqlite:///{tmp_path}/green.db") as target,
    ):
        await source.append("customer-1", [eskit.NewEvent("CustomerRegistered", sealed)])
        moves = EventMigration("moves", lambda e: [Rewritten.of(e, stream="client-1")])

        with pytest.raises(TransferError, match="encrypted fields, bound to its stream and id"):
            await migrate_events(source, target, moves)
        done = await migrate_events(source, target, EventMigration("stays", split_shipping))
        assert done.kept == 1


def test_a_migration_name_must_make_a_stream_name() -> None:
    with pytest.raises(ValueError, match="control characters"):
        EventMigration("bad\nname", split_shipping)


async def test_payloads_kept_as_bytes_are_copied_byte_for_byte(
    stores: tuple[eskit.EventStore, eskit.EventStore],
) -> None:
    """Through a chain of transforms (upcast passes them, the category is renamed), and a
    rerun recognises them as written."""
    source, target = stores
    raw = eskit.RawData("application/octet-stream", bytes(range(256)))
    await source.append("order-99", [eskit.NewEvent("Ping", raw, eskit.RawData("", b"\x00"))])

    first = await migrate_events(source, target, v2)

    (copied,) = [e async for e in target.read_stream("purchase-99")]
    assert (copied.type, copied.raw, copied.raw_metadata) == ("Ping", raw, b"\x00")
    again = await migrate_events(source, target, v2)
    assert (again.appended, again.written) == (0, first.written)
