"""The dashboard: what needs attention at the top (a stuck projection, live), the charts'
data (events per second over the last hour, counted from the log within a budget, and the
projections' lag sampled into a ring), the biggest categories and streams (within a
budget), and errors shown in the layout with a way back."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

import eskit
from eskit.web.admin import history
from eskit.web.admin.history import History, Throughput, biggest
from tests.web.admin.client import PAGE, Admin, text, until

pytestmark = pytest.mark.anyio
DATA = "/admin/dashboard/data"


@pytest.fixture
async def logged_in(admin: Admin) -> Admin:
    await admin.invoice("1", 100, 200)
    await admin.invoice("2", 300)
    await admin.login()
    return admin


async def data(admin: Admin) -> dict[str, Any]:
    response = await admin.http.get(DATA)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    found: dict[str, Any] = response.json()
    return found


async def test_the_admin_opens_on_the_dashboard(logged_in: Admin) -> None:
    home = await logged_in.http.get("/admin/")
    assert home.headers["location"] == "/admin/dashboard"
    page = await logged_in.page("/admin/dashboard")
    scripts = re.findall(r'<script src="([^"]+)" defer></script>', page)
    assert scripts == ["/admin/static/uPlot.iife.min.js", "/admin/static/admin.js"]
    assert 'data-src="/admin/dashboard/data"' in page
    assert 'id="throughput"' in page
    assert 'id="lag"' in page
    assert "parked" not in page  # no persistent subscriptions: no parked events to show
    for name in ("uPlot.iife.min.js", "uPlot.min.css"):
        served = await logged_in.http.get(f"/admin/static/{name}")
        assert served.status_code == 200
        assert len(served.content) > 1000


async def test_the_biggest_categories_and_streams_are_listed(logged_in: Admin) -> None:
    page = await logged_in.page("/admin/dashboard")
    categories = re.search(r'<table class="categories">.*?</table>', page, re.S)
    assert categories is not None
    # invoice-1: created and two lines; invoice-2: created and one line
    assert text(categories[0]).startswith("category events streams invoice 5 2")
    streams = re.search(r'<table class="biggest-streams">.*?</table>', page, re.S)
    assert streams is not None
    assert re.match(r"stream events last written invoice-1 3 .* invoice-2 2 ", text(streams[0]))
    assert "Counted over all 2 streams" in text(page)


async def test_the_biggest_are_counted_among_a_bounded_number_of_streams(
    logged_in: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(5):
        await logged_in.store.append(f"note-{n}", [eskit.NewEvent("Noted", {})] * (n + 1))
    monkeypatch.setattr(history, "STREAMS_SCANNED", 4)
    monkeypatch.setattr(history, "TOP", 2)
    found = await biggest(logged_in.store, time.time())
    assert not found.complete
    assert found.scanned == 4  # invoice-1, invoice-2, note-0, note-1 (by name)
    assert [(s.stream, s.event_count) for s in found.streams] == [("invoice-1", 3), ("note-1", 2)]
    assert found.categories == [("invoice", 5, 2), ("note", 3, 2)]
    monkeypatch.setattr(history, "STREAMS_SCANNED", 1000)
    everything = await biggest(logged_in.store, time.time())
    assert everything.complete
    assert everything.categories[0] == ("note", 15, 5)


async def test_the_throughput_counts_the_events_of_the_last_hour_as_they_come(
    logged_in: Admin,
) -> None:
    head = await logged_in.store.last_position()
    counted = (await data(logged_in))["throughput"]
    assert counted["total"] == head
    assert counted["since"] is None
    assert len(counted["times"]) == len(counted["rates"]) == 60  # a minute each
    assert time.time() - 120 < counted["times"][-1] <= time.time()  # this minute's start
    assert counted["rates"][-2] + counted["rates"][-1] > 0  # the last minutes' events
    await logged_in.invoice("3")
    assert (await data(logged_in))["throughput"]["total"] == head + 1


async def test_the_throughput_reads_a_bounded_part_of_the_log(
    admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting back from the head stops after ``SCAN_BUDGET`` events (the counts then say
    from when they are complete); later updates read only the events appended since,
    unless more than the budget were: then it counts back from the head again."""
    monkeypatch.setattr(history, "WINDOW", 2)
    monkeypatch.setattr(history, "SCAN_BUDGET", 3)
    store = admin.store
    for n in range(10):
        await store.append(f"note-{n}", [eskit.NewEvent("Noted", {})])
    counted = Throughput()
    await counted.update(store, time.time())
    assert counted.total == 4  # two windows of two
    assert counted.since is not None
    assert counted.counted_to == 10
    events = [e async for e in store.read_all(after=6)]
    assert counted.since == events[0].recorded_at.timestamp()
    _, rates = counted.series(time.time() + 120)  # two minutes on: the minutes after
    assert None not in rates[-2:]  # the counted one are complete, ...
    assert rates[0] is None  # ... the older ones were not read
    for n in range(2):
        await store.append(f"note-{n}", [eskit.NewEvent("Noted", {})])
    await counted.update(store, time.time())
    assert (counted.total, counted.counted_to) == (6, 12)
    for n in range(5):
        await store.append(f"note-{n}", [eskit.NewEvent("Noted", {})])
    await counted.update(store, time.time())
    assert (counted.total, counted.counted_to) == (4, 17)


async def test_the_throughput_forgets_what_is_over_an_hour_old(admin: Admin) -> None:
    now = time.time()
    counted = Throughput(counted_to=0, since=now - 2 * 3600)
    for moment in (now - 3 * 3600, now - 30, now):
        counted._add(moment)
    await counted.update(admin.store, now)  # an empty store: nothing new to count
    assert counted.total == 2
    assert counted.since is None
    times, rates = counted.series(now)
    assert times[0] > now - 3600
    assert None not in rates


async def test_the_lag_is_sampled_into_a_bounded_ring(
    logged_in: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    sampled = (await data(logged_in))["lag"]
    assert set(sampled["series"]) == {
        "customer_balances", "fragile", "invoice_list", "invoice_reminders", "invoice_search"
    }  # fmt: skip
    assert len(sampled["times"]) >= 1
    for lags in sampled["series"].values():
        assert len(lags) == len(sampled["times"])
    monkeypatch.setattr(history, "LAG_KEPT", 3)
    ring = History()
    now = time.time()
    ring.note_lags({"a": 5}, now - 4000)  # over an hour before the next: forgotten
    for n in range(4):
        ring.note_lags({"a": n, "b": n} if n else {"a": 0}, now + n)
    times, series = ring.lag_series()
    assert times == [now + 1, now + 2, now + 3]
    assert series == {"a": [1, 2, 3], "b": [1, 2, 3]}
    ring.note_lags({"b": 9}, now + 4)
    assert ring.lag_series()[1] == {"a": [2, 3, None], "b": [2, 3, 9]}


async def test_the_lag_is_sampled_in_the_background_from_the_first_request(
    logged_in: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = logged_in.app.state.eskit_admin
    monkeypatch.setattr(history, "LAG_EVERY", 0.05)
    await admin.history.close()  # the first request started it, at the usual pace
    await logged_in.page("/admin/streams")
    sampler = admin.history.sampler
    assert sampler is not None

    async def sampled() -> bool:
        return len(admin.history.lags) >= 3

    await until(sampled)
    await admin.close()
    assert sampler.done()


async def test_a_stuck_projection_is_at_the_top(logged_in: Admin) -> None:
    poisoned = await logged_in.append("lab-1", "Poison")
    position = poisoned.json()["last_position"]

    async def stuck() -> str | None:
        top = await logged_in.page("/admin/dashboard/attention")
        return top if 'data-projection="fragile" data-status="stuck"' in top else None

    top = text(await until(stuck))
    assert f"fragile is stuck at position {position} (Poison), " in top
    assert re.search(r"\(Poison\), \d+ behind: RuntimeError: cannot digest poison", top)
    page = await logged_in.page("/admin/dashboard")
    assert 'href="/admin/projections/fragile/skip"' in page
    assert 'data-src="/admin/dashboard/attention"' in page


async def test_all_running_says_so(logged_in: Admin) -> None:
    async def calm() -> str | None:
        top = text(await logged_in.page("/admin/dashboard/attention"))
        return top if "all caught up" in top else None

    assert "all 5 projections are running; all caught up with the head" in await until(calm)


async def test_an_error_is_shown_in_the_layout_with_a_way_back(logged_in: Admin) -> None:
    came_from = "http://api/admin/streams?category=invoice"
    response = await logged_in.http.get(
        "/admin/aggregates",
        params={"kind": "ship", "id": "1"},
        headers={**PAGE, "Referer": came_from},
    )
    assert response.status_code == 404
    page = response.text
    assert "<h1>Error 404</h1>" in page
    assert "no aggregate kind 'ship'" in text(page)
    assert '<a href="/admin/dashboard">Dashboard</a>' in page  # the layout's header
    assert '<span class="user">admin</span>' in page
    assert 'action="/admin/logout"' in page
    assert 'href="/admin/streams?category=invoice" class="back"' in page
    assert 'href="/admin/dashboard" class="home"' in page
    elsewhere = await logged_in.http.get(
        "/admin/aggregates",
        params={"kind": "ship", "id": "1"},
        headers={**PAGE, "Referer": "https://evil.example/admin/streams"},
    )
    assert 'class="back"' not in elsewhere.text  # only the admin's own pages
    assert 'class="home"' in elsewhere.text


async def test_an_unknown_admin_page_is_an_error_page(logged_in: Admin) -> None:
    response = await logged_in.http.get("/admin/nope/<b>x", headers=PAGE)
    assert response.status_code == 404
    assert "the admin UI has no page /admin/nope/<b>x" in text(response.text)
    assert "<b>" not in response.text
    assert 'class="home"' in response.text
    unknown = await logged_in.http.get("/admin/nope")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("text/html")


async def test_the_biggest_are_recounted_when_the_log_grows(logged_in: Admin) -> None:
    memory = History()
    first = await memory.biggest_of(logged_in.store)
    assert await memory.biggest_of(logged_in.store) is first  # nothing new: not recounted
    await logged_in.store.append("note-1", [eskit.NewEvent("Noted", {})] * 4)
    grown = await memory.biggest_of(logged_in.store)
    assert grown.streams[0].stream == "note-1"
    assert grown.head == first.head + 4
