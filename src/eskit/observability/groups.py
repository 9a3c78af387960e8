"""Consumer groups' metrics: parked, replayed, retried and in flight per group.

The counts live in the groups' tables (every consumer process adds to them), so they are
read from there: ``GroupCollector.sample`` refreshes a snapshot every few seconds and
Prometheus scrapes the snapshot (a scrape never waits for the database).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from eskit.errors import StoreClosed
from eskit.subscriptions import Group, Groups

log = logging.getLogger("eskit.observability")


class GroupCollector(Collector):
    """Gauges (in flight, waiting, parked, checkpoint, lag) and counters (retried, parked,
    replayed) of every group, from the last ``refresh``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.groups: Sequence[Group] = ()
        self.head = 0
        if registry is not None:
            registry.register(self)

    def refresh(self, groups: Sequence[Group], head: int) -> None:
        self.groups, self.head = tuple(groups), head

    def collect(self) -> Iterator[Metric]:
        gauges = {
            "in_flight": "Events handed to a consumer and not yet acked or nacked.",
            "waiting": "Events read from the log, waiting for a consumer.",
            "parked": "Events parked now.",
            "checkpoint": "Every event of the source up to here is acked, skipped or parked.",
            "lag": "Events between the log's head and the group's checkpoint.",
        }
        counters = {
            "retried_total": "Deliveries that failed (nack retry, timeout) and were retried.",
            "parked_total": "Events parked (by a nack, or after max_retries).",
            "replayed_total": "Parked events handed out again by a replay.",
        }
        for field, text in gauges.items():
            family = GaugeMetricFamily(f"eskit_group_{field}", text, labels=["group"])
            for group in self.groups:
                value = self.head - group.checkpoint if field == "lag" else getattr(group, field)
                family.add_metric([group.name], max(0, value))
            yield family
        for field, text in counters.items():
            name = f"eskit_group_{field.removesuffix('_total')}"
            counter = CounterMetricFamily(name, text, labels=["group"])
            for group in self.groups:
                counter.add_metric([group.name], getattr(group, field))
            yield counter

    async def sample(self, groups: Groups, every: float = 5.0) -> None:
        """Keep the snapshot fresh (a task; cancel it on shutdown)."""
        while True:
            try:
                self.refresh(await groups.list(), await groups.store.last_position())
            except StoreClosed:
                return
            except Exception as error:
                log.warning("metrics: could not sample the consumer groups: %s", error)
            await asyncio.sleep(every)
