"""Prometheus metrics of consumer groups: parked, replayed, retried, in flight per group."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import eskit
from eskit.observability.groups import GroupCollector
from eskit.subscriptions import Groups, Settings, Source

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_group_metrics_count_parked_replayed_retried_and_in_flight() -> None:
    async with eskit.open_store("memory://") as store:
        await store.append("invoice-1", [eskit.NewEvent("Due", {"n": n}) for n in range(4)])
        groups = Groups(store)
        await groups.create("mail", Source.all(), settings=Settings(retry_backoff=0))
        consumer = groups.consumer("mail", "a")
        first, second, *_ = await consumer.fetch()
        await first.nack("park", "poison")
        await second.nack("retry", "busy")
        await groups.replay("mail", requested_by="ops")
        registry = CollectorRegistry()
        collector = GroupCollector(registry)
        collector.refresh(await groups.list(), await store.last_position())
        text = generate_latest(registry).decode()
        for line in (
            'eskit_group_in_flight{group="mail"} 2.0',
            'eskit_group_waiting{group="mail"} 2.0',
            'eskit_group_parked{group="mail"} 0.0',
            'eskit_group_lag{group="mail"} 3.0',
            'eskit_group_retried_total{group="mail"} 1.0',
            'eskit_group_parked_total{group="mail"} 1.0',
            'eskit_group_replayed_total{group="mail"} 1.0',
        ):
            assert line in text
