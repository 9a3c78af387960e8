"""The reminder process: unpaid invoices get a reminder after their due date, and are marked
overdue ``grace`` (14 days) after it.

Its handlers only keep, per invoice, what the process needs (due date, issued or not,
settled or not), in the transaction that advances its checkpoint. ``tick`` looks at the
clock, sends what is due with ``send_once`` (one command id per invoice and step, so a tick
repeated after a crash or by a second runner sends nothing twice) and notes the event each
command wrote. An invoice paid or cancelled meanwhile refuses the command (``InvoiceError``):
the process then has nothing left to do for it and closes its row.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import ClassVar

import msgspec

from eskit.projections import Database, ProcessManager, ReadModelConnection, handles, write_live
from eskit.store.model import RecordedEvent
from examples.invoicing.commands import MarkInvoiceOverdue, SendPaymentReminder
from examples.invoicing.events import InvoiceCreated
from examples.invoicing.invoice import InvoiceError
from examples.invoicing.reading import invoice_id, rows, typed


class Due(msgspec.Struct, frozen=True):
    """An open invoice with a step of the process due."""

    invoice_id: str
    due_date: dt.date
    issued_event: str
    reminder_position: int | None
    overdue_position: int | None


class InvoiceReminders(ProcessManager):
    """Reminds customers of unpaid invoices past due, then marks the invoices overdue."""

    name = "invoice_reminders"
    tables = ("invoice_reminders",)
    schema = (
        """CREATE TABLE {invoice_reminders} (
            invoice_id        TEXT PRIMARY KEY,
            due_date          TEXT NOT NULL,  -- ISO date
            state             TEXT NOT NULL,  -- draft | open (issued, unpaid) | closed
            issued_event      TEXT,           -- InvoiceIssued's id: what the commands answer
            reminder_position INTEGER,        -- the PaymentReminderSent the process caused
            overdue_position  INTEGER,        -- the InvoiceMarkedOverdue it caused
            closed_because    TEXT            -- paid | cancelled | why a command was refused
        )""",
        "CREATE INDEX {invoice_reminders}_due ON {invoice_reminders} (state, due_date)",
    )
    grace: ClassVar[dt.timedelta] = dt.timedelta(days=14)
    """How long after its due date an unpaid invoice is marked overdue."""
    per_tick: ClassVar[int] = 100
    """Invoices handled per tick, so that one tick never holds the runner up for long."""

    @handles("InvoiceCreated")
    def created(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        due = typed(event, InvoiceCreated).due_date
        db.execute(
            "INSERT INTO {invoice_reminders} (invoice_id, due_date, state) VALUES (?, ?, 'draft')",
            (invoice_id(event), due.isoformat()),
        )

    @handles("InvoiceIssued")
    def issued(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        db.execute(
            "UPDATE {invoice_reminders} SET state = 'open', issued_event = ? WHERE invoice_id = ?",
            (str(event.id), invoice_id(event)),
        )

    @handles("InvoicePaid", "InvoiceCancelled")
    def settled(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        because = "paid" if event.type == "InvoicePaid" else "cancelled"
        self._close(db, invoice_id(event), because)

    async def tick(self, db: Database, now: dt.datetime) -> None:
        """Remind about open invoices past due, and mark those ``grace`` past due overdue."""
        today = now.date()
        late = (today - self.grace).isoformat()
        due = await db.read(
            lambda c: rows(
                c.execute(
                    "SELECT invoice_id, due_date, issued_event, reminder_position,"
                    " overdue_position FROM invoice_reminders WHERE state = 'open' AND"
                    " ((reminder_position IS NULL AND due_date < ?)"
                    " OR (overdue_position IS NULL AND due_date <= ?))"
                    " ORDER BY due_date, invoice_id LIMIT ?",
                    (today.isoformat(), late, self.per_tick),
                ),
                Due,
            )
        )
        for invoice in due:
            cause = await self.bus.store.find_event(uuid.UUID(invoice.issued_event))
            if invoice.reminder_position is None:
                reminder = SendPaymentReminder(invoice.invoice_id, now)
                if not await self._send(db, reminder, invoice, "reminder", cause):
                    continue
            if invoice.overdue_position is None and invoice.due_date + self.grace <= today:
                overdue = MarkInvoiceOverdue(invoice.invoice_id, now)
                await self._send(db, overdue, invoice, "overdue", cause)

    async def _send(
        self, db: Database, command: object, invoice: Due, step: str, cause: RecordedEvent | None
    ) -> bool:
        """Send ``command`` once for this invoice and step and note the event it wrote;
        False if the invoice refused it (and the row is closed)."""
        try:
            result = await self.send_once(
                command, key=f"{invoice.invoice_id}:{step}", caused_by=cause
            )
        except InvoiceError as refused:
            reason = str(refused)
            await self._write(db, lambda t: self._close(t, invoice.invoice_id, reason))
            return False
        await self._write(
            db,
            lambda t: t.execute(
                f"UPDATE {{invoice_reminders}} SET {step}_position = ? WHERE invoice_id = ?",
                (result.position, invoice.invoice_id),
            ),
        )
        return True

    async def _write(self, db: Database, change: Callable[[ReadModelConnection], object]) -> None:
        """Change the live build's rows (the view readers see cannot be written)."""

        await write_live(db, self, change)

    @staticmethod
    def _close(db: ReadModelConnection, invoice: str, because: str) -> None:
        db.execute(
            "UPDATE {invoice_reminders} SET state = 'closed', closed_because = ?"
            " WHERE invoice_id = ? AND state != 'closed'",
            (because, invoice),
        )
