"""The invoice list and the customer balances after a scripted day of invoicing, read back
through the query functions while the runner follows the log live."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest
from examples.invoicing.commands import (
    AddInvoiceLine,
    CancelInvoice,
    CreateInvoice,
    IssueInvoice,
    PayInvoice,
)
from examples.invoicing.customer import RegisterCustomer
from examples.invoicing.read_models import (
    Balance,
    CustomerBalances,
    InvoiceList,
    customer_balances,
    find_invoice,
    invoices_of,
    open_invoices,
    projections_for,
)
from examples.invoicing.reminders import InvoiceReminders

import eskit
from eskit.projections import state as st
from tests.examples.read_side import DUE, START, Clock, ReadSide

LATER = dt.date(2024, 6, 15)


async def a_day_of_invoicing(side: ReadSide) -> None:
    """Ada pays one invoice and owes another; Grace owes one in EUR, cancelled one in USD
    and has a draft."""
    now = side.clock()
    await side.send(
        RegisterCustomer("ada", "Ada Lovelace", "ada@example.com"),
        RegisterCustomer("grace", "Grace Hopper", "grace@example.com"),
        CreateInvoice("inv-1", "ada", "EUR", DUE),
        AddInvoiceLine("inv-1", "book", 3000, "EUR"),
        AddInvoiceLine("inv-1", "pen", 250, "EUR"),
        IssueInvoice("inv-1", now),
        CreateInvoice("inv-2", "ada", "EUR", DUE),
        AddInvoiceLine("inv-2", "lamp", 4500, "EUR"),
        IssueInvoice("inv-2", now),
        CreateInvoice("inv-3", "grace", "EUR", LATER),
        AddInvoiceLine("inv-3", "desk", 25000, "EUR"),
        IssueInvoice("inv-3", now),
        CreateInvoice("inv-4", "grace", "USD", LATER),
        AddInvoiceLine("inv-4", "chair", 9000, "USD"),
        IssueInvoice("inv-4", now),
        CreateInvoice("inv-5", "grace", "EUR", LATER),
        AddInvoiceLine("inv-5", "ink", 900, "EUR"),
    )
    side.clock.set(START + dt.timedelta(days=2))
    await side.send(
        PayInvoice("inv-1", 3250, side.clock()),
        CancelInvoice("inv-4", "wrong currency", side.clock()),
    )


@pytest.mark.anyio
async def test_the_invoice_list_has_a_row_per_invoice_as_it_stands(read_side: ReadSide) -> None:
    await a_day_of_invoicing(read_side)

    rows = [*await invoices_of(read_side.db, "ada"), *await invoices_of(read_side.db, "grace")]

    assert [(r.invoice_id, r.customer_id, r.currency, r.status, r.total, r.paid) for r in rows] == [
        ("inv-1", "ada", "EUR", "paid", 3250, 3250),
        ("inv-2", "ada", "EUR", "issued", 4500, 0),
        ("inv-3", "grace", "EUR", "issued", 25000, 0),
        ("inv-4", "grace", "USD", "cancelled", 9000, 0),
        ("inv-5", "grace", "EUR", "draft", 900, 0),
    ]
    assert [r.due_date for r in rows] == [DUE, DUE, LATER, LATER, LATER]
    changed_last = {r.invoice_id: r.updated_at for r in rows}
    assert changed_last["inv-1"] == changed_last["inv-4"] == START + dt.timedelta(days=2)
    assert changed_last["inv-2"] == START


@pytest.mark.anyio
async def test_open_invoices_are_the_unpaid_issued_ones_longest_due_first(
    read_side: ReadSide,
) -> None:
    await a_day_of_invoicing(read_side)

    assert [r.invoice_id for r in await open_invoices(read_side.db)] == ["inv-2", "inv-3"]
    assert await find_invoice(read_side.db, "inv-404") is None


@pytest.mark.anyio
async def test_balances_count_invoices_and_add_up_what_is_owed_per_currency(
    read_side: ReadSide,
) -> None:
    await a_day_of_invoicing(read_side)

    assert await customer_balances(read_side.db) == [
        Balance("grace", "EUR", invoices=2, outstanding=25000),
        Balance("ada", "EUR", invoices=2, outstanding=4500),
        Balance("grace", "USD", invoices=1, outstanding=0),
    ]


@pytest.mark.anyio
async def test_an_invoice_stored_in_an_old_schema_is_listed_as_upcast(
    read_side: ReadSide,
) -> None:
    # InvoiceCreated v1 had no due date: due 30 days after `created_on`.
    old = eskit.NewEvent(
        "InvoiceCreated",
        {
            "invoice_id": "inv-old",
            "customer_id": "ada",
            "currency": "EUR",
            "created_on": "2023-01-10",
        },
        {"schema_version": 1},
    )
    await read_side.store.append("invoice-inv-old", [old])
    await read_side.caught_up()

    row = await find_invoice(read_side.db, "inv-old")

    assert row is not None
    assert (row.status, row.due_date) == ("draft", dt.date(2023, 2, 9))


@pytest.mark.anyio
@pytest.mark.parametrize("projection", [InvoiceList, CustomerBalances])
async def test_a_rebuild_gives_the_same_read_model(
    read_side: ReadSide, projection: type[InvoiceList | CustomerBalances]
) -> None:
    await a_day_of_invoicing(read_side)

    def digest(conn: sqlite3.Connection) -> tuple[str, int]:
        state = st.load(conn, projection.name)
        assert state is not None
        return st.digest(conn, projection.tables), state.generation

    before, generation = await read_side.db.read(digest)
    await read_side.runner.rebuild(projection.name)
    after, rebuilt = await read_side.db.read(digest)

    assert after == before
    assert rebuilt == generation + 1


@pytest.mark.anyio
async def test_the_cli_builds_every_projection_from_the_store_alone(
    store: eskit.EventStore, clock: Clock
) -> None:
    built = projections_for(store)

    assert [p.name for p in built] == [
        "invoice_list",
        "customer_balances",
        "invoice_search",
        "invoice_reminders",
    ]
    (reminders,) = [p for p in built if isinstance(p, InvoiceReminders)]
    assert reminders.bus.store is store
    assert reminders.clock() == clock()
