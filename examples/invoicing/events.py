"""What happened to invoices and customers: registered with stable names and schema versions."""

from __future__ import annotations

import datetime as dt

import msgspec

from eskit.domain import EventRegistry

events = EventRegistry()


@events.register("InvoiceCreated", version=2)
class InvoiceCreated(msgspec.Struct, frozen=True):
    invoice_id: str
    customer_id: str
    currency: str
    due_date: dt.date


@events.register("InvoiceLineAdded")
class InvoiceLineAdded(msgspec.Struct, frozen=True):
    sku: str
    amount: int  # in the invoice's currency, minor units (cents)


@events.register("InvoiceIssued")
class InvoiceIssued(msgspec.Struct, frozen=True):
    issued_at: dt.datetime
    total: int


@events.register("InvoicePaid")
class InvoicePaid(msgspec.Struct, frozen=True):
    amount: int
    paid_at: dt.datetime


@events.register("InvoiceCancelled")
class InvoiceCancelled(msgspec.Struct, frozen=True):
    reason: str
    cancelled_at: dt.datetime


@events.register("PaymentReminderSent")
class PaymentReminderSent(msgspec.Struct, frozen=True):
    """The customer was reminded that an issued invoice is past its due date."""

    sent_at: dt.datetime
    due_date: dt.date


@events.register("InvoiceMarkedOverdue")
class InvoiceMarkedOverdue(msgspec.Struct, frozen=True):
    """Still unpaid long after its due date: collections take over."""

    marked_at: dt.datetime
    due_date: dt.date


@events.register("CustomerRegistered")
class CustomerRegistered(msgspec.Struct, frozen=True):
    customer_id: str
    name: str
    email: str  # normalised: trimmed, lower case


@events.register("CustomerRenamed")
class CustomerRenamed(msgspec.Struct, frozen=True):
    name: str


@events.register("EmailClaimed")
class EmailClaimed(msgspec.Struct, frozen=True):
    """Written to ``email-<address>``: the stream exists once the address is taken."""

    customer_id: str


@events.upcasters.register("InvoiceCreated", from_version=1)
def _invoice_created_v1(data: dict[str, object]) -> dict[str, object]:
    """Version 1 had no due date: such invoices were due 30 days after creation, which v1
    stored as ``created_on``."""
    created = dt.date.fromisoformat(str(data.pop("created_on")))
    return {**data, "due_date": (created + dt.timedelta(days=30)).isoformat()}
