"""Wiring: the command bus routes invoice commands to the Invoice aggregate (class style) and
customer commands to the customer decider (functional style). The same routes serve both
faces: ``invoicing`` builds the async bus, ``sync_invoicing`` the blocking one
(``eskit.sync``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeAlias, assert_never

import eskit.sync
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
    route(bus)
    return bus


def sync_invoicing(store: eskit.sync.SyncStore) -> eskit.sync.CommandBus:
    """The same bus on the blocking face, for a blocking store (``eskit.sync``)."""
    bus = eskit.sync.CommandBus(store, events, middleware=[refuse_used_emails_blocking])
    route(bus)
    return bus


def route(bus: CommandBus | eskit.sync.CommandBus) -> None:
    """Route every invoicing and customer command on ``bus`` (either face)."""
    # A create skips loading the stream that does not exist yet (one round trip).
    bus.register(
        CreateInvoice, Invoice, aggregate_id=invoice_id, handle=handle_invoice, creates=True
    )
    bus.register(AddInvoiceLine, Invoice, aggregate_id=invoice_id, handle=handle_invoice)
    bus.register(IssueInvoice, Invoice, aggregate_id=invoice_id, handle=handle_invoice)
    bus.register(PayInvoice, Invoice, aggregate_id=invoice_id, handle=handle_invoice)
    bus.register(CancelInvoice, Invoice, aggregate_id=invoice_id, handle=handle_invoice)
    bus.register(SendPaymentReminder, Invoice, aggregate_id=invoice_id, handle=handle_invoice)
    bus.register(MarkInvoiceOverdue, Invoice, aggregate_id=invoice_id, handle=handle_invoice)
    # A Decider's own `decide` handles its commands: no `handle=` needed.
    bus.register(RegisterCustomer, customer_decider, aggregate_id=customer_id, creates=True)
    bus.register(ChangeCustomerName, customer_decider, aggregate_id=customer_id)


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
        raise email_taken(conflict) from None


def refuse_used_emails_blocking(
    context: CommandContext, call_next: Callable[[CommandContext], CommandResult]
) -> CommandResult:
    """``refuse_used_emails`` for the blocking bus."""
    try:
        return call_next(context)
    except WrongExpectedVersion as conflict:
        raise email_taken(conflict) from None


def email_taken(conflict: WrongExpectedVersion) -> Exception:
    """``EmailAlreadyUsed`` for a conflict on an ``email-`` stream, else the conflict."""
    category, _, email = conflict.stream.partition("-")
    return EmailAlreadyUsed(email) if category == EMAIL_CATEGORY else conflict
