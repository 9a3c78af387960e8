"""What each admin page shows, over the invoicing example's real events: streams by
category and by event type, a stream's events, the trace of a correlation id, an aggregate
at any version or moment, and the audit of who did what."""

from __future__ import annotations

import datetime as dt
import html
import re

import msgspec
import pytest

import eskit
from tests.web.admin.client import PAGE, Admin, text

pytestmark = pytest.mark.anyio


@pytest.fixture
async def seeded(admin: Admin) -> Admin:
    """Two invoices and a customer, sent through the API by two tokens; logged in."""
    await admin.invoice("1", 100, 250)
    await admin.invoice("2")
    customer = {"customer_id": "c-1", "name": "Ada", "email": "ada@example.com"}
    response = await admin.command("RegisterCustomer", customer, token="writer")
    assert response.status_code == 200, response.text
    await admin.login()
    return admin


async def test_streams_are_listed_and_paged(seeded: Admin) -> None:
    shown = text(await seeded.page("/admin/streams"))
    for stream in ("customer-c-1", "email-ada@example.com", "invoice-1", "invoice-2"):
        assert stream in shown
    first = await seeded.page("/admin/streams", limit=2)
    assert "invoice-1" not in text(first)
    following = re.search(r'href="(/admin/streams\?[^"]*after=[^"]*)"', first)
    assert following is not None
    second = await seeded.page(html.unescape(following[1]))
    assert "invoice-1" in text(second)
    assert "customer-c-1" not in text(second)
    assert 'href="/admin/streams?limit=2">first streams<' in second
    assert "first streams" not in text(first)


async def test_streams_are_searched_by_category_and_event_type(seeded: Admin) -> None:
    invoices = text(await seeded.page("/admin/streams", category="invoice"))
    assert "invoice-1" in invoices
    assert "customer-c-1" not in invoices
    with_lines = text(await seeded.page("/admin/streams", type="InvoiceLineAdded"))
    assert "streams with InvoiceLineAdded events" in with_lines
    assert "invoice-1 2 " in with_lines  # two lines, in invoice-1 only
    assert "invoice-2" not in with_lines
    none = text(await seeded.page("/admin/streams", type="InvoiceLineAdded", category="customer"))
    assert "none found" in none


async def test_a_stream_shows_its_events_with_metadata_and_pretty_json(seeded: Admin) -> None:
    page = await seeded.page("/admin/stream", name="invoice-1")
    shown = text(page)
    assert shown.index("v2") < shown.index("v1") < shown.index("v0")  # newest first
    assert '"sku": "sku-1",\n  "amount": 250' in html.unescape(page)  # indented JSON
    assert '"user": "admin"' in shown
    assert '"command": "AddInvoiceLine"' in shown
    assert "/admin/aggregates?kind=invoice&amp;id=1&amp;version=0" in page
    paged = text(await seeded.page("/admin/stream", name="invoice-1", limit=1, backwards="false"))
    assert "InvoiceCreated" in paged
    assert "InvoiceLineAdded" not in paged
    assert "newer events" in paged
    empty = text(await seeded.page("/admin/stream", name="invoice-404"))
    assert "has no events" in empty


async def test_bad_input_gets_an_html_error_page(seeded: Admin) -> None:
    await seeded.store.tombstone_stream("invoice-2")
    cases: list[tuple[str, dict[str, str | int], int, str]] = [
        ("/admin/stream", {"name": "invoice-2"}, 410, "deleted"),
        ("/admin/stream", {"name": "bad\x01name"}, 422, "stream name"),
        ("/admin/stream", {"name": "x", "limit": 0}, 422, "limit"),
        ("/admin/aggregates", {"kind": "ship", "id": "1"}, 404, "no aggregate kind 'ship'"),
        ("/admin/aggregates", {"kind": "invoice", "id": "9"}, 404, "invoice-9"),
        ("/admin/aggregates", {"kind": "invoice", "id": "1", "at": "soon"}, 422, "at:"),
    ]
    for path, params, status, message in cases:
        response = await seeded.http.get(path, params=params)
        assert response.status_code == status, (params, response.text)
        assert response.headers["content-type"].startswith("text/html")
        assert message in text(response.text), (params, response.text)


async def test_the_trace_of_a_correlation_id_is_a_tree(seeded: Admin) -> None:
    sent = await seeded.command(
        "CreateInvoice",
        {"invoice_id": "3", "customer_id": "c-1", "currency": "EUR", "due_date": "2024-06-01"},
        **{"Correlation-Id": "order-77"},
    )
    command_id = sent.json()["command_id"]
    page = await seeded.page("/admin/trace", correlation_id="order-77")
    shown = text(page)
    assert "correlation order-77 · 1 event" in shown
    assert f"CreateInvoice command {command_id}" in shown
    assert re.search(r"<li><span><strong[^>]*>CreateInvoice</strong>.*<ul><li>", page)
    assert "invoice-3 v0" in shown
    assert "no events with correlation id 'nope'" in text(
        await seeded.page("/admin/trace", correlation_id="nope")
    )


async def test_an_aggregate_is_shown_at_any_version(seeded: Admin) -> None:
    now = text(await seeded.page("/admin/aggregates", kind="invoice", id="1"))
    assert "invoice-1 at version 2 of 2" in now
    assert '"total": 350' in now
    first = text(await seeded.page("/admin/aggregates", kind="invoice", id="1", version=0))
    assert "at version 0 of 2" in first
    assert '"status": "draft"' in first
    assert '"total": 0' in first
    customer = text(await seeded.page("/admin/aggregates", kind="customer", id="c-1"))
    assert '"name": "Ada"' in customer  # a decider's state (a Struct)


async def test_an_aggregate_is_shown_as_it_was_at_a_moment(seeded: Admin) -> None:
    events = [e async for e in seeded.store.read_stream("invoice-1")]
    moment = events[1].recorded_at.astimezone(dt.UTC).replace(tzinfo=None)
    at = text(await seeded.page("/admin/aggregates", kind="invoice", id="1", at=moment.isoformat()))
    assert "at version 1 of 2" in at
    assert '"total": 100' in at


async def test_the_audit_lists_who_did_what_newest_first(seeded: Admin) -> None:
    page = await seeded.page("/admin/audit")
    assert audited(page) == [
        ("writer", "RegisterCustomer"),
        ("admin", "CreateInvoice"),
        ("admin", "AddInvoiceLine"),
        ("admin", "AddInvoiceLine"),
        ("admin", "CreateInvoice"),
    ]
    assert "customer-c-1" in page
    assert "email-ada@example.com" in page  # both streams of the one command
    mine = await seeded.page("/admin/audit", user="writer")
    assert audited(mine) == [("writer", "RegisterCustomer")]
    lines = await seeded.page("/admin/audit", command="AddInvoiceLine")
    assert audited(lines) == [("admin", "AddInvoiceLine")] * 2


def audited(page: str) -> list[tuple[str, str]]:
    """The (user, command) rows of an audit page."""
    return re.findall(r'<span class="user">([^<]*)</span></td><td><strong>(\w+)</strong>', page)


async def test_the_audit_is_paged_newest_first(
    seeded: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of ``limit`` commands, each linking to the older ones and back to the newest,
    the filter kept; a command is never split or shown twice (windows of 2 positions here,
    so a page is read in several)."""
    from eskit.web.admin import audit

    monkeypatch.setattr(audit, "WINDOW", 2)
    pages, path = [], "/admin/audit?limit=2"
    while path:
        page = await seeded.page(path)
        pages.append(audited(page))
        older = re.search(r'href="([^"]*)">older commands<', page)
        path = html.unescape(older[1]) if older else ""
        assert len(pages) < 10
        if len(pages) > 1:
            assert re.search(r'href="/admin/audit\?limit=2">newest commands<', page)
    assert pages == [
        [("writer", "RegisterCustomer"), ("admin", "CreateInvoice")],
        [("admin", "AddInvoiceLine"), ("admin", "AddInvoiceLine")],
        [("admin", "CreateInvoice")],
    ]
    filtered = await seeded.page("/admin/audit", user="admin", limit=1)
    assert audited(filtered) == [("admin", "CreateInvoice")]
    assert "user=admin" in html.unescape(re.findall(r'href="([^"]*)">older', filtered)[0])


async def test_an_audit_page_reads_a_bounded_part_of_the_log(
    seeded: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filter that matches nothing reads ``SCAN`` windows per page, then offers to go on."""
    from eskit.web.admin import audit

    monkeypatch.setattr(audit, "WINDOW", 2)
    monkeypatch.setattr(audit, "SCAN", 2)
    head = await seeded.store.last_position()
    page = await seeded.page("/admin/audit", user="nobody")
    assert "no commands here" in text(page)
    assert f"positions {head - 3} to {head} of the log" in text(page)
    assert f"/admin/audit?before={head - 4}&amp;user=nobody" in page


async def test_the_live_tail_page_points_at_the_feed(seeded: Admin) -> None:
    page = await seeded.page("/admin/live", category="invoice")
    assert 'data-feed="/admin/live/feed?after=0&amp;category=invoice"' in page
    assert 'id="tail-status"' in page


async def test_an_event_the_aggregate_cannot_decode_is_shown_inside_the_page(
    seeded: Admin,
) -> None:
    """An event written behind the API's back (here straight to the store) that its class
    cannot decode: time travel names it and says why, on its normal page."""
    await seeded.store.append("invoice-1", [eskit.NewEvent("InvoiceLineAdded", {"sku": "x"})])
    await seeded.store.append("invoice-1", [eskit.NewEvent("Mystery", {})])
    response = await seeded.http.get(
        "/admin/aggregates", params={"kind": "invoice", "id": "1"}, headers=PAGE
    )
    assert response.status_code == 200, response.text
    shown = text(response.text)
    assert "invoice-1 cannot be loaded" in shown
    assert "Event v3 (InvoiceLineAdded, position" in shown
    assert "missing required field `amount`" in shown
    assert 'class="error" data-failed-version="3"' in response.text
    assert "v4" in shown  # the events around it are listed, each a link to its version
    before = text(await seeded.page("/admin/aggregates", kind="invoice", id="1", version=2))
    assert "at version 2 of 4" in before  # the versions before it still load
    unknown = await seeded.store.append("invoice-2", [eskit.NewEvent("Mystery", {})])
    page = text(await seeded.page("/admin/aggregates", kind="invoice", id="2"))
    assert f"Event v1 (Mystery, position {unknown.last_position})" in page
    assert "UnknownEventType: event type 'Mystery' is not registered" in page


def test_time_travel_names_other_errors_by_their_class_only() -> None:
    """An apply handler's own error may quote decrypted data: only its class is shown."""
    from eskit.web.admin.aggregates import _why

    assert _why(KeyError("Ada Lovelace")).startswith("KeyError (the message is not shown")
    assert "Ada" not in _why(KeyError("Ada Lovelace"))
    decoding = msgspec.ValidationError("Object missing required field `amount`")
    assert _why(decoding) == "ValidationError: Object missing required field `amount`"


async def test_a_stream_shows_payloads_kept_as_bytes_readably(seeded: Admin) -> None:
    quickstart = eskit.RawData("application/json", b"I wrote my first event")
    binary = eskit.RawData("application/octet-stream", b"\x00\xff")
    await seeded.store.append(
        "blob-1", [eskit.NewEvent("A", quickstart), eskit.NewEvent("B", {"n": 1}, binary)]
    )
    shown = text(await seeded.page("/admin/stream", name="blob-1"))
    assert "data (application/json)" in shown
    assert "I wrote my first event (22 bytes)" in shown
    assert "metadata (bytes)" in shown
    assert "base64:AP8= (2 bytes)" in shown
