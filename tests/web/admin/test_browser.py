"""The admin UI in a real headless Chromium against a real ``eskit serve``: login is
required, every page loads (a screenshot of each is kept), the dashboard draws its charts
and they follow new events, a stuck projection shows at its top and is skipped from there,
the audit is paged, the event catalog opens a schema, an error page leads back, the live
tail shows a command sent meanwhile, a rebuild started from the projections page finishes,
a stuck projection is skipped from the page, parked events are replayed from a consumer
group's page, and an XSS payload in event data is shown as text."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.web.admin import browser as browser_module
from tests.web.admin.browser import Served, artifacts, chromium, serve

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

TIMEOUT_MS = 10_000
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from chromium()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from serve(tmp_path_factory.mktemp("admin-ui"), "tests.web.admin.app:app_spec")


@pytest.fixture
def page(browser: Browser, server: Served) -> Iterator[Page]:
    """A browser tab logged in as the admin; fails the test on a script error or a dialog
    (an injected ``alert`` would open one)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    tab.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
    log_in(tab, server, "admin")
    yield tab
    context.close()
    assert problems == []


def log_in(tab: Page, server: Served, name: str) -> None:
    tab.goto(f"{server.url}/admin/")
    tab.fill("input[name=token]", server.tokens[name])
    tab.click("button:has-text('Log in')")


def shot(tab: Page, name: str, *, full_page: bool = True) -> None:
    """Keep a screenshot of the whole page (else of what the window shows) as a test
    artifact."""
    path = artifacts() / f"{name}.png"
    tab.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size > 0


def invoice(server: Served, *amounts: int) -> str:
    """A new invoice with lines of ``amounts``; its id."""
    invoice_id = uuid.uuid4().hex[:8]
    body = {"invoice_id": invoice_id, "customer_id": "c-1", "currency": "EUR"}
    server.command("CreateInvoice", {**body, "due_date": "2026-12-31"})
    for amount in amounts:
        line = {"invoice_id": invoice_id, "sku": "consulting", "amount": amount, "currency": "EUR"}
        server.command("AddInvoiceLine", line)
    return invoice_id


def row(projection: str) -> str:
    """The dashboard's row of ``projection``."""
    return f"tr[data-projection={projection}]"


def test_login_is_required_and_needs_an_admin_token(browser: Browser, server: Served) -> None:
    from playwright.sync_api import expect

    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    tab.goto(f"{server.url}/admin/projections")
    expect(tab).to_have_url(re.compile(r"/admin/login\?next=%2Fadmin%2Fprojections$"))
    shot(tab, "login")
    tab.fill("input[name=token]", server.tokens["reader"])
    tab.click("button:has-text('Log in')")
    expect(tab.locator("p.error")).to_contain_text("has no admin scope")
    tab.fill("input[name=token]", server.tokens["admin"])
    tab.click("button:has-text('Log in')")
    expect(tab).to_have_url(f"{server.url}/admin/projections")
    expect(tab.locator("h1")).to_have_text("Projections")
    tab.click("header button:has-text('Log out')")
    expect(tab).to_have_url(re.compile(r"/admin/login"))
    context.close()


def test_every_page_loads(page: Page, server: Served) -> None:
    from playwright.sync_api import expect

    invoice_id = invoice(server, 1200, 300)
    traced = server.command(
        "IssueInvoice",
        {"invoice_id": invoice_id, "now": "2026-12-01T09:00:00Z"},
        **{"Correlation-Id": f"order-{invoice_id}"},
    )
    stream = f"invoice-{invoice_id}"
    pages = [
        ("streams", "/admin/streams", "Streams", stream),
        ("streams-by-type", "/admin/streams?type=InvoiceIssued", "Streams", stream),
        ("stream", f"/admin/stream?name={stream}", stream, "InvoiceIssued"),
        ("live", "/admin/live", "Live tail", "connected"),
        ("projections", "/admin/projections", "Projections", "invoice_list"),
        ("dashboard-page", "/admin/dashboard", "Dashboard", "Biggest streams"),
        ("trace", f"/admin/trace?correlation_id=order-{invoice_id}", "Trace", "IssueInvoice"),
        ("time-travel", f"/admin/aggregates?kind=invoice&id={invoice_id}&version=1",
         "Time travel", '"total": 1200'),
        ("audit", "/admin/audit", "Audit", traced["command_id"]),
        ("subscriptions", "/admin/subscriptions", "Subscriptions", "consumer group"),
    ]  # fmt: skip
    for name, path, title, shown in pages:
        page.goto(server.url + path)
        expect(page.locator("h1")).to_have_text(title)
        expect(page.locator("main")).to_contain_text(shown)
        shot(page, name)


def drawn_pixels(tab: Page, chart: str) -> int:
    """The pixels the chart's canvas has painted (not transparent)."""
    count: int = tab.evaluate(
        """(id) => {
            const canvas = document.querySelector("#" + id + " canvas");
            const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
            let painted = 0;
            for (let i = 3; i < pixels.data.length; i += 4) if (pixels.data[i] > 0) painted++;
            return painted;
        }""",
        chart,
    )
    return count


def test_the_dashboard_draws_live_charts(page: Page, server: Served) -> None:
    from playwright.sync_api import expect

    refused: list[str] = []  # the CSP would say so on the console
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    for _ in range(3):
        invoice(server, 100)
    page.goto(f"{server.url}/admin/dashboard")
    expect(page.locator("h1")).to_have_text("Dashboard")
    throughput, lag, total = page.locator("#throughput"), page.locator("#lag"), "#throughput-total"
    expect(throughput.locator("canvas")).to_have_count(1)
    expect(throughput).to_have_attribute("data-drawn", re.compile(r"^[1-9]"))
    expect(page.locator(total)).to_have_text(re.compile(r"^\d+$"))
    before = int(page.locator(total).inner_text())
    assert before >= 6  # the three invoices above (two events each), at least
    invoice(server, 200, 300)  # three events more: the chart follows without a reload
    expect(page.locator(total)).to_have_text(str(before + 3))
    expect(lag.locator("canvas")).to_have_count(1)
    expect(lag.locator(".u-legend")).to_contain_text("invoice_list")
    lag_points = re.compile(r"^(1\d|[2-9]\d|\d{3,})$")  # two samples of five projections
    expect(lag).to_have_attribute("data-points", lag_points)
    assert drawn_pixels(page, "throughput") > 100
    assert drawn_pixels(page, "lag") > 100
    expect(page.locator("table.biggest-streams")).to_contain_text("invoice-")
    expect(page.locator("#attention p.ok")).to_contain_text("projections are running")
    assert refused == []
    shot(page, "dashboard")


def test_a_stuck_projection_shows_at_the_top_of_the_dashboard(page: Page, server: Served) -> None:
    from playwright.sync_api import expect

    page.goto(f"{server.url}/admin/dashboard")
    server.append(f"lab-{uuid.uuid4().hex[:8]}", "Poison", {"dose": 2})
    problem = page.locator("#attention li[data-projection=fragile]")  # refreshed in place
    expect(problem).to_contain_text("RuntimeError: cannot digest poison")
    drawn = int(page.locator("#lag").get_attribute("data-drawn") or 0)  # the chart then
    page.wait_for_function(
        "n => Number(document.getElementById('lag').dataset.drawn) > n", arg=drawn
    )
    shot(page, "dashboard-stuck")
    problem.locator("a:has-text('Skip')").click()
    page.fill("input[name=reason]", "poison from the lab, ticket 13")
    page.click("button:has-text('Skip the event')")
    page.goto(f"{server.url}/admin/dashboard")
    expect(page.locator("#attention p.ok")).to_contain_text("projections are running")


def test_the_audit_is_paged(page: Page, server: Served) -> None:
    from playwright.sync_api import expect

    for _ in range(4):
        invoice(server)
    page.goto(f"{server.url}/admin/audit?limit=3")
    rows = page.locator("table.audit tbody tr")
    expect(rows).to_have_count(3)
    newest = rows.first.locator("code").inner_text()
    page.click("a:has-text('older commands')")
    expect(page).to_have_url(re.compile(r"/admin/audit\?before=\d+&limit=3$"))
    expect(rows).to_have_count(3)
    expect(page.locator("table.audit")).not_to_contain_text(newest)
    expect(page.locator("nav.pager")).to_contain_text("newest commands")
    shot(page, "audit-paged")


def test_the_event_catalog_shows_a_schema_when_opened(page: Page, server: Served) -> None:
    from playwright.sync_api import expect

    refused: list[str] = []  # the CSP would say so on the console
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    page.goto(f"{server.url}/admin/dashboard")
    page.click("header nav a:has-text('Catalog')")
    expect(page).to_have_url(f"{server.url}/admin/catalog")
    expect(page.locator("h1")).to_have_text("Event catalog")
    page.click("table.catalog a:has-text('InvoiceCreated')")
    expect(page).to_have_url(f"{server.url}/admin/catalog#type-InvoiceCreated")
    created = page.locator("section[data-type=InvoiceCreated]")
    expect(created.locator("tr[data-version='1']")).to_contain_text("_invoice_created_v1")
    current = created.locator("tr[data-version='2']")
    schema = current.locator("pre.json")
    expect(schema).to_be_hidden()  # collapsed until opened
    current.locator("summary").click()
    expect(schema).to_be_visible()
    expect(schema).to_contain_text('"due_date"')
    assert refused == []
    shot(page, "catalog")
    created.scroll_into_view_if_needed()
    shot(page, "catalog-schema", full_page=False)  # the picture in docs/admin.md


def test_an_error_page_leads_back(page: Page, server: Served) -> None:
    from playwright.sync_api import expect

    came_from = f"{server.url}/admin/streams?category=invoice"
    page.goto(f"{server.url}/admin/aggregates?kind=ship&id=1", referer=came_from)
    expect(page.locator("h1")).to_have_text("Error 404")
    expect(page.locator("p.error")).to_have_text("no aggregate kind 'ship'")
    expect(page.locator("header nav")).to_contain_text("Dashboard")  # inside the layout
    shot(page, "error")
    page.click("a:has-text('Back to the previous page')")
    expect(page).to_have_url(came_from)
    expect(page.locator("h1")).to_have_text("Streams")


def test_the_live_tail_shows_a_command_sent_meanwhile(page: Page, server: Served) -> None:
    from playwright.sync_api import expect

    page.goto(f"{server.url}/admin/live")
    expect(page.locator("#tail-status")).to_have_text("connected")
    invoice_id = invoice(server)
    arrived = page.locator("#tail tbody tr", has_text=f"invoice-{invoice_id} v0")
    expect(arrived).to_contain_text("InvoiceCreated")
    expect(arrived).to_contain_text("admin")  # who sent it
    shot(page, "live-tail")


def test_a_rebuild_started_from_the_page_finishes(page: Page, server: Served) -> None:
    from playwright.sync_api import expect

    for _ in range(5):
        invoice(server, 100)
    page.goto(f"{server.url}/admin/projections")
    invoices = page.locator(row("invoice_list"))
    invoices.locator("button:has-text('Rebuild')").click()
    expect(page).to_have_url(f"{server.url}/admin/projections")
    expect(invoices).to_contain_text("rebuilt at")  # the table refreshes itself
    expect(invoices).to_have_attribute("data-status", "running")
    expect(invoices).to_have_attribute("data-lag", "0")
    shot(page, "projections-rebuilt")


def test_a_stuck_projection_is_skipped_from_the_page(page: Page, server: Served) -> None:
    from playwright.sync_api import expect

    server.append(f"lab-{uuid.uuid4().hex[:8]}", "Poison", {"dose": 1})
    page.goto(f"{server.url}/admin/projections")
    fragile = page.locator(row("fragile"))
    expect(fragile).to_have_attribute("data-status", "stuck")
    expect(fragile).to_contain_text("RuntimeError: cannot digest poison")
    shot(page, "projections-stuck")
    fragile.locator("a:has-text('Skip')").click()
    expect(page.locator("main")).to_contain_text("is stuck at position")
    page.fill("input[name=reason]", "poison from the lab, ticket 12")
    shot(page, "skip")
    page.click("button:has-text('Skip the event')")
    expect(page).to_have_url(f"{server.url}/admin/projections")
    expect(fragile).to_have_attribute("data-status", "running")
    expect(fragile).to_have_attribute("data-lag", "0")


def test_parked_events_are_replayed_from_the_page(page: Page, server: Served) -> None:
    from playwright.sync_api import expect

    import eskit.sync
    from eskit.subscriptions import Source

    stream, name = f"note-{uuid.uuid4().hex[:8]}", f"mail-{uuid.uuid4().hex[:6]}"
    server.append(stream, "MailDue", {"to": "ann"})
    with eskit.sync.open_store(f"sqlite:///{server.log.parent}/events.db") as store:
        groups = eskit.sync.Groups(store)
        groups.create(name, Source.stream(stream))
        consumer = groups.consumer(name, "mailer")
        consumer.nack(consumer.fetch(), "park", "mailbox full")
    page.goto(f"{server.url}/admin/dashboard")
    parked = page.locator(f"li[data-group={name}]")
    expect(parked).to_contain_text("has 1 parked events")
    parked.locator("a").click()
    expect(page.locator("h1")).to_have_text(f"Group {name}")
    expect(page.locator("table.parked")).to_contain_text("mailbox full")
    shot(page, "group-parked")
    page.click("button:has-text('Replay parked events')")
    expect(page.locator("dd.parked")).to_have_text("0")
    expect(page.locator("dd.waiting")).to_have_text("1")
    expect(page.locator("td.by")).to_contain_text("admin (admin UI)")


def test_an_xss_payload_in_event_data_is_shown_as_text(page: Page, server: Served) -> None:
    from playwright.sync_api import expect

    stream = f"note-{uuid.uuid4().hex[:8]}"
    server.append(stream, "NoteTaken", {"text": XSS})
    page.goto(f"{server.url}/admin/live")
    tail = page.locator("#tail tbody tr", has_text=stream)
    expect(tail).to_contain_text("<script>window.__xss=2</script>")  # as JSON text
    page.goto(f"{server.url}/admin/stream?name={stream}")
    expect(page.locator("article.event pre.json").nth(1)).to_contain_text(json.dumps(XSS))
    assert page.evaluate("window.__xss") is None
    assert page.locator("main img").count() == 0
    shot(page, "xss-as-text")


def test_without_chromium_the_browser_tests_skip_or_fail_in_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(browser_module, "CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no Chromium at"):
        next(chromium())
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        next(chromium())
