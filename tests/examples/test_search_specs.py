"""The invoicing search index as projection specs, on SQLite (FTS5) and PostgreSQL
(``tsvector``): given these events, then these documents and these answers, from one
``SearchIndex`` class."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from unittest.mock import ANY

import pytest
from examples.invoicing.events import (
    CustomerRegistered,
    CustomerRenamed,
    InvoiceCancelled,
    InvoiceCreated,
    InvoiceIssued,
    InvoiceLineAdded,
    events,
)
from examples.invoicing.search import InvoiceSearch, search_invoices

from eskit.privacy import FORGOTTEN
from eskit.projections import Database, PostgresDatabase, SQLiteDatabase
from eskit.store.model import NewEvent
from eskit.testing import ProjectionSpec
from tests import postgres, services

pytestmark = pytest.mark.anyio

DUE = dt.date(2024, 5, 31)
NOW = dt.datetime(2024, 5, 1, 9, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        opened: Database = SQLiteDatabase(tmp_path / "read.db")
    else:
        opened = PostgresDatabase(url=postgres.database_url(), schema=services.unique("search"))
    yield opened
    await opened.close()


def invoices(spec: ProjectionSpec) -> ProjectionSpec:
    """Ada's two invoices; Grace's, with an ``ada-cable`` line; a cancelled one; Alan's,
    created before Alan registered."""
    return (
        spec.given("customer-ada", CustomerRegistered("ada", "Ada Lovelace", "ada@example.com"))
        .given("customer-grace", CustomerRegistered("grace", "Grace Hopper", "g@example.com"))
        .given(
            "invoice-inv-1",
            InvoiceCreated("inv-1", "ada", "EUR", DUE),
            InvoiceLineAdded("book", 3000),
            InvoiceLineAdded("pen", 250),
        )
        .given(
            "invoice-inv-2",
            InvoiceCreated("inv-2", "ada", "EUR", DUE),
            InvoiceLineAdded("lamp", 4500),
            InvoiceIssued(NOW, 4500),
        )
        .given(
            "invoice-inv-3",
            InvoiceCreated("inv-3", "grace", "EUR", DUE),
            InvoiceLineAdded("ada-cable", 1200),
            InvoiceLineAdded("compiler", 90000),
        )
        .given(
            "invoice-inv-4",
            InvoiceCreated("inv-4", "grace", "EUR", DUE),
            InvoiceLineAdded("lamp", 4500),
            InvoiceCancelled("ordered twice", NOW),
        )
        .given("invoice-inv-9", InvoiceCreated("inv-9", "alan", "GBP", DUE))
    )


def found(text: str, status: str | None = None) -> Callable[[Database], Awaitable[list[str]]]:
    async def query(database: Database) -> list[str]:
        return [h.invoice_id for h in await search_invoices(database, text, status=status)]

    query.__name__ = f"search {text!r}"
    return query


async def test_each_invoice_is_a_document_kept_current(database: Database) -> None:
    async with ProjectionSpec(InvoiceSearch(), database, events=events) as spec:
        invoices(spec)

        await spec.then_rows(
            "invoice_search",
            {"key": "inv-1", "customer": "Ada Lovelace", "lines": "book pen", "status": "draft"},
            {"key": "inv-2", "customer": "Ada Lovelace", "lines": "lamp", "status": "issued"},
            {
                "key": "inv-3",
                "customer": "Grace Hopper",
                "lines": "ada-cable compiler",
                "status": "draft",
            },
            {"key": "inv-4", "customer": "Grace Hopper", "lines": "lamp", "status": "cancelled"},
            {"key": "inv-9", "customer": "alan", "lines": "", "status": "draft"},
            order_by="key",
        )


async def test_ranked_every_word_matching_and_filtered(database: Database) -> None:
    async with ProjectionSpec(InvoiceSearch(), database, events=events) as spec:
        invoices(spec)

        ada = await spec.then_answer(found("ada"), [ANY, ANY, "inv-3"])
        assert sorted(ada[:2]) == ["inv-1", "inv-2"]  # a name outranks a word in a line
        await spec.then_answer(found("lamp"), ["inv-2", "inv-4"])
        await spec.then_answer(found("Lovelace LAMP"), ["inv-2"])
        await spec.then_answer(found("lamp hopper pen"), [])
        await spec.then_answer(found("lamp", status="cancelled"), ["inv-4"])
        await spec.then_answer(found("", status="issued"), ["inv-2"])
        await spec.then_answer(found("lamp OR pen"), [])  # operators are words to find
        await spec.then_answer(found('"a AND NEAR(book -lamp *'), [])


async def test_a_hit_highlights_the_match(database: Database) -> None:
    async with ProjectionSpec(InvoiceSearch(), database, events=events) as spec:
        invoices(spec)

        async def compiler(database: Database) -> tuple[str, str, bool, bool]:
            (hit,) = await search_invoices(database, "compiler")
            return hit.invoice_id, hit.customer, "«compiler»" in hit.snippet, hit.score > 0

        await spec.then_answer(compiler, ("inv-3", "Grace Hopper", True, True))


async def test_a_name_learnt_late_or_changed_reaches_the_documents(database: Database) -> None:
    async with ProjectionSpec(InvoiceSearch(), database, events=events) as spec:
        invoices(spec)
        await spec.then_answer(found("alan"), ["inv-9"])

        spec.given("customer-alan", CustomerRegistered("alan", "Alan Turing", "a@example.com"))
        spec.given("customer-alan", CustomerRenamed("A. M. Turing"))

        await spec.then_answer(found("turing"), ["inv-9"])
        await spec.then_answer(found("alan"), [])


async def test_a_forgotten_customer_leaves_the_index(database: Database) -> None:
    async with ProjectionSpec(InvoiceSearch(), database, events=events) as spec:
        invoices(spec)
        forgotten = {"subject": "ada", "key_ids": [], "by": "dpo"}

        spec.given("privacy-forgotten", NewEvent("SubjectForgotten", forgotten))

        await spec.then_answer(found("lovelace"), [])
        await spec.then_answer(found("ada"), ["inv-3"])  # Grace's ada-cable
        await spec.then_rows(
            "invoice_search",
            {"key": "inv-1", "customer": FORGOTTEN},
            {"key": "inv-2", "customer": FORGOTTEN},
            {"key": "inv-3", "customer": "Grace Hopper"},
            {"key": "inv-4", "customer": "Grace Hopper"},
            {"key": "inv-9", "customer": "alan"},
            order_by="key",
        )
        await spec.then_rows("invoice_search_customers", ("grace", "Grace Hopper"))
