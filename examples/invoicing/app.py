"""Wiring: the command bus routes invoice commands to the Invoice aggregate (class style) and
customer commands to the customer decider (functional style)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeAlias, assert_never

from eskit.application import CommandBus, CommandContext, CommandResult
from eskit.errors import WrongExpectedVersion
from eskit.store import EventStore
from examples.invoicing.commands import (
    AddInvoiceLine,
    CancelInvoice,
    CreateInvoice,
    IssueInvoice,
    MarkInvoiceOverdue,
    PayInvoice,
    SendPaymentReminder,
)
from examples.invoicing.customer import (
    EMAIL_CATEGORY,
    ChangeCustomerName,
    EmailAlreadyUsed,
    RegisterCustomer,
    customer_decider,
)
from examples.invoicing.events import events
from examples.invoicing.invoice import Invoice

InvoiceCommand: TypeAlias = (
    CreateInvoice
    | AddInvoiceLine
    | IssueInvoice
    | PayInvoice
    | CancelInvoice
    | SendPaymentReminder
    | MarkInvoiceOverdue
)


def invoicing(store: EventStore) -> CommandBus:
    """A command bus for the invoicing and customer commands on ``store``."""
    bus = CommandBus(store, events, middleware=[refuse_used_emails])
    bus.register(CreateInvoice, Invoice, aggregate_id=invoice_id, handle=handle_invoice)
    bus.register(AddInvoiceLine, Invoice, aggregate_id=invoice_id, handle=handle_invoice)
    bus.register(IssueInvoice, Invoice, aggregate_id=invoice_id, handle=handle_invoice)
    bus.register(PayInvoice, Invoice, aggregate_id=invoice_id, handle=handle_invoice)
    bus.register(CancelInvoice, Invoice, aggregate_id=invoice_id, handle=handle_invoice)
    bus.register(SendPaymentReminder, Invoice, aggregate_id=invoice_id, handle=handle_invoice)
    bus.register(MarkInvoiceOverdue, Invoice, aggregate_id=invoice_id, handle=handle_invoice)
    # A Decider's own `decide` handles its commands: no `handle=` needed.
    bus.register(RegisterCustomer, customer_decider, aggregate_id=customer_id)
    bus.register(ChangeCustomerName, customer_decider, aggregate_id=customer_id)
    return bus


def handle_invoice(command: InvoiceCommand, invoice: Invoice) -> None:
    """Run one invoice command: the invoice's methods check the rules and record events."""
    match command:
        case CreateInvoice():
            invoice.create(
                command.invoice_id, command.customer_id, command.currency, command.due_date
            )
        case AddInvoiceLine():
            invoice.add_line(command.sku, command.amount, command.currency)
        case IssueInvoice():
            invoice.issue(command.now)
        case PayInvoice():
            invoice.pay(command.amount, command.now)
        case CancelInvoice():
            invoice.cancel(command.reason, command.now)
        case SendPaymentReminder():
            invoice.remind(command.now)
        case MarkInvoiceOverdue():
            invoice.mark_overdue(command.now)
        case _:
            assert_never(command)


def invoice_id(command: InvoiceCommand) -> str:
    return command.invoice_id


def customer_id(command: RegisterCustomer | ChangeCustomerName) -> str:
    return command.customer_id


async def refuse_used_emails(
    context: CommandContext, call_next: Callable[[CommandContext], Awaitable[CommandResult]]
) -> CommandResult:
    """Middleware: a lost race for an ``email-`` stream means that the address is taken.

    The bus raises ``WrongExpectedVersion`` for a conflict on a stream other than the
    aggregate's (it would not help to retry); this turns it into the domain's own error.
    """
    try:
        return await call_next(context)
    except WrongExpectedVersion as conflict:
        category, _, email = conflict.stream.partition("-")
        if category == EMAIL_CATEGORY:
            raise EmailAlreadyUsed(email) from None
        raise
