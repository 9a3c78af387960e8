"""The projections dashboard: checkpoints, lag and status of every projection (those of
another runner too), a rebuild started from the page running to the head, and a stuck
projection skipped with a reason."""

from __future__ import annotations

import datetime as dt
import re

import pytest

import eskit
from eskit.projections import PartitionedWorker
from eskit.projections import state as st
from eskit.projections.database import database_for
from eskit.web.admin.repair import RebuildJob
from tests.projections.partitioning import Poisoned, fill
from tests.web.admin.client import Admin, text, until

pytestmark = pytest.mark.anyio
TABLE = "/admin/projections/table"


def rows(fragment: str) -> dict[str, tuple[str, int]]:
    """Each projection's (status, lag) as the dashboard's table shows them."""
    found = re.findall(
        r'<tr data-projection="(\w+)" data-status="(\w+)" data-lag="(\d+)">', fragment
    )
    return {name: (status, int(lag)) for name, status, lag in found}


@pytest.fixture
async def logged_in(admin: Admin) -> Admin:
    await admin.invoice("1", 100)
    await admin.invoice("2", 200)
    await admin.login()
    return admin


async def test_the_dashboard_shows_every_projection_at_the_head(logged_in: Admin) -> None:
    head = await logged_in.store.last_position()

    async def caught_up() -> dict[str, tuple[str, int]] | None:
        shown = rows(await logged_in.page(TABLE))
        return shown if all(lag == 0 for _, lag in shown.values()) else None

    shown = await until(caught_up)
    assert set(shown) == {
        "customer_balances", "fragile", "invoice_list", "invoice_reminders", "invoice_search"
    }  # fmt: skip
    assert {status for status, _ in shown.values()} == {"running"}
    page = await logged_in.page("/admin/projections")
    assert f"head of the log: position {head}" in text(page)
    assert 'data-src="/admin/projections/table"' in page
    assert "/admin/projections/invoice_list/rebuild" in page
    assert "/admin/projections/fragile/rebuild" not in page  # not this server's runner


def last_rebuilds(fragment: str) -> dict[str, str]:
    """Each projection's last rebuild as the dashboard's table shows it ("": none)."""
    found = re.findall(
        r'<tr data-projection="(\w+)".*?<td class="rebuilt">(.*?)</td>', fragment, re.DOTALL
    )
    return {name: text(cell) for name, cell in found}


async def test_a_rebuild_started_from_the_page_runs_to_the_head(logged_in: Admin) -> None:
    before = last_rebuilds(await logged_in.page(TABLE))
    started = await logged_in.submit(
        "/admin/projections", "/admin/projections/invoice_list/rebuild"
    )
    assert started.status_code == 303
    job: RebuildJob = logged_in.app.state.eskit_admin.jobs["invoice_list"]

    async def done() -> bool:
        return not job.running

    await until(done)
    assert job.error is None
    assert job.position == await logged_in.store.last_position()
    table = await logged_in.page(TABLE)
    assert rows(table)["invoice_list"] == ("running", 0)
    assert "rebuilt at" in text(table)
    assert "by admin" in text(table)
    assert before["invoice_list"] == ""
    shown = last_rebuilds(table)["invoice_list"]
    assert job.finished_at is not None
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(\d+ events, \d+\.\d s\)", shown)
    at = dt.datetime.strptime(shown[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC)
    assert job.started_at - dt.timedelta(seconds=1) <= at <= job.finished_at  # to the second
    assert last_rebuilds(table)["invoice_search"] == ""
    listed = await logged_in.http.get("/queries/invoices", headers=logged_in.as_("reader"))
    assert sorted(i["invoice_id"] for i in listed.json()) == ["1", "2"]  # the new build serves


async def test_a_rebuild_the_server_cannot_run_is_refused(logged_in: Admin) -> None:
    refused = await logged_in.submit("/admin/projections", "/admin/projections/fragile/rebuild")
    assert refused.status_code == 409
    assert "eskit projections rebuild URL fragile" in text(refused.text)
    unknown = await logged_in.submit("/admin/projections", "/admin/projections/nope/rebuild")
    assert unknown.status_code == 409


async def test_a_stuck_projection_is_skipped_with_a_reason(logged_in: Admin) -> None:
    poisoned = await logged_in.append("lab-1", "Poison")
    assert poisoned.status_code == 201
    position = poisoned.json()["last_position"]

    async def stuck() -> bool:
        return rows(await logged_in.page(TABLE)).get("fragile", ("", 0))[0] == "stuck"

    await until(stuck)
    table = text(await logged_in.page(TABLE))
    assert f"at {position} (Poison): RuntimeError: cannot digest poison" in table
    form = text(await logged_in.page("/admin/projections/fragile/skip"))
    assert f"stuck at position {position} on an event of type Poison" in form
    skip = "/admin/projections/fragile/skip"
    blank = await logged_in.submit(skip, skip, reason="  ")
    assert blank.status_code == 422
    assert "say why" in blank.text
    done = await logged_in.submit(skip, skip, reason="test poison, ticket 7")
    assert done.status_code == 303

    async def running() -> bool:
        return rows(await logged_in.page(TABLE))["fragile"] == ("running", 0)

    await until(running)
    database = database_for(logged_in.store)
    (recorded,) = await database.read(lambda c: st.skips(c, "fragile"))
    assert recorded.position == position
    assert recorded.reason == "test poison, ticket 7 (by admin, admin UI)"
    assert "is not stuck" in text(await logged_in.page(skip))
    again = await logged_in.submit("/admin/projections", skip, reason="twice")
    assert again.status_code == 422
    assert "is not stuck" in again.text


async def test_a_stuck_partition_shows_on_the_dashboard_and_is_skipped(logged_in: Admin) -> None:
    """A projection run by partitioned workers: the partition stuck on a poison event makes
    the projection's row stuck, with the partition and the error; skipping from the page
    steps it over and every partition reaches the head."""
    store = logged_in.store
    await fill(store, streams=6, each=2)
    poison = (await store.append("poisoned-1", [eskit.NewEvent("Poison", {})])).last_position
    await fill(store, streams=6, each=1)
    async with PartitionedWorker(store, Poisoned(), partitions=4, lease=0.6, backoff=0.01):

        async def stuck() -> bool:
            return rows(await logged_in.page(TABLE)).get("ordered", ("", 0))[0] == "stuck"

        await until(stuck)
        table = text(await logged_in.page(TABLE))
        assert re.search(
            rf"at {poison} \(Poison\): partition \d: RuntimeError: cannot digest poison", table
        ), table
        skip = "/admin/projections/ordered/skip"
        form = text(await logged_in.page(skip))
        assert f"stuck at position {poison} on an event of type Poison" in form
        done = await logged_in.submit(skip, skip, reason="poison, ticket 9")
        assert done.status_code == 303

        async def caught_up() -> bool:
            return rows(await logged_in.page(TABLE))["ordered"] == ("running", 0)

        await until(caught_up)
    database = database_for(store)
    (recorded,) = await database.read(lambda c: st.skips(c, "ordered"))
    assert (recorded.position, recorded.reason) == (poison, "poison, ticket 9 (by admin, admin UI)")


async def test_a_failed_tick_shows_as_failing_with_its_error(logged_in: Admin) -> None:
    """What a process manager in another process stored when its tick raised: the row says
    failing, with the error and when, and no event position (it is about none)."""

    async def fragile_state() -> st.State | None:
        return await database.read(lambda c: st.load(c, "fragile"))

    database = database_for(logged_in.store)
    state = await until(fragile_state)
    error = "tick failed at 2030-01-01 12:00:00 UTC: ConnectionError: the mail relay is down"
    await database.write(lambda c: st.tick_failed(c, "fragile", state.generation, error, 0))

    fragment = await logged_in.page(TABLE)
    assert rows(fragment)["fragile"][0] == "failing"
    assert f'<span class="error">{error}</span>' in fragment
    await database.write(lambda c: st.tick_succeeded(c, "fragile"))
    assert rows(await logged_in.page(TABLE))["fragile"][0] == "running"
