"""Tracing a correlation id: the causal tree of commands and events a real command bus wrote,
through a process-manager-like chain (an event causing the next command)."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest

import eskit
from eskit.application import CommandBus
from eskit.application.trace import Trace, TraceCommand, TraceEvent, trace
from eskit.domain import Decider, EventRegistry

pytestmark = pytest.mark.anyio


@dataclasses.dataclass(frozen=True)
class PlaceOrder:
    order_id: str
    sku: str


@dataclasses.dataclass(frozen=True)
class ReserveStock:
    sku: str
    order_id: str


@dataclasses.dataclass(frozen=True)
class ConfirmOrder:
    order_id: str


@dataclasses.dataclass(frozen=True)
class OrderPlaced:
    sku: str


@dataclasses.dataclass(frozen=True)
class StockReserved:
    order_id: str


@dataclasses.dataclass(frozen=True)
class OrderConfirmed:
    pass


events = EventRegistry()
for event_class in (OrderPlaced, StockReserved, OrderConfirmed):
    events.register(event_class.__name__)(event_class)


def _order(command: Any, state: int) -> list[object]:
    return [OrderPlaced(command.sku)] if isinstance(command, PlaceOrder) else [OrderConfirmed()]


def _count(state: int, event: object) -> int:
    return state + 1


orders: Decider[Any, int] = Decider(
    category="order", initial_state=int, evolve=_count, decide=_order
)
stock: Decider[ReserveStock, int] = Decider(
    category="stock",
    initial_state=int,
    evolve=_count,
    decide=lambda c, s: [StockReserved(c.order_id)],
)


def make_bus(store: eskit.EventStore) -> CommandBus:
    bus = CommandBus(store, events)
    bus.register(PlaceOrder, orders, aggregate_id=lambda c: c.order_id)
    bus.register(ConfirmOrder, orders, aggregate_id=lambda c: c.order_id)
    bus.register(ReserveStock, stock, aggregate_id=lambda c: c.sku)
    return bus


async def caused_by(bus: CommandBus, command: object, event: eskit.RecordedEvent) -> None:
    """What a process manager does: send the command the event calls for, in its chain."""
    await bus.send(
        command,
        command_id=uuid.uuid5(uuid.NAMESPACE_URL, f"{event.id}:{type(command).__name__}"),
        correlation_id=event.metadata["correlation_id"],
        causation_id=str(event.id),
    )


async def last_event(store: eskit.EventStore, stream: str) -> eskit.RecordedEvent:
    (event,) = [e async for e in store.read_stream(stream, backwards=True, limit=1)]
    return event


async def order_chain(store: eskit.EventStore, order_id: str) -> str:
    """PlaceOrder -> OrderPlaced -> ReserveStock -> StockReserved -> ConfirmOrder ->
    OrderConfirmed; returns the correlation id (the first command's id)."""
    bus = make_bus(store)
    correlation = str(uuid.uuid4())
    await bus.send(PlaceOrder(order_id, "sku-7"), command_id=uuid.UUID(correlation))
    placed = await last_event(store, f"order-{order_id}")
    await caused_by(bus, ReserveStock("sku-7", order_id), placed)
    reserved = await last_event(store, "stock-sku-7")
    await caused_by(bus, ConfirmOrder(order_id), reserved)
    return correlation


def shape(node: TraceCommand | TraceEvent) -> Any:
    """The tree as nested tuples of labels, for comparing whole trees at once."""
    if isinstance(node, TraceCommand):
        return (node.type, [shape(e) for e in node.events])
    return (f"{node.stream} v{node.version} {node.type}", [shape(c) for c in node.caused])


async def test_trace_builds_the_chain_of_commands_and_events(store: eskit.EventStore) -> None:
    await order_chain(store, "other")  # another chain in the same log: left out
    correlation = await order_chain(store, "1")
    await order_chain(store, "2")

    found = await trace(store, correlation)

    assert found.count == 3
    assert [shape(root) for root in found.roots] == [
        (
            "PlaceOrder",
            [
                (
                    "order-1 v0 OrderPlaced",
                    [
                        (
                            "ReserveStock",
                            [
                                (
                                    "stock-sku-7 v1 StockReserved",
                                    [("ConfirmOrder", [("order-1 v1 OrderConfirmed", [])])],
                                )
                            ],
                        )
                    ],
                )
            ],
        )
    ]
    (place,) = found.roots
    assert isinstance(place, TraceCommand)
    assert place.id == correlation
    assert [e.position for e in place.events] == [4]  # after the 3 events of the first chain


async def test_trace_reports_progress_over_the_whole_log(store: eskit.EventStore) -> None:
    store.page_size = 2
    correlation = await order_chain(store, "1")
    await order_chain(store, "2")
    seen: list[tuple[int, int]] = []

    found = await trace(store, correlation, progress=lambda done, head: seen.append((done, head)))

    assert found.count == 3
    assert seen == [(2, 6), (4, 6), (6, 6)]


async def test_trace_of_an_unknown_correlation_is_empty(store: eskit.EventStore) -> None:
    await order_chain(store, "1")
    assert await trace(store, "nobody") == Trace("nobody", [], 0)


async def test_trace_keeps_events_written_without_a_command(store: eskit.EventStore) -> None:
    """Events appended straight to the store with correlation metadata: an event caused by
    another nests under it; one whose cause is outside the chain is a root."""
    root = eskit.NewEvent("Imported", {}, {"correlation_id": "c", "causation_id": "request-9"})
    await store.append("batch-1", [root])
    (first,) = [e async for e in store.read_all()]
    follow = eskit.NewEvent("Checked", {}, {"correlation_id": "c", "causation_id": str(first.id)})
    await store.append("batch-1", [follow])

    found = await trace(store, "c")

    assert [shape(r) for r in found.roots] == [
        ("batch-1 v0 Imported", [("batch-1 v1 Checked", [])])
    ]


async def test_trace_ignores_a_cause_that_comes_later(store: eskit.EventStore) -> None:
    """Damaged metadata naming a later event as the cause cannot make a cycle."""
    later = uuid.uuid4()
    await store.append(
        "x-1",
        [eskit.NewEvent("A", {}, {"correlation_id": "c", "causation_id": str(later)})],
    )
    first = (await last_event(store, "x-1")).id
    await store.append(
        "x-1",
        [eskit.NewEvent("B", {}, {"correlation_id": "c", "causation_id": str(first)}, later)],
    )

    found = await trace(store, "c")

    assert [shape(r) for r in found.roots] == [("x-1 v0 A", [("x-1 v1 B", [])])]
