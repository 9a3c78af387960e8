"""The invoicing read models: SQL tables in the store's own file, built from the events.

- ``InvoiceList``: one row per invoice, for lists and dashboards.
- ``CustomerBalances``: per customer and currency, how many invoices and what is owed.

Queries are plain functions of a ``Database`` (``runner.database``); they read the logical
tables (views of the live build), so a rebuild never takes them away. ``InvoiceList``,
``CustomerBalances`` and the queries are portable SQL: they run unchanged on SQLite and
PostgreSQL, and so does the search index (``eskit.projections.search``). ``projections`` wires
every read model of the example, the search index and the reminder process included;
``projections_for`` does the same from a store alone, for the CLI
(``--app examples.invoicing.read_models:projections_for``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import msgspec

from eskit.application import CommandBus
from eskit.projections import Database, ReadModelConnection, SQLProjection, handles
from eskit.store import EventStore
from eskit.store.model import RecordedEvent
from examples.invoicing.app import invoicing
from examples.invoicing.events import InvoiceCreated, InvoiceIssued, InvoiceLineAdded, InvoicePaid
from examples.invoicing.reading import invoice_id, rows, typed
from examples.invoicing.reminders import InvoiceReminders
from examples.invoicing.search import InvoiceSearch

OPEN = ("issued", "overdue")
"""The statuses of an invoice the customer still has to pay."""


class InvoiceList(SQLProjection):
    """One row per invoice: who, how much, due when, and where it stands."""

    name = "invoice_list"
    tables = ("invoices",)
    schema = (
        """CREATE TABLE {invoices} (
            invoice_id  TEXT PRIMARY KEY,
            customer_id TEXT    NOT NULL,
            currency    TEXT    NOT NULL,
            due_date    TEXT    NOT NULL,  -- ISO date
            status      TEXT    NOT NULL,  -- draft | issued | overdue | paid | cancelled
            total       BIGINT  NOT NULL,  -- minor units (cents)
            paid        BIGINT  NOT NULL,
            updated_at  TEXT    NOT NULL   -- when its last event was recorded (ISO, UTC)
        )""",
        "CREATE INDEX {invoices}_by_status ON {invoices} (status, due_date)",
        "CREATE INDEX {invoices}_by_customer ON {invoices} (customer_id)",
    )

    @handles("InvoiceCreated")
    def created(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        created = typed(event, InvoiceCreated)
        db.execute(
            "INSERT INTO {invoices} VALUES (?, ?, ?, ?, 'draft', 0, 0, ?)",
            (
                invoice_id(event),
                created.customer_id,
                created.currency,
                created.due_date.isoformat(),
                event.recorded_at.isoformat(),
            ),
        )

    @handles("InvoiceLineAdded")
    def line_added(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        self._set(db, event, "total = total + ?", typed(event, InvoiceLineAdded).amount)

    @handles("InvoiceIssued")
    def issued(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        self._set(db, event, "status = 'issued', total = ?", typed(event, InvoiceIssued).total)

    @handles("InvoicePaid")
    def paid(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        self._set(db, event, "status = 'paid', paid = paid + ?", typed(event, InvoicePaid).amount)

    @handles("InvoiceCancelled")
    def cancelled(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        self._set(db, event, "status = 'cancelled'")

    @handles("InvoiceMarkedOverdue")
    def overdue(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        self._set(db, event, "status = 'overdue'")

    @staticmethod
    def _set(db: ReadModelConnection, event: RecordedEvent, changes: str, *values: object) -> None:
        db.execute(
            f"UPDATE {{invoices}} SET {changes}, updated_at = ? WHERE invoice_id = ?",
            (*values, event.recorded_at.isoformat(), invoice_id(event)),
        )


class CustomerBalances(SQLProjection):
    """Per customer and currency: invoices created, and the issued ones' unpaid total."""

    name = "customer_balances"
    tables = ("customer_balances", "customer_balance_invoices")
    schema = (
        """CREATE TABLE {customer_balances} (
            customer_id TEXT    NOT NULL,
            currency    TEXT    NOT NULL,  -- amounts in different currencies never add up
            invoices    BIGINT  NOT NULL,  -- created for this customer, in this currency
            outstanding BIGINT  NOT NULL,  -- issued, not yet paid nor cancelled (cents)
            PRIMARY KEY (customer_id, currency)
        )""",
        """CREATE TABLE {customer_balance_invoices} (
            invoice_id  TEXT PRIMARY KEY,
            customer_id TEXT    NOT NULL,
            currency    TEXT    NOT NULL,
            outstanding BIGINT  NOT NULL   -- what this invoice adds to its customer's
        )""",
    )

    @handles("InvoiceCreated")
    def created(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        created = typed(event, InvoiceCreated)
        db.execute(
            "INSERT INTO {customer_balance_invoices} VALUES (?, ?, ?, 0)",
            (invoice_id(event), created.customer_id, created.currency),
        )
        db.execute(
            "INSERT INTO {customer_balances} VALUES (?, ?, 1, 0)"
            " ON CONFLICT (customer_id, currency)"
            " DO UPDATE SET invoices = {customer_balances}.invoices + 1",
            (created.customer_id, created.currency),
        )

    @handles("InvoiceIssued")
    def issued(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        self._owe(db, event, typed(event, InvoiceIssued).total)

    @handles("InvoicePaid", "InvoiceCancelled")
    def settled(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        self._owe(db, event, 0)

    @staticmethod
    def _owe(db: ReadModelConnection, event: RecordedEvent, amount: int) -> None:
        """Set what the event's invoice adds to its customer's outstanding amount."""
        invoice = invoice_id(event)
        customer, currency, before = db.execute(
            "SELECT customer_id, currency, outstanding FROM {customer_balance_invoices}"
            " WHERE invoice_id = ?",
            (invoice,),
        ).fetchone()
        db.execute(
            "UPDATE {customer_balance_invoices} SET outstanding = ? WHERE invoice_id = ?",
            (amount, invoice),
        )
        db.execute(
            "UPDATE {customer_balances} SET outstanding = outstanding + ?"
            " WHERE customer_id = ? AND currency = ?",
            (amount - before, customer, currency),
        )


# -- queries ----------------------------------------------------------------------------------


class InvoiceRow(msgspec.Struct, frozen=True):
    invoice_id: str
    customer_id: str
    currency: str
    due_date: dt.date
    status: str
    total: int
    paid: int
    updated_at: dt.datetime


class Balance(msgspec.Struct, frozen=True):
    customer_id: str
    currency: str
    invoices: int
    outstanding: int


async def list_invoices(db: Database, limit: int = 50) -> list[InvoiceRow]:
    """Invoices by due date, then id (a page of the list a clerk scrolls)."""
    return await _invoices(db, "TRUE ORDER BY due_date, invoice_id LIMIT ?", (limit,))


async def open_invoices(db: Database) -> list[InvoiceRow]:
    """Issued or overdue invoices, the longest due first."""
    return await _invoices(db, "status IN (?, ?) ORDER BY due_date, invoice_id", OPEN)


async def overdue_invoices(db: Database) -> list[InvoiceRow]:
    """Invoices marked overdue, the longest due first."""
    return await _invoices(db, "status = 'overdue' ORDER BY due_date, invoice_id")


async def invoices_of(db: Database, customer_id: str) -> list[InvoiceRow]:
    """A customer's invoices, by id."""
    return await _invoices(db, "customer_id = ? ORDER BY invoice_id", (customer_id,))


async def find_invoice(db: Database, invoice: str) -> InvoiceRow | None:
    found = await _invoices(db, "invoice_id = ?", (invoice,))
    return found[0] if found else None


async def count_invoices(db: Database) -> int:
    count: int = await db.read(lambda c: c.execute("SELECT count(*) FROM invoices").fetchone()[0])
    return int(count)


async def customer_balances(db: Database) -> list[Balance]:
    """Every customer's balance per currency, the largest amount owed first."""
    return await db.read(
        lambda c: rows(
            c.execute(
                "SELECT * FROM customer_balances ORDER BY outstanding DESC, customer_id, currency"
            ),
            Balance,
        )
    )


async def _invoices(db: Database, where: str, values: tuple[object, ...] = ()) -> list[InvoiceRow]:
    query = f"SELECT * FROM invoices WHERE {where}"  # `?` works on PostgreSQL too:
    return await db.read(lambda c: rows(ReadModelConnection(c).execute(query, values), InvoiceRow))


# -- wiring -----------------------------------------------------------------------------------


def projections(
    store: EventStore, bus: CommandBus, clock: Callable[[], dt.datetime] | None = None
) -> list[SQLProjection]:
    """Every read model of the example, and the reminder process sending through ``bus``
    on ``clock``'s time (default: the store's clock, so tests and demos set one)."""
    return [
        InvoiceList(),
        CustomerBalances(),
        InvoiceSearch(),
        InvoiceReminders(bus, clock or store.clock),
    ]


def projections_for(store: EventStore) -> list[SQLProjection]:
    """``projections`` from a store alone (the CLI's ``--app``): builds the command bus."""
    return projections(store, invoicing(store))
