"""A command id sent again: the same command is replayed, any other command is refused with
``IdempotencyConflict`` naming the first use, never dropped (on every backend)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any, Literal

import msgspec
import pydantic
import pytest
from examples.invoicing.app import invoicing
from examples.invoicing.commands import AddInvoiceLine, CreateInvoice, IssueInvoice, PayInvoice
from examples.invoicing.customer import RegisterCustomer, customer_decider
from examples.invoicing.events import EmailClaimed, InvoiceLineAdded
from examples.invoicing.events import events as invoicing_events
from examples.invoicing.invoice import Invoice

import eskit
from eskit.application import CommandBus
from eskit.application.commands import AlsoAppend, command_event_id
from eskit.application.idempotency import command_digest

pytestmark = pytest.mark.anyio

NOON = dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)
PEN = AddInvoiceLine("44", "pen", 250, "EUR")


async def invoices(store: eskit.EventStore, *ids: str) -> CommandBus:
    """The invoicing bus, with a draft invoice for each of ``ids``."""
    bus = invoicing(store)
    for invoice_id in ids:
        await bus.send(CreateInvoice(invoice_id, "c-1", "EUR", dt.date(2024, 4, 1)))
    return bus


async def types_in(store: eskit.EventStore, stream: str) -> list[str]:
    return [e.type async for e in store.read_stream(stream)]


async def test_a_command_id_reused_for_another_aggregate_is_refused_naming_its_first_use(
    every_store: eskit.EventStore,
) -> None:
    bus = await invoices(every_store, "44", "46")
    command_id = uuid.uuid4()
    await bus.send(PEN, command_id=command_id)
    head = await every_store.last_position()

    with pytest.raises(eskit.IdempotencyConflict) as raised:
        await bus.send(AddInvoiceLine("46", "pen", 250, "EUR"), command_id=command_id)

    assert str(raised.value) == (
        "stream 'invoice-46': event ids clash with events already written: command id"
        f" {command_id} was already used by AddInvoiceLine on invoice-44, with other arguments"
        " (this one is for invoice-46); a command id names one command: send another command"
        " with a new id"
    )
    assert await types_in(every_store, "invoice-46") == ["InvoiceCreated"]
    assert await every_store.last_position() == head


async def test_a_command_id_reused_with_other_arguments_is_refused(
    every_store: eskit.EventStore,
) -> None:
    bus = await invoices(every_store, "44")
    command_id = uuid.uuid4()
    await bus.send(PEN, command_id=command_id)

    with pytest.raises(
        eskit.IdempotencyConflict,
        match=f"command id {command_id} was already used by AddInvoiceLine on invoice-44,"
        " with other arguments;",
    ):
        await bus.send(AddInvoiceLine("44", "book", 900, "EUR"), command_id=command_id)

    assert await types_in(every_store, "invoice-44") == ["InvoiceCreated", "InvoiceLineAdded"]


async def test_a_command_id_reused_by_another_type_is_still_refused(
    every_store: eskit.EventStore,
) -> None:
    bus = await invoices(every_store, "44")
    command_id = uuid.uuid4()
    await bus.send(PEN, command_id=command_id)

    with pytest.raises(
        eskit.IdempotencyConflict, match="used by AddInvoiceLine on invoice-44, not by IssueInvoice"
    ):
        await bus.send(IssueInvoice("44", NOON), command_id=command_id)


async def test_the_same_command_sent_at_another_time_is_replayed(
    every_store: eskit.EventStore,
) -> None:
    """``now`` is when the command is sent: a retry's may differ (a process manager's tick
    repeated after a crash sends its commands again with a later ``now``)."""
    bus = await invoices(every_store, "44")
    await bus.send(PEN)
    await bus.send(IssueInvoice("44", NOON))
    command_id = uuid.uuid4()

    first = await bus.send(PayInvoice("44", 250, NOON), command_id=command_id)
    later = NOON + dt.timedelta(hours=1)
    again = await bus.send(PayInvoice("44", 250, later), command_id=command_id)

    assert (again.position, again.replayed) == (first.position, True)
    assert (await types_in(every_store, "invoice-44")).count("InvoicePaid") == 1
    with pytest.raises(eskit.IdempotencyConflict, match="with other arguments"):
        await bus.send(PayInvoice("44", 100, NOON), command_id=command_id)


async def test_the_events_record_what_their_command_id_was_used_for(
    every_store: eskit.EventStore,
) -> None:
    bus = await invoices(every_store, "44")
    await bus.send(PEN, command_id=uuid.uuid4())
    await bus.send(AddInvoiceLine("44", "ink", 5, "EUR"))  # no id: nothing to recognise

    created, line, ink = [e async for e in every_store.read_stream("invoice-44")]

    assert line.metadata["command"] == "AddInvoiceLine"
    assert line.metadata["command_digest"] == command_digest(PEN)
    assert "command_digest" not in created.metadata
    assert "command_digest" not in ink.metadata
    assert "command_stream" not in line.metadata  # the event's own stream says it


# -- a command class that gained a defaulted field since the first send ---------------------

Kind = Literal["msgspec", "dataclass", "pydantic"]


def line_classes(kind: Kind) -> tuple[type[Any], type[Any]]:
    """``AddInvoiceLine`` as the release that sent it defined it, and as the next release
    defines it, with two more fields that have defaults."""
    fields: list[tuple[str, Any]] = [
        ("invoice_id", str),
        ("sku", str),
        ("amount", int),
        ("currency", str),
    ]
    if kind == "msgspec":
        later = msgspec.defstruct(
            "AddInvoiceLine",
            [*fields, ("note", str, ""), ("tags", list[str], msgspec.field(default_factory=list))],
            frozen=True,
        )
        return AddInvoiceLine, later
    if kind == "dataclass":
        first = dataclasses.make_dataclass("AddInvoiceLine", fields, frozen=True)
        later = dataclasses.make_dataclass(
            "AddInvoiceLine",
            [
                *fields,
                ("note", str, dataclasses.field(default="")),
                ("tags", list[str], dataclasses.field(default_factory=list)),
            ],
        )
        return first, later
    typed = {name: (kind_, ...) for name, kind_ in fields}
    first = pydantic.create_model("AddInvoiceLine", **typed)  # type: ignore[call-overload]
    later = pydantic.create_model(  # type: ignore[call-overload]
        "AddInvoiceLine",
        **typed,
        note=(str, ""),
        tags=(list[str], pydantic.Field(default_factory=list)),
    )
    return first, later


def line_bus(store: eskit.EventStore, command: type[Any]) -> CommandBus:
    bus = CommandBus(store, invoicing_events)
    bus.register(
        command,
        Invoice,
        aggregate_id=lambda c: c.invoice_id,
        handle=lambda c, invoice: invoice.add_line(c.sku, c.amount, c.currency),
    )
    return bus


def line(kind_: type[Any], **changes: Any) -> Any:
    fields = {"invoice_id": "44", "sku": "pen", "amount": 250, "currency": "EUR", **changes}
    return kind_(**fields)


@pytest.mark.parametrize("kind", ["msgspec", "dataclass", "pydantic"])
async def test_a_retry_after_a_defaulted_field_was_added_is_replayed(
    every_store: eskit.EventStore, kind: Kind
) -> None:
    first_class, later_class = line_classes(kind)
    await invoices(every_store, "44")
    command_id = uuid.uuid4()
    first = await line_bus(every_store, first_class).send(line(first_class), command_id=command_id)
    upgraded = line_bus(every_store, later_class)

    again = await upgraded.send(line(later_class), command_id=command_id)

    assert (again.position, again.replayed) == (first.position, True)
    with pytest.raises(eskit.IdempotencyConflict, match="with other arguments"):
        await upgraded.send(line(later_class, note="gift"), command_id=command_id)
    with pytest.raises(eskit.IdempotencyConflict, match="with other arguments"):
        await upgraded.send(line(later_class, tags=["x"]), command_id=command_id)
    assert await types_in(every_store, "invoice-44") == ["InvoiceCreated", "InvoiceLineAdded"]


# -- commands that append only to other streams ---------------------------------------------


def claim_only_bus(store: eskit.EventStore) -> CommandBus:
    """RegisterCustomer deciding only an ``AlsoAppend``: its first event is on another
    stream than its aggregate's."""
    bus = CommandBus(store, invoicing_events)
    bus.register(
        RegisterCustomer,
        customer_decider,
        aggregate_id=lambda c: c.customer_id,
        handle=lambda c, s: [AlsoAppend(f"email-{c.email}", [EmailClaimed(c.customer_id)])],
    )
    return bus


async def test_a_command_writing_only_other_streams_is_replayed_or_refused_by_its_aggregate(
    every_store: eskit.EventStore,
) -> None:
    bus = claim_only_bus(every_store)
    ann, command_id = RegisterCustomer("c-1", "Ann", "ann@example.com"), uuid.uuid4()
    await bus.send(ann, command_id=command_id)

    again = await bus.send(ann, command_id=command_id)

    assert again.replayed
    (claimed,) = [e async for e in every_store.read_all()]
    assert claimed.metadata["command_stream"] == "customer-c-1"
    with pytest.raises(
        eskit.IdempotencyConflict,
        match=r"used by RegisterCustomer on customer-c-1, with other arguments \(this one is"
        r" for customer-c-2\)",
    ):
        await bus.send(RegisterCustomer("c-2", "Bob", "bob@example.com"), command_id=command_id)
    assert await every_store.last_position() == 1


# -- commands recorded by the release before digests ----------------------------------------


async def test_a_command_recorded_without_a_digest_is_judged_by_its_type(
    every_store: eskit.EventStore,
) -> None:
    """The previous release recorded only the type: such a command id still replays for a
    command of that type (the old rule) rather than failing every retry."""
    bus = await invoices(every_store, "44")
    command_id = uuid.uuid4()
    repository = bus.repository(Invoice.model())
    metadata = {"command": "AddInvoiceLine", "command_id": str(command_id)}
    old = repository.to_new_events(
        [InvoiceLineAdded("pen", 250)], metadata, [command_event_id(command_id, 0)]
    )
    written = await every_store.append("invoice-44", old, expected_version=0)

    again = await bus.send(PEN, command_id=command_id)

    assert (again.position, again.replayed) == (written.last_position, True)
    assert await every_store.last_position() == written.last_position
    with pytest.raises(eskit.IdempotencyConflict, match="not by IssueInvoice"):
        await bus.send(IssueInvoice("44", NOON), command_id=command_id)


async def test_a_command_recorded_with_an_empty_digest_is_judged_by_type_and_aggregate(
    every_store: eskit.EventStore,
) -> None:
    """An empty digest is one no one can know (a development build withheld it, as a
    forgotten subject's sealed digest now reads): the same type on the same aggregate
    replays, anything else is refused."""
    bus = await invoices(every_store, "44", "46")
    command_id = uuid.uuid4()
    repository = bus.repository(Invoice.model())
    metadata = {"command": "AddInvoiceLine", "command_id": str(command_id), "command_digest": ""}
    old = repository.to_new_events(
        [InvoiceLineAdded("pen", 250)], metadata, [command_event_id(command_id, 0)]
    )
    written = await every_store.append("invoice-44", old, expected_version=0)

    again = await bus.send(AddInvoiceLine("44", "book", 900, "EUR"), command_id=command_id)

    assert (again.position, again.replayed) == (written.last_position, True)
    with pytest.raises(eskit.IdempotencyConflict, match=r"\(this one is for invoice-46\)"):
        await bus.send(AddInvoiceLine("46", "pen", 250, "EUR"), command_id=command_id)
    assert await every_store.last_position() == written.last_position
