"""Reminders and overdue invoices: the invoice's rules as given/when/then specs, then the
process manager that sends the commands, on a clock the tests move, exactly once however
often it ticks and across restarts."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from typing import ClassVar

import pytest
from examples.invoicing.app import handle_invoice, invoicing
from examples.invoicing.commands import (
    AddInvoiceLine,
    CancelInvoice,
    CreateInvoice,
    IssueInvoice,
    MarkInvoiceOverdue,
    PayInvoice,
    SendPaymentReminder,
)
from examples.invoicing.events import (
    InvoiceCancelled,
    InvoiceCreated,
    InvoiceIssued,
    InvoiceLineAdded,
    InvoiceMarkedOverdue,
    InvoicePaid,
    PaymentReminderSent,
)
from examples.invoicing.invoice import Invoice, InvoiceError
from examples.invoicing.read_models import overdue_invoices, projections
from examples.invoicing.reminders import InvoiceReminders

import eskit
from eskit.application import CommandBus
from eskit.projections import Database, ProjectionRunner, live_tables
from eskit.testing.specs import Spec
from tests.examples.read_side import DUE, START, TIMEOUT, Clock, ReadSide

invoice = Spec(Invoice, handle=handle_invoice)

DAY_AFTER = dt.datetime.combine(DUE, dt.time(9), dt.UTC) + dt.timedelta(days=1)
ON_DUE_DATE = dt.datetime.combine(DUE, dt.time(23, 59), dt.UTC)

created = InvoiceCreated("inv-1", "c-1", "EUR", DUE)
book = InvoiceLineAdded("book", 3000)
issued = InvoiceIssued(START, 3000)
reminded = PaymentReminderSent(DAY_AFTER, DUE)
overdue = InvoiceMarkedOverdue(DAY_AFTER + dt.timedelta(days=14), DUE)


# -- the invoice's rules ------------------------------------------------------------------------


def test_an_issued_invoice_past_its_due_date_can_be_reminded_about() -> None:
    invoice.given(created, book, issued).when(SendPaymentReminder("inv-1", DAY_AFTER)).then(
        reminded
    )


def test_no_reminder_until_the_due_date_is_past() -> None:
    invoice.given(created, book, issued).when(
        SendPaymentReminder("inv-1", ON_DUE_DATE)
    ).then_raises(InvoiceError, match="not past its due date 2024-05-31")


@pytest.mark.parametrize(
    ("settled", "status"),
    [(InvoicePaid(3000, START), "paid"), (InvoiceCancelled("no", START), "cancelled")],
)
def test_a_settled_invoice_needs_no_reminder_and_is_never_overdue(
    settled: object, status: str
) -> None:
    given = invoice.given(created, book, issued, settled)
    given.when(SendPaymentReminder("inv-1", DAY_AFTER)).then_raises(
        InvoiceError, match=f"a {status} invoice needs no reminder"
    )
    given.when(MarkInvoiceOverdue("inv-1", DAY_AFTER)).then_raises(
        InvoiceError, match=f"a {status} invoice cannot be marked overdue"
    )


def test_a_draft_is_neither_reminded_about_nor_overdue() -> None:
    invoice.given(created, book).when(SendPaymentReminder("inv-1", DAY_AFTER)).then_raises(
        InvoiceError, match="cannot remind about an invoice that is draft"
    )
    invoice.given(created, book).when(MarkInvoiceOverdue("inv-1", DAY_AFTER)).then_raises(
        InvoiceError, match="cannot mark overdue an invoice that is draft"
    )


def test_an_overdue_invoice_is_marked_once_and_can_still_be_paid_or_cancelled() -> None:
    given = invoice.given(created, book, issued, reminded, overdue)
    given.when(MarkInvoiceOverdue("inv-1", DAY_AFTER)).then_raises(
        InvoiceError, match="already overdue"
    )
    given.when(PayInvoice("inv-1", 3000, DAY_AFTER)).then(InvoicePaid(3000, DAY_AFTER))
    given.when(CancelInvoice("inv-1", "bad debt", DAY_AFTER)).then(
        InvoiceCancelled("bad debt", DAY_AFTER)
    )


# -- the process ----------------------------------------------------------------------------------


async def issue(side: ReadSide, invoice_id: str = "inv-1") -> None:
    await side.send(
        CreateInvoice(invoice_id, "ada", "EUR", DUE),
        AddInvoiceLine(invoice_id, "book", 3000, "EUR"),
        IssueInvoice(invoice_id, side.clock()),
    )


async def types(store: eskit.EventStore, invoice_id: str = "inv-1") -> list[str]:
    return [e.type async for e in store.read_stream(f"invoice-{invoice_id}")]


ISSUED = ["InvoiceCreated", "InvoiceLineAdded", "InvoiceIssued"]


@pytest.mark.anyio
async def test_nothing_is_sent_until_the_due_date_is_past(read_side: ReadSide) -> None:
    await issue(read_side)

    read_side.clock.set(ON_DUE_DATE)
    await read_side.tick()

    assert await types(read_side.store) == ISSUED


@pytest.mark.anyio
async def test_one_reminder_the_day_after_however_often_it_ticks(read_side: ReadSide) -> None:
    await issue(read_side)

    read_side.clock.set(DAY_AFTER)
    for _ in range(3):
        await read_side.tick()

    assert await types(read_side.store) == [*ISSUED, "PaymentReminderSent"]
    recorded = [e async for e in read_side.store.read_stream("invoice-inv-1")]
    cause, reminder = recorded[2], recorded[3]
    assert reminder.metadata["causation_id"] == str(cause.id)
    assert reminder.metadata["correlation_id"] == cause.metadata["correlation_id"]
    assert reminder.metadata["process_manager"] == "invoice_reminders"


@pytest.mark.anyio
async def test_one_reminder_and_one_overdue_mark_when_ticks_race(read_side: ReadSide) -> None:
    await issue(read_side)
    read_side.clock.set(DAY_AFTER + dt.timedelta(days=30))

    reminders, now = read_side.reminders, read_side.clock()
    async with asyncio.timeout(TIMEOUT):
        await asyncio.gather(*(reminders.tick(read_side.db, now) for _ in range(5)))

    assert await types(read_side.store) == [*ISSUED, "PaymentReminderSent", "InvoiceMarkedOverdue"]


@pytest.mark.anyio
async def test_marked_overdue_14_days_after_the_due_date(read_side: ReadSide) -> None:
    await issue(read_side)
    read_side.clock.set(DAY_AFTER)
    await read_side.tick()

    read_side.clock.set(DAY_AFTER + dt.timedelta(days=12))  # 13 days after the due date
    await read_side.tick()
    assert await overdue_invoices(read_side.db) == []

    read_side.clock.set(DAY_AFTER + dt.timedelta(days=13))  # 14 days after
    await read_side.tick()
    await read_side.tick()

    assert await types(read_side.store) == [*ISSUED, "PaymentReminderSent", "InvoiceMarkedOverdue"]
    assert [r.invoice_id for r in await overdue_invoices(read_side.db)] == ["inv-1"]


@pytest.mark.anyio
async def test_a_process_that_was_off_for_weeks_reminds_then_marks_overdue(
    read_side: ReadSide,
) -> None:
    await issue(read_side)

    read_side.clock.set(DAY_AFTER + dt.timedelta(days=30))
    await read_side.tick()

    assert await types(read_side.store) == [*ISSUED, "PaymentReminderSent", "InvoiceMarkedOverdue"]


@pytest.mark.anyio
async def test_a_paid_or_cancelled_invoice_gets_nothing(read_side: ReadSide) -> None:
    await issue(read_side, "inv-1")
    await issue(read_side, "inv-2")
    await read_side.send(
        PayInvoice("inv-1", 3000, read_side.clock()),
        CancelInvoice("inv-2", "ordered twice", read_side.clock()),
    )

    read_side.clock.set(DAY_AFTER + dt.timedelta(days=30))
    await read_side.tick()

    assert await types(read_side.store, "inv-1") == [*ISSUED, "InvoicePaid"]
    assert await types(read_side.store, "inv-2") == [*ISSUED, "InvoiceCancelled"]


async def reminder_rows(db: Database) -> list[tuple[str, str, int | None, str | None]]:
    return await db.read(
        lambda c: c.execute(
            "SELECT invoice_id, state, reminder_position, closed_because FROM invoice_reminders"
            " ORDER BY invoice_id"
        ).fetchall()
    )


@pytest.mark.anyio
async def test_nothing_is_sent_twice_across_restarts_even_if_a_tick_died_midway(
    store: eskit.EventStore, clock: Clock
) -> None:
    bus = invoicing(store)
    async with ProjectionRunner(store, projections(store, bus)) as runner:
        side = ReadSide(store, bus, runner, clock)
        await issue(side)
        clock.set(DAY_AFTER)
        await side.tick()
        ((_, _, position, _),) = await reminder_rows(side.db)

        def forget_the_reminder(conn: sqlite3.Connection) -> None:
            """As if the tick crashed after sending, before noting what it sent."""
            table = live_tables(conn, InvoiceReminders)["invoice_reminders"]
            conn.execute(f'UPDATE "{table}" SET reminder_position = NULL')

        await runner.database.write(forget_the_reminder)

    bus = invoicing(store)
    async with ProjectionRunner(store, projections(store, bus)) as restarted:
        side = ReadSide(store, bus, restarted, clock)
        await side.caught_up()
        await side.tick()

        assert await types(store) == [*ISSUED, "PaymentReminderSent"]
        assert await reminder_rows(side.db) == [("inv-1", "open", position, None)]


@pytest.mark.anyio
async def test_an_invoice_paid_before_the_process_saw_it_is_closed(
    store: eskit.EventStore, clock: Clock
) -> None:
    bus = invoicing(store)
    reminders = InvoiceReminders(bus, clock)
    runner = ProjectionRunner(store, [reminders])  # not following: caught up by hand
    await issue_without_waiting(bus, clock)
    await runner.run_until_caught_up()
    await bus.send(PayInvoice("inv-1", 3000, clock()))  # the process has not seen this yet

    clock.set(DAY_AFTER)
    await reminders.tick(runner.database, clock())
    await reminders.tick(runner.database, clock())

    assert await types(store) == [*ISSUED, "InvoicePaid"]
    assert await reminder_rows(runner.database) == [
        ("inv-1", "closed", None, "a paid invoice needs no reminder")
    ]


async def issue_without_waiting(bus: CommandBus, clock: Clock) -> None:
    await bus.send(CreateInvoice("inv-1", "ada", "EUR", DUE))
    await bus.send(AddInvoiceLine("inv-1", "book", 3000, "EUR"))
    await bus.send(IssueInvoice("inv-1", clock()))


class EagerReminders(InvoiceReminders):
    """Ticks often while idle, so a test sees the runner's own ticks quickly."""

    tick_every: ClassVar[float] = 0.02


@pytest.mark.anyio
async def test_the_runner_ticks_by_itself_when_the_clock_moves(
    store: eskit.EventStore, clock: Clock
) -> None:
    bus = invoicing(store)
    async with ProjectionRunner(store, [EagerReminders(bus, clock)]) as runner:
        await issue_without_waiting(bus, clock)
        head = await store.last_position()
        async with asyncio.timeout(TIMEOUT):
            await runner.wait_until(head)

            clock.set(DAY_AFTER)
            await store.wait_for_events(head)

    assert await types(store) == [*ISSUED, "PaymentReminderSent"]
