"""The canary: a unique value written into sensitive fields must appear nowhere eskit puts
data (the SQLite file and its write-ahead log, a PostgreSQL dump, snapshots, the relay's
NATS messages, the JSON reads return, the logs), and after a forget reads give the mask."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import subprocess
import urllib.parse
import uuid
from pathlib import Path

import msgspec
import pytest

import eskit
from eskit.application import CommandBus
from eskit.brokers.nats import NatsPublisher
from eskit.domain import EventRegistry
from eskit.privacy import FORGOTTEN, Keyring, MasterKey, forget, open_keystore
from eskit.relay import Relay, relay_runner
from tests import postgres, services
from tests.brokers.reading import delete_nats_stream, nats_raw
from tests.privacy import events as examples
from tests.privacy.conftest import drop_schema

pytestmark = pytest.mark.anyio


@dataclasses.dataclass(frozen=True)
class Register:
    customer_id: str
    email: str
    name: str


@dataclasses.dataclass(frozen=True)
class PlaceOrder:
    order_id: str
    amount: int


def bus_for(store: eskit.EventStore, events: EventRegistry) -> CommandBus:
    bus = CommandBus(store, events)

    def register(command: Register, customer: examples.Customer) -> None:
        customer.record(examples.registered(command.customer_id, command.email))
        customer.record(examples.CustomerRenamed(command.name))
        customer.record(examples.CustomerMoved(customer_id=command.customer_id, address="X 1"))

    bus.register(Register, examples.Customer, aggregate_id=lambda c: c.customer_id, handle=register)
    bus.register(
        PlaceOrder,
        examples.Order,
        aggregate_id=lambda c: c.order_id,
        handle=lambda c, order: order.record(examples.OrderPlaced(c.order_id, c.amount)),
    )
    return bus


async def write_with_canary(store: eskit.EventStore, events: EventRegistry, canary: str) -> None:
    """Commands that put the canary in sensitive fields, and enough events that both
    aggregates cross their snapshot interval."""
    bus = bus_for(store, events)
    await bus.send(Register("c-1", f"{canary}@example.com", canary))
    await bus.send(Register("c-2", "other@example.com", "Other"))
    for _ in range(3):
        await bus.send(PlaceOrder("o-1", 5))
    for repository in (
        bus.repository(examples.Customer.model()),
        bus.repository(examples.Order.model()),
    ):
        await repository.wait_for_snapshots()
    assert await store.load_snapshot("customer-c-1", 1) is None  # never of personal data
    assert await store.load_snapshot("order-o-1", 1) is not None  # the others as usual


async def store_json(store: eskit.EventStore) -> bytes:
    """Everything reads return, as JSON."""
    return msgspec.json.encode([e async for e in store.read_all()])


async def assert_masked(store: eskit.EventStore, events: EventRegistry) -> None:
    loaded = await bus_for(store, events).repository(examples.Customer.model()).load("c-1")
    assert (loaded.state.email, loaded.state.name) == (FORGOTTEN, FORGOTTEN)
    other = await bus_for(store, events).repository(examples.Customer.model()).load("c-2")
    assert other.state.name == "Other"


def registry_with(keyring: Keyring) -> EventRegistry:
    events = examples.registry()
    events.encrypt_with(keyring)
    return events


async def test_the_canary_is_nowhere_on_sqlite_nats_or_in_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    canary = f"canary-{uuid.uuid4().hex}"
    url, prefix = services.nats_url(), services.unique("privacy")
    keyring = Keyring(open_keystore(f"sqlite:///{tmp_path}/keys.db"), MasterKey.generate())
    events = registry_with(keyring)
    try:
        async with eskit.open_store(f"sqlite:///{tmp_path}/events.db") as store:
            await write_with_canary(store, events, canary)
            publisher = NatsPublisher(url, prefix)
            runner = relay_runner(store, Relay(publisher))
            try:
                await runner.run_until_caught_up()
            finally:
                await runner.stop()
                await publisher.close()
            published = await nats_bodies(url, prefix)
            assert len(published) == await store.last_position() == 9
            assert canary.encode() not in b"".join(published)
            assert canary.encode() not in await store_json(store)
            assert canary.encode() not in files_bytes(tmp_path, wal=True)  # the log holds it all

            await forget(store, keyring, "c-1", by="dpo")
            await assert_masked(store, events)
        assert canary.encode() not in files_bytes(tmp_path)  # checkpointed into the file
        assert canary not in caplog.text
        assert "other@example.com" not in caplog.text
    finally:
        keyring.close()
        await delete_nats_stream(url, prefix)


async def test_the_canary_is_not_in_a_postgresql_dump() -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    store_url = postgres.store_url()
    keys_url = store_url.replace("schema=t_", "schema=k_")
    keyring = Keyring(open_keystore(keys_url), MasterKey.generate())
    events = registry_with(keyring)
    try:
        async with eskit.open_store(store_url) as store:
            await write_with_canary(store, events, canary)
            dump = await asyncio.to_thread(pg_dump, store_url)
            assert b"CustomerRegistered" in dump  # the events are there, encrypted
            assert b'"$enc"' in dump
            assert canary.encode() not in dump
            assert canary.encode() not in await store_json(store)
            await forget(store, keyring, "c-1", by="dpo")
            await assert_masked(store, events)
    finally:
        keyring.close()
        await asyncio.to_thread(drop_schema, store_url)
        await asyncio.to_thread(drop_schema, keys_url)


def pg_dump(url: str) -> bytes:
    """A plain-text dump of the schema the store URL names (tables and rows)."""
    parts = urllib.parse.urlsplit(url)
    schema = dict(urllib.parse.parse_qsl(parts.query))["schema"]
    conninfo = urllib.parse.urlunsplit(parts._replace(query=""))
    return subprocess.run(
        ["pg_dump", "--schema", schema, conninfo], check=True, capture_output=True, timeout=60
    ).stdout


def files_bytes(directory: Path, wal: bool = False) -> bytes:
    """Every file of the directory: the store's file (and its write-ahead log while the
    store is open), the key store's."""
    found = [p for p in directory.iterdir() if p.is_file()]
    assert {p.name for p in found} >= {"events.db", "keys.db"} | (
        {"events.db-wal"} if wal else set()
    )
    return b"".join(p.read_bytes() for p in found)


async def nats_bodies(url: str, prefix: str) -> list[bytes]:
    """The raw bodies of every message the relay published (headers included)."""
    return [(raw.data or b"") + repr(raw.headers).encode() for raw in await nats_raw(url, prefix)]
