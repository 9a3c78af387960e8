"""Data of the write-side workloads (C, L): the invoicing example's commands and events.

They are made from the same payloads as the store workloads, so both sides of a workload
handle the same invoices, customers and amounts, and the envelopes carry the metadata the
``CommandBus`` stamps (correlation, causation, command, command id, schema version).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from examples.invoicing.commands import CreateInvoice
from examples.invoicing.events import InvoiceCreated, InvoiceLineAdded, events
from examples.invoicing.invoice import Invoice

import eskit
from benchmarks.common import Payload
from eskit.application import Loaded, Repository
from eskit.domain import Model
from eskit.store import MemoryStore

DUE = dt.date(2026, 12, 31)
AGGREGATE_ID = "inv-000000"
"""The one invoice the L workloads load."""
WITH_SNAPSHOTS: Model[Invoice] = Invoice.model()
"""The example's own model: a snapshot every 100 events."""
WITHOUT_SNAPSHOTS: Model[Invoice] = dataclasses.replace(WITH_SNAPSHOTS, snapshot_every=None)
STREAM = WITH_SNAPSHOTS.stream(AGGREGATE_ID)

History = list[tuple[object, dict[str, Any]]]
"""Typed events, each with the metadata the bus would have stamped on it."""


def bus_metadata(item: Payload, command: str) -> dict[str, Any]:
    """What ``CommandBus.send(command)`` puts in the metadata of its events (without the
    schema version, which the repository adds): with no ids given, the command id is also
    the correlation and causation id."""
    the_id = item[1]["correlation_id"]
    return {
        "correlation_id": the_id,
        "causation_id": the_id,
        "command": command,
        "command_id": the_id,
    }


def create_commands(items: list[Payload]) -> list[CreateInvoice]:
    """One ``CreateInvoice`` per payload, each for a new invoice."""
    return [CreateInvoice(d["invoice_id"], d["customer_id"], d["currency"], DUE) for d, _ in items]


def created(items: list[Payload]) -> History:
    """The ``InvoiceCreated`` event each of those commands records."""
    return [
        (
            InvoiceCreated(c.invoice_id, c.customer_id, c.currency, c.due_date),
            bus_metadata(item, "CreateInvoice"),
        )
        for c, item in zip(create_commands(items), items, strict=True)
    ]


def history(items: list[Payload]) -> History:
    """One invoice's events: ``InvoiceCreated``, then one ``InvoiceLineAdded`` per payload
    after the first."""
    first, *rest = items
    data = first[0]
    opened = InvoiceCreated(AGGREGATE_ID, data["customer_id"], data["currency"], DUE)
    lines: History = [
        (
            InvoiceLineAdded(f"sku-{i % 1_000:03d}", item[0]["amount"]),
            bus_metadata(item, "AddInvoiceLine"),
        )
        for i, item in enumerate(rest, start=1)
    ]
    return [(opened, bus_metadata(first, "CreateInvoice")), *lines]


def envelopes(events_: History) -> list[eskit.NewEvent]:
    """The events exactly as ``Repository.save`` hands them to the store (encoding needs
    no store: the repository's is never opened)."""
    to_new_events = Repository(MemoryStore(), events, WITH_SNAPSHOTS).to_new_events
    return [envelope for typed, meta in events_ for envelope in to_new_events([typed], meta)]


def final_state(events_: History) -> Invoice:
    """The invoice after all of ``events_`` (for the snapshot, and to check loads)."""
    return WITH_SNAPSHOTS.replay([typed for typed, _ in events_])


def loaded_right(loaded: Loaded[Invoice], expected: Invoice, version: int) -> bool:
    """A load returned the invoice at its last version with every line counted."""
    state = loaded.state
    return (
        loaded.version == version
        and state.total == expected.total
        and (state.status, state.customer_id, state.due_date)
        == (expected.status, expected.customer_id, expected.due_date)
    )


def warm_up_commands(count: int) -> list[CreateInvoice]:
    """Commands for invoices no workload uses, to warm a bus up before the clock starts."""
    return [CreateInvoice(f"warmup-{i}", "cus-0000", "EUR", DUE) for i in range(count)]


def streams(items: list[Payload]) -> list[str]:
    """The stream of each payload's invoice."""
    return [WITH_SNAPSHOTS.stream(data["invoice_id"]) for data, _ in items]
