"""Full-text search over invoices: ranking, highlights, names learnt late, and user text
that can never break the FTS5 query (SQLite; both backends: test_search_specs.py)."""

from __future__ import annotations

import pytest
from examples.invoicing.commands import (
    AddInvoiceLine,
    CancelInvoice,
    CreateInvoice,
    IssueInvoice,
)
from examples.invoicing.customer import ChangeCustomerName, RegisterCustomer
from examples.invoicing.search import InvoiceSearch, search_invoices

from eskit.projections.search import match_expression
from tests.examples.read_side import DUE, ReadSide


async def invoices(side: ReadSide) -> None:
    """Ada's two invoices; Grace's, with an ``ada-cable`` line; a cancelled one."""
    await side.send(
        RegisterCustomer("ada", "Ada Lovelace", "ada@example.com"),
        RegisterCustomer("grace", "Grace Hopper", "grace@example.com"),
        CreateInvoice("inv-1", "ada", "EUR", DUE),
        AddInvoiceLine("inv-1", "book", 3000, "EUR"),
        AddInvoiceLine("inv-1", "pen", 250, "EUR"),
        CreateInvoice("inv-2", "ada", "EUR", DUE),
        AddInvoiceLine("inv-2", "lamp", 4500, "EUR"),
        IssueInvoice("inv-2", side.clock()),
        CreateInvoice("inv-3", "grace", "EUR", DUE),
        AddInvoiceLine("inv-3", "ada-cable", 1200, "EUR"),
        AddInvoiceLine("inv-3", "compiler", 90000, "EUR"),
        CreateInvoice("inv-4", "grace", "EUR", DUE),
        AddInvoiceLine("inv-4", "lamp", 4500, "EUR"),
        CancelInvoice("inv-4", "ordered twice", side.clock()),
    )


async def found(side: ReadSide, text: str) -> list[str]:
    return [hit.invoice_id for hit in await search_invoices(side.db, text)]


@pytest.mark.anyio
async def test_a_customer_name_outranks_the_same_word_in_a_line(read_side: ReadSide) -> None:
    await invoices(read_side)

    hits = await found(read_side, "ada")

    assert (set(hits[:2]), hits[2:]) == ({"inv-1", "inv-2"}, ["inv-3"])


@pytest.mark.anyio
async def test_every_word_must_match(read_side: ReadSide) -> None:
    await invoices(read_side)

    assert await found(read_side, "lamp") == ["inv-2", "inv-4"]
    assert await found(read_side, "Lovelace LAMP") == ["inv-2"]
    assert await found(read_side, "lamp cancelled") == ["inv-4"]
    assert await found(read_side, "lamp hopper pen") == []


@pytest.mark.anyio
async def test_a_hit_shows_the_invoice_and_highlights_the_match(read_side: ReadSide) -> None:
    await invoices(read_side)

    (hit,) = await search_invoices(read_side.db, "compiler")

    assert (hit.invoice_id, hit.customer, hit.status) == ("inv-3", "Grace Hopper", "draft")
    assert hit.snippet == "ada-cable «compiler»"
    assert hit.score > 0  # the higher the better


@pytest.mark.anyio
async def test_a_customer_is_found_by_id_until_registered_then_by_name(
    read_side: ReadSide,
) -> None:
    await read_side.send(CreateInvoice("inv-9", "alan", "GBP", DUE))
    assert await found(read_side, "alan") == ["inv-9"]

    await read_side.send(RegisterCustomer("alan", "Alan Turing", "alan@example.com"))
    assert await found(read_side, "turing") == ["inv-9"]

    await read_side.send(ChangeCustomerName("alan", "A. M. Turing"))
    (hit,) = await search_invoices(read_side.db, "turing")
    assert hit.customer == "A. M. Turing"
    assert await found(read_side, "alan") == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    "text",
    ['"a AND', "book OR", "NEAR(book pen", "customer:ada", "*", "-lamp", '"', "a\x00b", "^ada"],
)
async def test_any_user_text_is_searched_as_words_never_as_syntax(
    read_side: ReadSide, text: str
) -> None:
    await invoices(read_side)

    hits = await search_invoices(read_side.db, text)  # no FTS5 syntax error

    assert all(hit.invoice_id.startswith("inv-") for hit in hits)


def test_words_are_quoted_and_quotes_doubled() -> None:
    assert match_expression(' ada  "lamp OR ') == '"ada" """lamp" "OR"'
    assert match_expression("  \t") == ""


@pytest.mark.anyio
async def test_operators_typed_by_users_are_words_to_find(read_side: ReadSide) -> None:
    await invoices(read_side)

    assert await found(read_side, "lamp OR pen") == []  # "or" is in no invoice
    assert await found(read_side, "(lamp") == ["inv-2", "inv-4"]  # the tokenizer drops "("
    assert await found(read_side, "   ") == []


@pytest.mark.anyio
async def test_search_reads_the_new_build_after_a_rebuild(read_side: ReadSide) -> None:
    await invoices(read_side)

    before = await search_invoices(read_side.db, "ada")

    await read_side.runner.rebuild(InvoiceSearch.name)

    assert await search_invoices(read_side.db, "ada") == before
