"""What eskit counts and times, as Prometheus collectors, and the spans that go with them.

``instrument(store, runner=..., bus=...)`` attaches one ``Metrics`` to the parts of an
application: appends are counted and timed by the store, commands by a middleware of the
bus, projection batches by the runner, and a small task samples each projection's position
and lag (a relay is a projection too, so its lag is there). Spans (OpenTelemetry API: a
no-op until the application installs an SDK) carry the correlation id, so a command's span,
its append's span and the batches that applied its events can be found together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import msgspec
from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from eskit.application.commands import CommandBus, CommandContext, CommandResult
from eskit.errors import StoreClosed, WrongExpectedVersion
from eskit.projections.runner import ProjectionRunner
from eskit.store.base import EventStore
from eskit.store.model import RecordedEvent
from eskit.store.rules import PreparedAppend

tracer = trace.get_tracer("eskit")
log = logging.getLogger("eskit.observability")
Next = Callable[[CommandContext], Awaitable[CommandResult]]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CORRELATION_ID = "eskit.correlation_id"


class Metrics:
    """The collectors, registered in ``registry`` (a new one by default, so two
    applications, or two tests, in one process never share counters)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.appends = Counter("eskit_appends", "Appends committed.", registry=r)
        self.events = Counter("eskit_events_appended", "Events written by appends.", registry=r)
        self.append_seconds = Histogram(
            "eskit_append_seconds",
            "Time from append() to its commit.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.conflicts = Counter(
            "eskit_append_conflicts", "Appends refused: wrong expected version.", registry=r
        )
        self.append_errors = Counter(
            "eskit_append_errors", "Appends failed for another reason.", ["error"], registry=r
        )
        self.commands = Counter(
            "eskit_commands",
            "Commands handled, by type and outcome.",
            ["command", "outcome"],
            registry=r,
        )
        self.command_seconds = Histogram(
            "eskit_command_seconds",
            "Time to handle a command.",
            ["command"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.command_retries = Counter(
            "eskit_command_retries",
            "Commands decided again after a conflict.",
            ["command"],
            registry=r,
        )
        self.batches = Counter(
            "eskit_projection_batches",
            "Batches committed per projection.",
            ["projection"],
            registry=r,
        )
        self.position = Gauge(
            "eskit_projection_position",
            "Checkpoint of each projection.",
            ["projection"],
            registry=r,
        )
        self.lag = Gauge(
            "eskit_projection_lag",
            "Events between the log's head and the checkpoint.",
            ["projection"],
            registry=r,
        )
        self.head = Gauge("eskit_store_head", "The log's newest position.", registry=r)

    # -- appends ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def append(self, appends: Sequence[PreparedAppend]) -> Iterator[None]:
        """Around one append (or append_many) until it commits or fails."""
        first = appends[0]
        attributes: dict[str, Any] = {
            "eskit.stream": first.stream,
            "eskit.events": sum(len(a.events) for a in appends),
        }
        started = time.perf_counter()
        with tracer.start_as_current_span("eskit.append", attributes=attributes) as span:
            if span.is_recording() and first.events:  # decoded only when traces are kept
                metadata = msgspec.json.decode(first.events[0].metadata)
                if "correlation_id" in metadata:
                    span.set_attribute(CORRELATION_ID, str(metadata["correlation_id"]))
            try:
                yield
            except WrongExpectedVersion:
                self.conflicts.inc()
                raise
            except Exception as error:
                self.append_errors.labels(type(error).__name__).inc()
                raise
            finally:
                self.append_seconds.observe(time.perf_counter() - started)
        self.appends.inc()
        self.events.inc(attributes["eskit.events"])

    # -- commands --------------------------------------------------------------------------

    async def command(
        self,
        context: CommandContext,
        call_next: Callable[[CommandContext], Awaitable[CommandResult]],
    ) -> CommandResult:
        """Bus middleware: a span and the counts of one command."""
        name = type(context.command).__name__
        attributes = {CORRELATION_ID: context.correlation_id, "eskit.command": name}
        started = time.perf_counter()
        outcome = "error"
        with tracer.start_as_current_span(f"eskit.command {name}", attributes=attributes):
            try:
                result = await call_next(context)
                outcome = "replayed" if result.replayed else "ok"
                return result
            finally:
                self.commands.labels(name, outcome).inc()
                self.command_seconds.labels(name).observe(time.perf_counter() - started)

    def retried(self, context: CommandContext, attempt: int) -> None:
        self.command_retries.labels(type(context.command).__name__).inc()

    # -- projections -------------------------------------------------------------------------

    def batched(self, projection: str, events: Sequence[RecordedEvent], started: int) -> None:
        """A projection committed a batch that began at ``started`` (ns since 1970)."""
        attributes: dict[str, Any] = {"eskit.projection": projection, "eskit.events": len(events)}
        correlations = sorted(
            {str(c) for e in events[:100] if (c := e.metadata.get("correlation_id"))}
        )
        if correlations:
            attributes["eskit.correlation_ids"] = correlations
        span = tracer.start_span(
            "eskit.projection.batch", attributes=attributes, start_time=started
        )
        span.end()
        self.batches.labels(projection).inc()

    async def sample(self, runner: ProjectionRunner, every: float = 1.0) -> None:
        """Keep the position and lag gauges of ``runner``'s projections fresh (a task). A
        round that fails (the database away for a moment) is logged and tried again."""
        while True:
            try:
                head = await runner.store.last_position()
                self.head.set(head)
                for status in await runner.status():
                    self.position.labels(status.name).set(status.position)
                    self.lag.labels(status.name).set(status.lag)
            except StoreClosed:
                return
            except Exception as error:
                log.warning("metrics: could not sample the projections: %s", error)
            await asyncio.sleep(every)


def instrument(
    metrics: Metrics,
    store: EventStore | None = None,
    runner: ProjectionRunner | None = None,
    bus: CommandBus | None = None,
) -> asyncio.Task[None] | None:
    """Attach ``metrics`` to the parts given; returns the sampling task of ``runner``'s
    gauges (cancel it on shutdown), if a runner was given."""
    if store is not None:
        store.observer = metrics
    if bus is not None and metrics.command not in bus.middleware:  # twice would count twice
        bus.middleware.insert(0, metrics.command)
        bus.on_retry = metrics.retried
    if runner is None:
        return None
    runner.observer = metrics
    return asyncio.create_task(metrics.sample(runner), name="eskit-metrics")
