"""The operations endpoints of ``eskit serve``: ``/health/live``, ``/health/ready`` (the
store answers, every projection within the lag threshold) and ``/metrics`` (Prometheus
text of the instrumented store, command bus and runner, a relay's lag included)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from examples.invoicing.web import app_spec
from prometheus_client.parser import text_string_to_metric_families

import eskit
from eskit.brokers.nats import NatsPublisher
from eskit.projections import ProjectionRunner
from eskit.relay import Relay
from eskit.subscriptions import Groups, Source
from eskit.web import AppSpec, serving_app
from eskit.web.app import begin_shutdown
from tests.cli.apps import Fragile
from tests.cli.conftest import invoke
from tests.services import free_port
from tests.web.api import Api, client, token_file

pytestmark = pytest.mark.anyio
TIMEOUT = 10.0


@contextlib.asynccontextmanager
async def served(
    directory: Path, spec: Callable[[eskit.EventStore], AppSpec] = app_spec, **options: Any
) -> AsyncIterator[Api]:
    """``spec`` served as ``eskit serve`` builds it, with tokens, its lifespan running."""
    tokens, issued = token_file(directory)
    store = eskit.open_store(f"sqlite:///{directory}/events.db")
    app = serving_app(store, spec(store), tokens=tokens, **options)
    async with app.router.lifespan_context(app), client(app) as http:
        yield Api(app, store, http, issued)


async def ready(api: Api) -> httpx.Response:
    return await api.http.get("/health/ready")


async def ready_until(api: Api, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The body of /health/ready once ``until`` holds for it (a runner starts in the background)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            body: dict[str, Any] = (await ready(api)).json()
            if until(body):
                return body
            await asyncio.sleep(0.05)


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def metrics(api: Api, until: Callable[[dict[Any, float]], bool] = bool) -> dict[Any, float]:
    """The scraped samples, once ``until`` holds for them (the gauges sample every second)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            response = await api.http.get("/metrics", headers=api.as_("reader"))
            assert response.status_code == 200, response.text
            got = scrape(response.text)
            if until(got):
                return got
            await asyncio.sleep(0.1)


# -- health -------------------------------------------------------------------------------------


async def test_live_and_ready_need_no_token(tmp_path: Path) -> None:
    async with served(tmp_path) as api:
        live = await api.http.get("/health/live")
        assert (live.status_code, live.json()) == (200, {"status": "live"})
        await api.create_invoice("1")
        answer = await ready(api)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "ready"
        assert body["head"] == 1
        assert body["reasons"] == []
        assert set(body["lag"]) == {
            "invoice_list", "customer_balances", "invoice_search", "invoice_reminders"
        }  # fmt: skip
        assert body["last_rebuild"] == dict.fromkeys(body["lag"])  # none rebuilt yet


async def test_a_projection_over_the_lag_threshold_makes_the_server_unready(
    tmp_path: Path,
) -> None:
    def stuck_spec(store: eskit.EventStore) -> AppSpec:
        return AppSpec(runner=ProjectionRunner(store, [Fragile()], retries=0, backoff=0.01))

    async with served(tmp_path, stuck_spec, ready_max_lag=1) as api:
        assert (await ready(api)).status_code == 200
        await api.append("lab-1", "Poison", "Poison", "Poison")
        async with asyncio.timeout(TIMEOUT):  # behind at once, then stuck on the first
            while "stuck" not in (answer := await ready(api)).text:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "1"
        body = answer.json()
        assert body["status"] == "unready"
        assert body["lag"] == {"fragile": 3}
        assert body["reasons"] == ["projection fragile is 3 events behind (over 1, stuck)"]


async def test_ready_says_when_each_projection_was_last_rebuilt(tmp_path: Path) -> None:
    runners: list[ProjectionRunner] = []

    def spec(store: eskit.EventStore) -> AppSpec:
        runners.append(ProjectionRunner(store, [Fragile()], backoff=0.01))
        return AppSpec(runner=runners[0])

    async with served(tmp_path, spec) as api:
        await api.append("lab-1", "InvoiceCreated")
        before = (await ready(api)).json()
        await runners[0].rebuild("fragile")
        after = (await ready(api)).json()

    assert before["last_rebuild"] == {"fragile": None}
    (at,) = after["last_rebuild"].values()
    assert dt.datetime.fromisoformat(at) <= dt.datetime.now(dt.UTC)
    assert after["status"] == "ready"


async def test_the_server_is_unready_while_stopping_or_without_its_store(tmp_path: Path) -> None:
    async with served(tmp_path) as api:
        begin_shutdown(api.app)
        stopping = await ready(api)
        assert stopping.status_code == 503
        assert stopping.json()["reasons"] == ["the server is stopping"]
        await api.store.close()
        closed = (await ready(api)).json()
        assert "the store is not reachable (StoreClosed)" in closed["reasons"]
        assert closed["head"] is None


def test_the_lag_threshold_is_checked() -> None:
    with pytest.raises(ValueError, match="max_lag must be >= 0"):
        serving_app(eskit.open_store("memory://"), ready_max_lag=-1)
    refused = invoke(["serve", "--url", "memory://", "--ready-max-lag", "-1"])
    assert refused.exit_code == 2
    assert "--ready-max-lag" in refused.stderr


# -- metrics -------------------------------------------------------------------------------------


async def test_metrics_need_the_read_scope(tmp_path: Path) -> None:
    async with served(tmp_path) as api:
        assert (await api.http.get("/metrics")).status_code == 401
        refused = await api.http.get("/metrics", headers=api.as_("writer"))
        assert refused.status_code == 403
        partial = await api.http.get("/metrics", headers=api.as_("invoice_reader"))
        assert partial.status_code == 403  # counters of every category
        allowed = await api.http.get("/metrics", headers=api.as_("reader"))
        assert allowed.status_code == 200
        assert allowed.headers["content-type"].startswith("text/plain; version=0.0.4")
        open_metrics = await api.http.get(
            "/metrics",
            headers=api.as_("reader", Accept="application/openmetrics-text; version=1.0.0"),
        )
        assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
        assert open_metrics.text.endswith("# EOF\n")


async def test_metrics_count_the_servers_commands_appends_and_projections(
    tmp_path: Path,
) -> None:
    async with served(tmp_path) as api:
        for invoice in ("1", "2"):
            assert (await api.create_invoice(invoice)).status_code == 200
        assert (await api.create_invoice("1")).status_code == 409  # exists already
        got = await metrics(
            api,
            lambda m: m.get(("eskit_projection_position", (("projection", "invoice_list"),))) == 2,
        )
    assert got[("eskit_commands_total", (("command", "CreateInvoice"), ("outcome", "ok")))] == 2
    failed = (("command", "CreateInvoice"), ("outcome", "error"))
    assert got[("eskit_commands_total", failed)] == 1
    assert got[("eskit_appends_total", ())] == 2
    assert got[("eskit_store_head", ())] == 2
    assert got[("eskit_projection_lag", (("projection", "invoice_list"),))] == 0
    assert got[("eskit_projection_batches_total", (("projection", "invoice_list"),))] >= 1


async def test_a_lifespan_run_twice_counts_each_command_once(tmp_path: Path) -> None:
    tokens, issued = token_file(tmp_path)
    store = eskit.open_store(f"sqlite:///{tmp_path}/events.db")
    app = serving_app(store, app_spec(store), tokens=tokens)
    async with app.router.lifespan_context(app):
        pass
    async with app.router.lifespan_context(app), client(app) as http:
        api = Api(app, store, http, issued)
        await api.create_invoice("1")
        got = await metrics(api)
    assert got[("eskit_commands_total", (("command", "CreateInvoice"), ("outcome", "ok")))] == 1
    assert got[("eskit_appends_total", ())] == 1


async def test_a_relay_whose_broker_is_down_shows_its_lag(tmp_path: Path) -> None:
    """The relay runs in the server's runner: its lag is a projection lag, in /metrics and
    in /health/ready."""
    relay = Relay(NatsPublisher(f"nats://127.0.0.1:{free_port()}", "admin_test"))

    def relay_spec(store: eskit.EventStore) -> AppSpec:
        return AppSpec(runner=ProjectionRunner(store, [relay], backoff=0.01))

    async with served(tmp_path, relay_spec, ready_max_lag=2) as api:
        await api.append("order-1", "Placed", "Paid", "Shipped")
        lag = ("eskit_projection_lag", (("projection", relay.name),))
        got = await metrics(api, lambda m: m.get(lag) == 3)
        assert got[("eskit_projection_position", (("projection", relay.name),))] == 0
        reason = f"projection {relay.name} is 3 events behind (over 2)"
        await ready_until(api, lambda body: body["reasons"] == [reason])


async def test_metrics_show_the_consumer_groups(tmp_path: Path) -> None:
    async with served(tmp_path) as api:
        assert (await api.create_invoice("1")).status_code == 200
        groups = Groups(api.store)
        await groups.create("mail", Source.all())
        (delivery,) = await groups.consumer("mail", "a").fetch()
        await delivery.nack("park", "poison")
        got = await metrics(api)
    assert got[("eskit_group_parked", (("group", "mail"),))] == 1
    assert got[("eskit_group_parked_total", (("group", "mail"),))] == 1
    assert got[("eskit_group_in_flight", (("group", "mail"),))] == 0
    assert got[("eskit_group_lag", (("group", "mail"),))] == 0
