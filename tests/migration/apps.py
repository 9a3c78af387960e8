"""Migrations the tests run, by the library and through ``--app tests.migration.apps:NAME``:
upcast an old version, rename a category, split an event in two, drop debug events."""

from __future__ import annotations

import time

import msgspec

import eskit
from eskit.domain import EventRegistry
from eskit.migration import EventMigration, Rewritten, chain, rename_category, upcast
from eskit.store.model import JSONObject, RecordedEvent

events = EventRegistry()


@events.register("OrderPlaced", version=2)
class OrderPlaced(msgspec.Struct, frozen=True):
    order_id: str
    cents: int


@events.upcasters.register("OrderPlaced", from_version=1)
def _euros_to_cents(data: JSONObject) -> JSONObject:
    return {"order_id": data["order_id"], "cents": data["euros"] * 100}


def split_shipping(event: RecordedEvent) -> list[Rewritten]:
    """``OrderShipped`` with an address becomes ``OrderShipped`` and ``AddressRecorded``;
    ``DebugPinged`` is dropped."""
    if event.type == "DebugPinged":
        return []
    if event.type != "OrderShipped" or "address" not in event.data:
        return [Rewritten.of(event)]
    data = dict(event.data)
    address = data.pop("address")
    return [
        Rewritten.of(event, data=data),
        Rewritten.of(event, type="AddressRecorded", data={"address": address}),
    ]


v2 = EventMigration(
    "orders-v2",
    chain(upcast(events), rename_category("order", "purchase"), split_shipping),
    "upcast OrderPlaced to v2, order-* becomes purchase-*, split the shipping address off",
)


def _slowly(event: RecordedEvent) -> list[Rewritten]:
    time.sleep(0.001)  # a long migration, so that a test can kill it midway
    return split_shipping(event)


slow = EventMigration("slow", _slowly, "split_shipping, a millisecond an event")


def history(orders: int) -> list[tuple[str, list[eskit.NewEvent]]]:
    """Appends for ``orders`` orders: placed at v1 (euros) or v2, shipped with an address,
    and a debug ping now and then."""
    appends = []
    for n in range(orders):
        stream = f"order-{n}"
        placed = (
            eskit.NewEvent("OrderPlaced", {"order_id": str(n), "euros": n}, {"schema_version": 1})
            if n % 2
            else eskit.NewEvent(
                "OrderPlaced", {"order_id": str(n), "cents": n}, {"schema_version": 2}
            )
        )
        appends.append((stream, [placed]))
        if n % 5 == 0:
            appends.append((f"debug-{n}", [eskit.NewEvent("DebugPinged", {"n": n})]))
        shipped = eskit.NewEvent("OrderShipped", {"order_id": str(n), "address": f"{n} Main St"})
        appends.append((stream, [shipped]))
    return appends
