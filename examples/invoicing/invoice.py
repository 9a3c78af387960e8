"""The Invoice aggregate, class style: command methods check the rules and record events."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

from eskit.domain import Aggregate, applies
from examples.invoicing.events import (
    InvoiceCancelled,
    InvoiceCreated,
    InvoiceIssued,
    InvoiceLineAdded,
    InvoiceMarkedOverdue,
    InvoicePaid,
    PaymentReminderSent,
)


class InvoiceError(Exception):
    """A command that breaks an invoice rule; nothing was recorded."""


class Invoice(Aggregate):
    category: ClassVar[str] = "invoice"
    snapshot_every: ClassVar[int | None] = 100

    status: str  # "new", "draft", "issued", "overdue", "paid", "cancelled"
    currency: str
    customer_id: str
    due_date: dt.date | None
    total: int
    paid: int

    def __init__(self) -> None:
        self.status, self.currency, self.customer_id = "new", "", ""
        self.due_date, self.total, self.paid = None, 0, 0

    # -- commands ---------------------------------------------------------------------------

    def create(self, invoice_id: str, customer_id: str, currency: str, due: dt.date) -> None:
        if self.status != "new":
            raise InvoiceError(f"invoice {invoice_id} already exists")
        if len(currency) != 3 or not currency.isupper():
            raise InvoiceError(f"currency must be an ISO code like EUR, got {currency!r}")
        self.record(InvoiceCreated(invoice_id, customer_id, currency, due))

    def add_line(self, sku: str, amount: int, currency: str) -> None:
        self._require("draft", "add a line to")
        if amount <= 0:
            raise InvoiceError(f"a line amount must be positive, got {amount}")
        if currency != self.currency:
            raise InvoiceError(f"this invoice is in {self.currency}, not {currency}")
        self.record(InvoiceLineAdded(sku, amount))

    def issue(self, now: dt.datetime) -> None:
        self._require("draft", "issue")
        if self.total <= 0:
            raise InvoiceError("an invoice without lines cannot be issued")
        self.record(InvoiceIssued(now, self.total))

    def pay(self, amount: int, now: dt.datetime) -> None:
        if self.status in ("paid", "cancelled"):
            raise InvoiceError(f"a {self.status} invoice cannot be paid")
        self._require(("issued", "overdue"), "pay")
        if amount != self.total:
            raise InvoiceError(f"the payment {amount} does not match the total {self.total}")
        self.record(InvoicePaid(amount, now))

    def cancel(self, reason: str, now: dt.datetime) -> None:
        if self.status in ("paid", "cancelled"):
            raise InvoiceError(f"a {self.status} invoice cannot be cancelled")
        self._require(("draft", "issued", "overdue"), "cancel")
        self.record(InvoiceCancelled(reason, now))

    def remind(self, now: dt.datetime) -> None:
        if self.status in ("paid", "cancelled"):
            raise InvoiceError(f"a {self.status} invoice needs no reminder")
        self._require(("issued", "overdue"), "remind about")
        self.record(PaymentReminderSent(now, self._past_due(now)))

    def mark_overdue(self, now: dt.datetime) -> None:
        if self.status == "overdue":
            raise InvoiceError("the invoice is already overdue")
        if self.status in ("paid", "cancelled"):
            raise InvoiceError(f"a {self.status} invoice cannot be marked overdue")
        self._require("issued", "mark overdue")
        self.record(InvoiceMarkedOverdue(now, self._past_due(now)))

    def _past_due(self, now: dt.datetime) -> dt.date:
        """The due date, if ``now`` is past it (reminders and overdue come after it)."""
        assert self.due_date is not None, "issued invoices have a due date"
        if now.date() <= self.due_date:
            raise InvoiceError(f"the invoice is not past its due date {self.due_date}")
        return self.due_date

    def _require(self, status: str | tuple[str, ...], action: str) -> None:
        allowed = (status,) if isinstance(status, str) else status
        if self.status not in allowed:
            raise InvoiceError(f"cannot {action} an invoice that is {self.status}")

    # -- evolving state: never raises, no IO -------------------------------------------------

    @applies(InvoiceCreated)
    def _created(self, event: InvoiceCreated) -> None:
        self.status, self.currency = "draft", event.currency
        self.customer_id, self.due_date = event.customer_id, event.due_date

    @applies(InvoiceLineAdded)
    def _line_added(self, event: InvoiceLineAdded) -> None:
        self.total += event.amount

    @applies(InvoiceIssued)
    def _issued(self, event: InvoiceIssued) -> None:
        self.status = "issued"

    @applies(InvoicePaid)
    def _paid(self, event: InvoicePaid) -> None:
        self.status, self.paid = "paid", self.paid + event.amount

    @applies(InvoiceCancelled)
    def _cancelled(self, event: InvoiceCancelled) -> None:
        self.status = "cancelled"

    @applies(PaymentReminderSent)
    def _reminded(self, event: PaymentReminderSent) -> None:
        pass  # changes nothing the rules look at

    @applies(InvoiceMarkedOverdue)
    def _overdue(self, event: InvoiceMarkedOverdue) -> None:
        self.status = "overdue"
