"""A command id reused with a command whose events hold personal data: its digest is sealed
with a data subject's key, so a reused id with other arguments is refused and the same
command replays; once the subject is forgotten, no stored byte confirms a guess of the
arguments and a reused id is judged by type and aggregate (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

import eskit
from eskit.application import AlsoAppend, CommandBus
from eskit.application.idempotency import UNKNOWN, command_digest, recorded_digest
from eskit.domain import EventRegistry
from eskit.privacy import FORGOTTEN, Keyring, PrivacyError, forget
from tests import postgres
from tests.privacy import events as examples
from tests.privacy.test_canary import pg_dump

pytestmark = pytest.mark.anyio

Dump = Callable[[], Awaitable[bytes]]


@pytest.fixture(params=["sqlite", "postgresql"])
async def stored(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[tuple[eskit.EventStore, Dump]]:
    """A store, and what it holds on disk: the SQLite file with its write-ahead log (read
    while the store is open), or a dump of the PostgreSQL schema."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/events.db"

        async def dump() -> bytes:
            files = [tmp_path / "events.db", tmp_path / "events.db-wal"]
            assert all(f.exists() for f in files)
            return b"".join(f.read_bytes() for f in files)

    else:
        url = postgres.store_url()

        async def dump() -> bytes:
            return await asyncio.to_thread(pg_dump, url)

    async with eskit.open_store(url) as store:
        yield store, dump


@dataclasses.dataclass(frozen=True)
class Rename:
    customer_id: str
    name: str


@dataclasses.dataclass(frozen=True)
class Refer:
    """Records on the customer an order, then its new address (the customer's data), and
    renames the friend (the friend's data): two subjects."""

    customer_id: str
    friend_id: str
    address: str


@dataclasses.dataclass(frozen=True)
class NameCustomer:
    """Sent to an order, it writes only to the customer's stream (``AlsoAppend``)."""

    order_id: str
    customer_id: str
    name: str


def bus_for(store: eskit.EventStore, events: EventRegistry) -> CommandBus:
    bus = CommandBus(store, events)
    bus.register(
        Rename,
        examples.Customer,
        aggregate_id=lambda c: c.customer_id,
        handle=lambda c, customer: customer.record(examples.CustomerRenamed(c.name)),
    )

    def refer(command: Refer, customer: examples.Customer) -> list[Any]:
        customer.record(examples.OrderPlaced("o-1", 5))
        customer.record(
            examples.CustomerMoved(customer_id=command.customer_id, address=command.address)
        )
        renamed = examples.CustomerRenamed(f"friend of {command.customer_id}")
        return [AlsoAppend(f"customer-{command.friend_id}", [renamed])]

    bus.register(Refer, examples.Customer, aggregate_id=lambda c: c.customer_id, handle=refer)
    bus.register(
        NameCustomer,
        examples.Order,
        aggregate_id=lambda c: c.order_id,
        handle=lambda c, _: [
            AlsoAppend(f"customer-{c.customer_id}", [examples.CustomerRenamed(c.name)])
        ],
    )
    return bus


async def first_event(store: eskit.EventStore) -> eskit.RecordedEvent:
    (first,) = [e async for e in store.read_all(limit=1)]
    return first


async def test_the_same_command_replays_and_other_arguments_are_refused(
    stored: tuple[eskit.EventStore, Dump], events: EventRegistry
) -> None:
    store, _ = stored
    bus, command_id = bus_for(store, events), uuid.uuid4()
    first = await bus.send(Rename("c-1", "Ann"), command_id=command_id)

    again = await bus.send(Rename("c-1", "Ann"), command_id=command_id)

    assert (again.replayed, again.position) == (True, first.position)
    assert again.events == [examples.CustomerRenamed("Ann")]
    with pytest.raises(
        eskit.IdempotencyConflict,
        match=f"command id {command_id} was already used by Rename on customer-c-1, with"
        " other arguments;",
    ):
        await bus.send(Rename("c-1", "Bob"), command_id=command_id)
    with pytest.raises(eskit.IdempotencyConflict, match=r"\(this one is for customer-c-2\)"):
        await bus.send(Rename("c-2", "Ann"), command_id=command_id)
    assert await store.last_position() == first.position


async def test_the_digest_is_stored_sealed_with_the_subjects_key(
    stored: tuple[eskit.EventStore, Dump], events: EventRegistry, keyring: Keyring
) -> None:
    store, dump = stored
    command_id = uuid.uuid4()
    await bus_for(store, events).send(Rename("c-1", "Ann"), command_id=command_id)

    renamed = await first_event(store)
    sealed = renamed.metadata["command_digest"]

    assert sealed["$enc"] == "v1"
    assert sealed["k"] == keyring.key_for("c-1")[0]
    assert recorded_digest(renamed, keyring) == command_digest(Rename("c-1", "Ann"))
    on_disk = await dump()
    assert sealed["c"].encode() in on_disk
    assert command_digest(Rename("c-1", "Ann")).encode() not in on_disk


async def test_after_forget_nothing_confirms_the_arguments_and_the_id_is_judged_by_aggregate(
    stored: tuple[eskit.EventStore, Dump], events: EventRegistry, keyring: Keyring
) -> None:
    store, dump = stored
    bus, command_id = bus_for(store, events), uuid.uuid4()
    first = await bus.send(Rename("c-1", "Ann"), command_id=command_id)
    forgotten = await forget(store, keyring, "c-1", by="dpo@example.com")

    renamed = await first_event(store)
    on_disk = await dump()
    assert renamed.metadata["command_digest"]["c"].encode() in on_disk  # there, unopenable
    assert recorded_digest(renamed, keyring) == UNKNOWN
    for guess in ("Ann", "Bob"):
        assert command_digest(Rename("c-1", guess)).encode() not in on_disk

    again = await bus.send(Rename("c-1", "Bob"), command_id=command_id)

    assert (again.replayed, again.position) == (True, first.position)
    assert again.events == [examples.CustomerRenamed(FORGOTTEN)]
    with pytest.raises(eskit.IdempotencyConflict, match=r"\(this one is for customer-c-2\)"):
        await bus.send(Rename("c-2", "Ann"), command_id=command_id)
    with pytest.raises(eskit.IdempotencyConflict, match="not by Refer"):
        await bus.send(Refer("c-1", "c-2", "X St 1"), command_id=command_id)
    assert await store.last_position() == forgotten.last_position  # nothing written


async def test_of_several_subjects_the_first_sensitive_field_of_the_first_event_seals_it(
    stored: tuple[eskit.EventStore, Dump], events: EventRegistry, keyring: Keyring
) -> None:
    """The first event (an order) holds no personal data; the second holds the
    customer's, the third (on another stream) the friend's: the customer's key seals."""
    store, _ = stored
    bus, command_id = bus_for(store, events), uuid.uuid4()
    sent = Refer("c-1", "c-2", "Ann St 1")
    first = await bus.send(sent, command_id=command_id)
    ordered = await first_event(store)
    assert ordered.type == "OrderPlaced"
    assert ordered.metadata["command_digest"]["k"] == keyring.key_for("c-1")[0]

    await forget(store, keyring, "c-2", by="dpo@example.com")  # the friend: still sealed
    assert (await bus.send(sent, command_id=command_id)).replayed
    with pytest.raises(eskit.IdempotencyConflict, match="with other arguments;"):
        await bus.send(Refer("c-1", "c-2", "Bob St 1"), command_id=command_id)

    await forget(store, keyring, "c-1", by="dpo@example.com")  # the customer: unopenable
    again = await bus.send(Refer("c-1", "c-2", "Bob St 1"), command_id=command_id)
    assert (again.replayed, again.position) == (True, first.position)


async def test_a_command_writing_only_another_stream_seals_its_digest_on_that_stream(
    stored: tuple[eskit.EventStore, Dump], events: EventRegistry, keyring: Keyring
) -> None:
    store, _ = stored
    bus, command_id = bus_for(store, events), uuid.uuid4()
    await bus.send(NameCustomer("o-1", "c-1", "Ann"), command_id=command_id)
    renamed = await first_event(store)
    assert (renamed.stream, renamed.metadata["command_stream"]) == ("customer-c-1", "order-o-1")
    assert renamed.metadata["command_digest"]["k"] == keyring.key_for("c-1")[0]

    assert (await bus.send(NameCustomer("o-1", "c-1", "Ann"), command_id=command_id)).replayed
    with pytest.raises(eskit.IdempotencyConflict, match="with other arguments;"):
        await bus.send(NameCustomer("o-1", "c-1", "Bob"), command_id=command_id)
    assert await store.last_position() == 1


async def test_a_sealed_digest_moved_to_another_event_does_not_open(
    stored: tuple[eskit.EventStore, Dump], events: EventRegistry, keyring: Keyring
) -> None:
    """It is bound to its event like a sealed field: copied elsewhere it raises rather
    than letting a reused id replay."""
    store, _ = stored
    bus = bus_for(store, events)
    await bus.send(Rename("c-1", "Ann"), command_id=uuid.uuid4())
    await bus.send(Rename("c-1", "Ann"), command_id=uuid.uuid4())
    one, other = [e async for e in store.read_stream("customer-c-1")]
    moved = msgspec.structs.replace(
        other, metadata={**other.metadata, "command_digest": one.metadata["command_digest"]}
    )

    with pytest.raises(PrivacyError, match=r"'metadata\.command_digest' of event"):
        recorded_digest(moved, keyring)
