"""The invoicing read models as projection specs: given these events, then these rows and
these query answers, on SQLite and on PostgreSQL, from one projection class each."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from examples.invoicing.events import (
    InvoiceCancelled,
    InvoiceCreated,
    InvoiceIssued,
    InvoiceLineAdded,
    InvoicePaid,
    events,
)
from examples.invoicing.read_models import (
    Balance,
    CustomerBalances,
    InvoiceList,
    InvoiceRow,
    count_invoices,
    customer_balances,
    find_invoice,
    list_invoices,
    open_invoices,
)

from eskit.projections import Database, PostgresDatabase, SQLiteDatabase
from eskit.testing import ProjectionSpec
from tests import postgres, services

pytestmark = pytest.mark.anyio

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
DUE, LATER = dt.date(2024, 5, 31), dt.date(2024, 6, 15)
NOW = dt.datetime(2024, 5, 1, 9, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        opened: Database = SQLiteDatabase(tmp_path / "read.db")
    else:
        opened = PostgresDatabase(url=postgres.database_url(), schema=services.unique("spec"))
    yield opened
    await opened.close()


def at(seconds: int) -> dt.datetime:
    """When the spec's store recorded the events of its ``seconds``-th ``given``."""
    return START + dt.timedelta(seconds=seconds)


def a_day_of_invoicing(spec: ProjectionSpec) -> ProjectionSpec:
    """Ada pays inv-1 and owes inv-2; Grace cancelled inv-3 in USD and has a draft, inv-4."""
    return (
        spec.given(
            "invoice-inv-1",
            InvoiceCreated("inv-1", "ada", "EUR", DUE),
            InvoiceLineAdded("book", 3000),
            InvoiceLineAdded("pen", 250),
            InvoiceIssued(NOW, 3250),
        )
        .given(
            "invoice-inv-2",
            InvoiceCreated("inv-2", "ada", "EUR", DUE),
            InvoiceIssued(NOW, 4500),
        )
        .given("invoice-inv-1", InvoicePaid(3250, NOW))
        .given(
            "invoice-inv-3",
            InvoiceCreated("inv-3", "grace", "USD", LATER),
            InvoiceIssued(NOW, 9000),
            InvoiceCancelled("wrong currency", NOW),
        )
        .given("invoice-inv-4", InvoiceCreated("inv-4", "grace", "EUR", LATER))
    )


async def test_the_invoice_list_has_a_row_per_invoice(database: Database) -> None:
    async with ProjectionSpec(InvoiceList(), database, events=events) as spec:
        a_day_of_invoicing(spec)

        await spec.then_rows(
            "invoices",
            ("inv-1", "ada", "EUR", "2024-05-31", "paid", 3250, 3250, at(3).isoformat()),
            ("inv-2", "ada", "EUR", "2024-05-31", "issued", 4500, 0, at(2).isoformat()),
            ("inv-3", "grace", "USD", "2024-06-15", "cancelled", 9000, 0, at(4).isoformat()),
            ("inv-4", "grace", "EUR", "2024-06-15", "draft", 0, 0, at(5).isoformat()),
        )
        await spec.then_answer(open_invoices, [row("inv-2", "issued", 4500, 0, 2)])
        await spec.then_answer(find_invoice_404, None)
        await spec.then_answer(count_invoices, 4)
        assert [r.invoice_id for r in await list_invoices(database, 2)] == [
            "inv-1",
            "inv-2",
        ]


async def find_invoice_404(database: Database) -> InvoiceRow | None:
    return await find_invoice(database, "inv-404")


def row(invoice: str, status: str, total: int, paid: int, s: int) -> InvoiceRow:
    return InvoiceRow(invoice, "ada", "EUR", DUE, status, total, paid, at(s))


async def test_balances_add_up_what_is_owed_per_customer_and_currency(database: Database) -> None:
    async with ProjectionSpec(CustomerBalances(), database, events=events) as spec:
        a_day_of_invoicing(spec)

        await spec.then_answer(
            customer_balances,
            [
                Balance("ada", "EUR", invoices=2, outstanding=4500),
                Balance("grace", "EUR", invoices=1, outstanding=0),
                Balance("grace", "USD", invoices=1, outstanding=0),
            ],
        )
        await spec.then_rows(
            "customer_balance_invoices",
            {"invoice_id": "inv-1", "outstanding": 0},
            {"invoice_id": "inv-2", "outstanding": 4500},
            {"invoice_id": "inv-3", "outstanding": 0},
            {"invoice_id": "inv-4", "outstanding": 0},
            order_by="invoice_id",
        )
        spec.given("invoice-inv-4", InvoiceIssued(NOW, 700))  # more events, then more checks

        await spec.then_rows(
            "customer_balances",
            ("ada", "EUR", 2, 4500),
            ("grace", "EUR", 1, 700),
            ("grace", "USD", 1, 0),
        )
