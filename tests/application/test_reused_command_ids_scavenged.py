"""A command id reused after a scavenge removed its command's events: judged exactly as
before the removal (``test_reused_command_ids``), from what the removal record keeps of the
first event's metadata (SQLite and PostgreSQL). The same command replays (its result has no
events: they are gone); any other command is refused naming the first use, never dropped."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from examples.invoicing.commands import AddInvoiceLine, IssueInvoice, PayInvoice
from examples.invoicing.customer import RegisterCustomer
from examples.invoicing.events import InvoiceLineAdded
from examples.invoicing.invoice import Invoice

import eskit
from eskit.application.commands import command_event_id
from eskit.privacy import Keyring, MasterKey, MemoryKeyStore, forget
from eskit.store.scavenge import scavenge
from tests import postgres
from tests.application.test_reused_command_ids import (
    NOON,
    PEN,
    claim_only_bus,
    invoices,
    line,
    line_bus,
    line_classes,
)
from tests.privacy import events as privacy_events
from tests.privacy.test_command_ids import Rename
from tests.privacy.test_command_ids import bus_for as privacy_bus

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[eskit.EventStore]:
    url = f"sqlite:///{tmp_path}/events.db" if request.param == "sqlite" else postgres.store_url()
    async with eskit.open_store(url) as opened:
        yield opened


async def scavenged(store: eskit.EventStore, command_id: uuid.UUID, *streams: str) -> int:
    """Delete ``streams`` and scavenge them: the command's first event is gone from the log
    and recorded as removed. The head after it."""
    for stream in streams:
        await store.delete_stream(stream)
    report = await scavenge(store)
    assert report.total > 0
    first = command_event_id(command_id, 0)
    assert await store.find_event(first) is None
    gone = await store.find_removed(first)
    assert gone is not None
    assert gone.used_for is not None
    return await store.last_position()


async def test_a_command_id_reused_for_another_aggregate_is_refused_naming_its_first_use(
    store: eskit.EventStore,
) -> None:
    bus = await invoices(store, "44", "46")
    command_id = uuid.uuid4()
    await bus.send(PEN, command_id=command_id)
    head = await scavenged(store, command_id, "invoice-44")

    with pytest.raises(eskit.IdempotencyConflict) as raised:
        await bus.send(AddInvoiceLine("46", "pen", 250, "EUR"), command_id=command_id)

    assert str(raised.value) == (
        "stream 'invoice-46': event ids clash with events already written: command id"
        f" {command_id} was already used by AddInvoiceLine on invoice-44, with other arguments"
        " (this one is for invoice-46); a command id names one command: send another command"
        " with a new id"
    )
    assert [e.type async for e in store.read_stream("invoice-46")] == ["InvoiceCreated"]
    assert await store.last_position() == head


async def test_a_command_id_reused_with_other_arguments_or_another_type_is_refused(
    store: eskit.EventStore,
) -> None:
    bus = await invoices(store, "44")
    command_id = uuid.uuid4()
    first = await bus.send(PEN, command_id=command_id)
    head = await scavenged(store, command_id, "invoice-44")

    with pytest.raises(
        eskit.IdempotencyConflict,
        match=f"command id {command_id} was already used by AddInvoiceLine on invoice-44,"
        " with other arguments;",
    ):
        await bus.send(AddInvoiceLine("44", "book", 900, "EUR"), command_id=command_id)
    with pytest.raises(
        eskit.IdempotencyConflict, match="used by AddInvoiceLine on invoice-44, not by IssueInvoice"
    ):
        await bus.send(IssueInvoice("44", NOON), command_id=command_id)
    again = await bus.send(PEN, command_id=command_id)
    assert (again.replayed, again.version, again.position) == (
        True,
        first.version,
        first.position,
    )
    assert await store.last_position() == head


async def test_the_same_command_sent_at_another_time_is_replayed(store: eskit.EventStore) -> None:
    bus = await invoices(store, "44")
    await bus.send(PEN)
    await bus.send(IssueInvoice("44", NOON))
    command_id = uuid.uuid4()
    first = await bus.send(PayInvoice("44", 250, NOON), command_id=command_id)
    head = await scavenged(store, command_id, "invoice-44")

    again = await bus.send(
        PayInvoice("44", 250, NOON + dt.timedelta(hours=1)), command_id=command_id
    )

    assert (again.position, again.replayed) == (first.position, True)
    with pytest.raises(eskit.IdempotencyConflict, match="with other arguments"):
        await bus.send(PayInvoice("44", 100, NOON), command_id=command_id)
    assert await store.last_position() == head


async def test_a_retry_after_a_defaulted_field_was_added_is_replayed(
    store: eskit.EventStore,
) -> None:
    first_class, later_class = line_classes("msgspec")
    await invoices(store, "44")
    command_id = uuid.uuid4()
    first = await line_bus(store, first_class).send(line(first_class), command_id=command_id)
    await scavenged(store, command_id, "invoice-44")
    upgraded = line_bus(store, later_class)

    again = await upgraded.send(line(later_class), command_id=command_id)

    assert (again.position, again.replayed) == (first.position, True)
    with pytest.raises(eskit.IdempotencyConflict, match="with other arguments"):
        await upgraded.send(line(later_class, note="gift"), command_id=command_id)


async def test_a_command_writing_only_other_streams_is_replayed_or_refused_by_its_aggregate(
    store: eskit.EventStore,
) -> None:
    bus = claim_only_bus(store)
    ann, command_id = RegisterCustomer("c-1", "Ann", "ann@example.com"), uuid.uuid4()
    await bus.send(ann, command_id=command_id)
    head = await scavenged(store, command_id, "email-ann@example.com")

    assert (await bus.send(ann, command_id=command_id)).replayed
    with pytest.raises(
        eskit.IdempotencyConflict,
        match=r"used by RegisterCustomer on customer-c-1, with other arguments \(this one is"
        r" for customer-c-2\)",
    ):
        await bus.send(RegisterCustomer("c-2", "Bob", "bob@example.com"), command_id=command_id)
    assert await store.last_position() == head


@pytest.mark.parametrize("recorded", [{}, {"command_digest": ""}], ids=["no digest", "empty"])
async def test_a_command_recorded_without_a_known_digest_is_judged_as_before(
    store: eskit.EventStore, recorded: dict[str, Any]
) -> None:
    """Without a digest (the release before digests): by type; with an empty one (no one
    can know it): by type and aggregate."""
    bus = await invoices(store, "44", "46")
    command_id = uuid.uuid4()
    metadata = {"command": "AddInvoiceLine", "command_id": str(command_id), **recorded}
    old = bus.repository(Invoice.model()).to_new_events(
        [InvoiceLineAdded("pen", 250)], metadata, [command_event_id(command_id, 0)]
    )
    written = await store.append("invoice-44", old, expected_version=0)
    await scavenged(store, command_id, "invoice-44")

    again = await bus.send(AddInvoiceLine("44", "book", 900, "EUR"), command_id=command_id)

    assert (again.position, again.replayed) == (written.last_position, True)
    with pytest.raises(eskit.IdempotencyConflict, match="not by IssueInvoice"):
        await bus.send(IssueInvoice("44", NOON), command_id=command_id)
    if recorded:
        with pytest.raises(eskit.IdempotencyConflict, match=r"\(this one is for invoice-46\)"):
            await bus.send(AddInvoiceLine("46", "pen", 250, "EUR"), command_id=command_id)


async def test_a_sealed_digest_stays_sealed_and_still_judges(store: eskit.EventStore) -> None:
    """The removal record keeps the digest as the event held it: sealed with the data
    subject's key. It opens as before; once the subject is forgotten, the id is judged by
    type and aggregate."""
    keyring = Keyring(MemoryKeyStore(), MasterKey.generate())
    registry = privacy_events.registry()
    registry.encrypt_with(keyring)
    bus, command_id = privacy_bus(store, registry), uuid.uuid4()
    first = await bus.send(Rename("c-1", "Ann"), command_id=command_id)
    await scavenged(store, command_id, "customer-c-1")
    gone = await store.find_removed(command_event_id(command_id, 0))
    assert gone is not None
    assert gone.used_for is not None
    assert gone.used_for["command_digest"]["$enc"] == "v1"

    with pytest.raises(eskit.IdempotencyConflict, match="with other arguments;"):
        await bus.send(Rename("c-1", "Bob"), command_id=command_id)
    assert (await bus.send(Rename("c-1", "Ann"), command_id=command_id)).replayed

    await forget(store, keyring, "c-1", by="dpo@example.com")
    again = await bus.send(Rename("c-1", "Bob"), command_id=command_id)
    assert (again.replayed, again.position) == (True, first.position)
    with pytest.raises(eskit.IdempotencyConflict, match=r"\(this one is for customer-c-2\)"):
        await bus.send(Rename("c-2", "Ann"), command_id=command_id)
