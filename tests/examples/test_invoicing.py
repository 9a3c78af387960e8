"""The invoice rules, one scenario per test: given these events, when this command, then
these events (or this refusal)."""

from __future__ import annotations

import datetime as dt

import pytest
from examples.invoicing.app import handle_invoice
from examples.invoicing.commands import (
    AddInvoiceLine,
    CancelInvoice,
    CreateInvoice,
    IssueInvoice,
    PayInvoice,
)
from examples.invoicing.events import (
    InvoiceCancelled,
    InvoiceCreated,
    InvoiceIssued,
    InvoiceLineAdded,
    InvoicePaid,
)
from examples.invoicing.invoice import Invoice, InvoiceError

from eskit.testing.specs import Spec

DUE = dt.date(2024, 5, 31)
NOW = dt.datetime(2024, 5, 1, 9, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(days=3)

invoice = Spec(Invoice, handle=handle_invoice)

created = InvoiceCreated("inv-1", "c-1", "EUR", DUE)
book = InvoiceLineAdded("book", 3000)
pen = InvoiceLineAdded("pen", 250)
issued = InvoiceIssued(NOW, 3250)
paid = InvoicePaid(3250, LATER)
cancelled = InvoiceCancelled("ordered twice", LATER)


# -- creating ------------------------------------------------------------------------------------


def test_a_new_invoice_is_created_as_a_draft() -> None:
    invoice.given().when(CreateInvoice("inv-1", "c-1", "EUR", DUE)).then(created)


def test_an_invoice_cannot_be_created_twice() -> None:
    invoice.given(created).when(CreateInvoice("inv-1", "c-2", "USD", DUE)).then_raises(
        InvoiceError, match="already exists"
    )


def test_the_currency_must_be_an_iso_code() -> None:
    invoice.given().when(CreateInvoice("inv-1", "c-1", "euro", DUE)).then_raises(
        InvoiceError, match="ISO code"
    )


# -- lines ---------------------------------------------------------------------------------------


def test_lines_add_up_to_the_total() -> None:
    invoice.given(created, book).when(AddInvoiceLine("inv-1", "pen", 250, "EUR")).then_state(
        lambda state: state.total == 3250
    )


@pytest.mark.parametrize("amount", [0, -100])
def test_a_line_amount_must_be_positive(amount: int) -> None:
    invoice.given(created).when(AddInvoiceLine("inv-1", "refund", amount, "EUR")).then_raises(
        InvoiceError, match="must be positive"
    )


def test_an_invoice_has_one_currency() -> None:
    invoice.given(created, book).when(AddInvoiceLine("inv-1", "pen", 250, "USD")).then_raises(
        InvoiceError, match="in EUR, not USD"
    )


def test_no_lines_are_added_after_issue() -> None:
    invoice.given(created, book, pen, issued).when(
        AddInvoiceLine("inv-1", "ink", 900, "EUR")
    ).then_raises(InvoiceError, match="cannot add a line to an invoice that is issued")


def test_no_lines_are_added_to_an_invoice_never_created() -> None:
    invoice.given().when(AddInvoiceLine("inv-1", "ink", 900, "EUR")).then_raises(
        InvoiceError, match="that is new"
    )


# -- issuing -------------------------------------------------------------------------------------


def test_issuing_fixes_the_total() -> None:
    invoice.given(created, book, pen).when(IssueInvoice("inv-1", NOW)).then(issued)


def test_an_invoice_without_lines_cannot_be_issued() -> None:
    invoice.given(created).when(IssueInvoice("inv-1", NOW)).then_raises(
        InvoiceError, match="without lines"
    )


def test_an_invoice_is_issued_once() -> None:
    invoice.given(created, book, issued).when(IssueInvoice("inv-1", LATER)).then_raises(
        InvoiceError, match="cannot issue an invoice that is issued"
    )


# -- paying --------------------------------------------------------------------------------------


def test_an_issued_invoice_is_paid_with_its_total() -> None:
    invoice.given(created, book, pen, issued).when(PayInvoice("inv-1", 3250, LATER)).then(paid)


@pytest.mark.parametrize("amount", [3000, 3251])
def test_the_payment_must_match_the_total(amount: int) -> None:
    invoice.given(created, book, pen, issued).when(PayInvoice("inv-1", amount, LATER)).then_raises(
        InvoiceError, match=f"payment {amount} does not match the total 3250"
    )


def test_a_draft_cannot_be_paid() -> None:
    invoice.given(created, book, pen).when(PayInvoice("inv-1", 3250, LATER)).then_raises(
        InvoiceError, match="cannot pay an invoice that is draft"
    )


def test_a_cancelled_invoice_cannot_be_paid() -> None:
    invoice.given(created, book, pen, issued, cancelled).when(
        PayInvoice("inv-1", 3250, LATER)
    ).then_raises(InvoiceError, match="a cancelled invoice cannot be paid")


def test_an_invoice_is_paid_once() -> None:
    invoice.given(created, book, pen, issued, paid).when(
        PayInvoice("inv-1", 3250, LATER)
    ).then_raises(InvoiceError, match="a paid invoice cannot be paid")


# -- cancelling ----------------------------------------------------------------------------------


def test_a_draft_can_be_cancelled() -> None:
    invoice.given(created, book).when(CancelInvoice("inv-1", "ordered twice", LATER)).then(
        cancelled
    )


def test_an_issued_invoice_can_be_cancelled() -> None:
    invoice.given(created, book, pen, issued).when(
        CancelInvoice("inv-1", "ordered twice", LATER)
    ).then(cancelled)


def test_a_paid_invoice_cannot_be_cancelled() -> None:
    invoice.given(created, book, pen, issued, paid).when(
        CancelInvoice("inv-1", "too late", LATER)
    ).then_raises(InvoiceError, match="a paid invoice cannot be cancelled")


def test_an_invoice_is_cancelled_once() -> None:
    invoice.given(created, book, cancelled).when(
        CancelInvoice("inv-1", "again", LATER)
    ).then_raises(InvoiceError, match="a cancelled invoice cannot be cancelled")


def test_an_invoice_never_created_cannot_be_cancelled() -> None:
    invoice.given().when(CancelInvoice("inv-1", "typo", LATER)).then_raises(
        InvoiceError, match="cannot cancel an invoice that is new"
    )
