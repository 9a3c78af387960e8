"""Metrics and spans of an instrumented application: the invoicing example's bus, a SQLite
store and a runner with its read models, scraped as Prometheus text and traced with the
OpenTelemetry SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import uuid
from typing import Any

import pytest
from examples.invoicing.app import invoicing
from examples.invoicing.commands import AddInvoiceLine, CreateInvoice
from examples.invoicing.invoice import InvoiceError
from examples.invoicing.read_models import CustomerBalances, InvoiceList
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import eskit
from eskit.observability import Metrics, instrument
from eskit.projections import ProjectionRunner

pytestmark = pytest.mark.anyio

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """The process's tracer provider (set once: OpenTelemetry allows no second one)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
    return EXPORTER


def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, labels), parsed back from the exposition text."""
    text = generate_latest(metrics.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def create(n: int) -> CreateInvoice:
    return CreateInvoice(f"inv-{n}", "c-1", "EUR", dt.date(2024, 4, 1))


async def test_appends_commands_and_projections_are_counted(store: eskit.EventStore) -> None:
    metrics, bus = Metrics(), invoicing(store)
    runner = ProjectionRunner(store, [InvoiceList(), CustomerBalances()])
    sampling = instrument(metrics, store=store, runner=runner, bus=bus)
    assert sampling is not None
    async with runner:
        for n in range(3):
            await bus.send(create(n))
            await bus.send(AddInvoiceLine(f"inv-{n}", "sku", 100, "EUR"))
        with pytest.raises(eskit.WrongExpectedVersion):
            await store.append("inv-x", [eskit.NewEvent("Noise", {})], expected_version=5)
        with pytest.raises(InvoiceError):
            await bus.send(AddInvoiceLine("inv-9", "sku", 1, "EUR"))  # no such invoice
        await runner.wait_until(await store.last_position())
        await asyncio.sleep(1.2)  # one sampling round after the batches
    sampling.cancel()
    got = scrape(metrics)
    assert got[("eskit_appends_total", ())] == 6
    assert got[("eskit_events_appended_total", ())] == 6
    assert got[("eskit_append_conflicts_total", ())] == 1
    assert got[("eskit_append_seconds_count", ())] == 7
    assert got[("eskit_commands_total", (("command", "CreateInvoice"), ("outcome", "ok")))] == 3
    failed = (("command", "AddInvoiceLine"), ("outcome", "error"))
    assert got[("eskit_commands_total", failed)] == 1
    assert got[("eskit_store_head", ())] == 6
    for name in ("invoice_list", "customer_balances"):
        assert got[("eskit_projection_position", (("projection", name),))] == 6
        assert got[("eskit_projection_lag", (("projection", name),))] == 0
        assert got[("eskit_projection_batches_total", (("projection", name),))] >= 1


async def test_a_conflict_retried_by_the_bus_is_counted(
    store: eskit.EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another command slips an event in between the bus's load and its append, once: the
    append conflicts, the bus decides again, and both are counted. (The invoice's kept state
    is dropped first, so that the command loads: appended from a kept state, a refusal is
    not a retry.)"""
    metrics, bus = Metrics(), invoicing(store)
    instrument(metrics, store=store, bus=bus)
    await bus.send(create(1))
    bus.states.clear()
    append, raced = store.append, threading.Event()
    engine, loop, loop_thread = store.engine, asyncio.get_running_loop(), threading.get_ident()
    append_many = engine.append_many
    other = AddInvoiceLine("inv-1", "other", 1, "EUR")

    async def race_then_append(*args: Any, **kwargs: Any) -> Any:
        if not raced.is_set():
            raced.set()
            await bus.send(other)
        return await append(*args, **kwargs)

    def race_then_append_in_thread(appends: Any) -> Any:
        """The same race where the bus appends from a worker thread (a plain handler)."""
        if not raced.is_set() and threading.get_ident() != loop_thread:
            raced.set()
            asyncio.run_coroutine_threadsafe(bus.send(other), loop).result()
        return append_many(appends)

    monkeypatch.setattr(store, "append", race_then_append)
    monkeypatch.setattr(engine, "append_many", race_then_append_in_thread)
    await bus.send(AddInvoiceLine("inv-1", "sku", 5, "EUR"))
    got = scrape(metrics)
    assert got[("eskit_command_retries_total", (("command", "AddInvoiceLine"),))] == 1
    assert got[("eskit_append_conflicts_total", ())] == 1


async def test_spans_of_a_command_its_append_and_the_batch_share_the_correlation_id(
    store: eskit.EventStore, spans: InMemorySpanExporter
) -> None:
    metrics, bus = Metrics(), invoicing(store)
    runner = ProjectionRunner(store, [InvoiceList()])
    sampling = instrument(metrics, store=store, runner=runner, bus=bus)
    spans.clear()
    correlation = str(uuid.uuid4())
    async with runner:
        result = await bus.send(create(7), correlation_id=correlation)
        assert result.position is not None
        await runner.wait_until(result.position)
    assert sampling is not None
    sampling.cancel()
    finished = {span.name: span for span in spans.get_finished_spans()}
    command = finished["eskit.command CreateInvoice"]
    append = finished["eskit.append"]
    batch = finished["eskit.projection.batch"]
    assert command.attributes is not None
    assert append.attributes is not None
    assert batch.attributes is not None
    assert command.attributes["eskit.correlation_id"] == correlation
    assert append.attributes["eskit.correlation_id"] == correlation
    assert append.parent is not None
    assert append.parent.span_id == command.context.span_id
    assert correlation in list(batch.attributes["eskit.correlation_ids"])  # type: ignore[arg-type]
    assert batch.attributes["eskit.projection"] == "invoice_list"


async def test_instrumenting_twice_counts_once(store: eskit.EventStore) -> None:
    metrics, bus = Metrics(), invoicing(store)
    instrument(metrics, store=store, bus=bus)
    instrument(metrics, store=store, bus=bus)
    await bus.send(create(1))
    got = scrape(metrics)
    assert got[("eskit_commands_total", (("command", "CreateInvoice"), ("outcome", "ok")))] == 1


async def test_sampling_survives_a_failing_round(
    store: eskit.EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    runner = ProjectionRunner(store, [InvoiceList()])
    failing = {"left": 1}
    real = runner.status

    async def flaky() -> Any:
        if failing["left"]:
            failing["left"] -= 1
            raise eskit.StoreUnavailable("database away for a moment")
        return await real()

    runner.status = flaky  # type: ignore[method-assign]
    sampling = asyncio.create_task(metrics.sample(runner, every=0.05))
    await asyncio.sleep(0.3)
    sampling.cancel()
    assert "could not sample the projections" in caplog.text
    assert scrape(metrics)[("eskit_projection_lag", (("projection", "invoice_list"),))] == 0
