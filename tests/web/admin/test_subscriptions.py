"""The admin's consumer group pages: counts and consumers, parked events with their
reasons, the replay button (recorded with the admin's name), the dashboard's parked line."""

from __future__ import annotations

import pytest

from eskit.subscriptions import EventFilter, Groups, Settings, Source
from tests.web.admin.client import Admin, text

pytestmark = pytest.mark.anyio


async def park_two(admin: Admin) -> Groups:
    await admin.invoice("1", 100, 200)
    groups = Groups(admin.store)
    await groups.create("mail", Source.category("invoice"), settings=Settings(max_retries=1))
    consumer = groups.consumer("mail", "worker-1")
    first, second, third = await consumer.fetch()
    await first.nack("park", "<b>no address</b>")
    await second.nack("park", "template missing")
    await third.ack()
    return groups


async def test_the_subscriptions_pages_show_groups_and_replay_parked_events(admin: Admin) -> None:
    groups = await park_two(admin)
    await admin.login()
    dashboard = await admin.page("/admin/dashboard")
    assert "group mail has 2 parked events" in text(dashboard)
    assert 'href="/admin/subscriptions/mail"' in dashboard
    listing = text(await admin.page("/admin/subscriptions"))
    assert "mail $ce-invoice round_robin 3 0 0 0 2 worker-1" in listing
    page = await admin.page("/admin/subscriptions/mail")
    assert "&lt;b&gt;no address&lt;/b&gt;" in page  # shown as text, never as markup
    assert "template missing" in text(page)
    replayed = await admin.submit(
        "/admin/subscriptions/mail", "/admin/subscriptions/mail/replay", up_to="1"
    )
    assert replayed.status_code == 303
    (record,) = await groups.replays("mail")
    assert (record.requested_by, record.replayed) == ("admin (admin UI)", 1)
    after = text(await admin.page("/admin/subscriptions/mail"))
    assert "admin (admin UI)" in after
    assert [p.reason for p in await groups.parked("mail")] == ["template missing"]
    assert (await groups.get("mail")).waiting == 1
    refused = await admin.submit(
        "/admin/subscriptions/mail", "/admin/subscriptions/mail/replay", up_to="x"
    )
    assert refused.status_code == 422
    missing = await admin.http.get("/admin/subscriptions/nope", headers={"Accept": "text/html"})
    assert missing.status_code == 404


async def test_a_groups_filter_is_shown_with_its_source(admin: Admin) -> None:
    groups = Groups(admin.store)
    await groups.create("payments", Source.all(EventFilter("type", ("Paid", "Refunded"))))
    await admin.login()
    shown = "$all (event type prefix 'Paid', 'Refunded')"
    assert shown in text(await admin.page("/admin/subscriptions"))
    assert shown in text(await admin.page("/admin/subscriptions/payments"))


async def test_no_groups_no_parked_line(admin: Admin) -> None:
    await admin.login()
    assert "parked" not in await admin.page("/admin/dashboard")
    assert "no consumer groups yet" in await admin.page("/admin/subscriptions")
