"""Upcasting: old stored versions become today's events at read time (correctness.md §7).

The golden fixtures in ``fixtures/`` hold one stored payload per (type, schema version) the
invoicing example ever shipped, with what it must decode to today, checked by the helper
any application can use (``eskit.testing.check_event_fixtures``). Stored events are never
rewritten, so these payloads must keep decoding for as long as the code lives.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from examples.invoicing.events import (
    InvoiceCancelled,
    InvoiceCreated,
    InvoiceIssued,
    InvoiceLineAdded,
    InvoicePaid,
)
from examples.invoicing.events import events as invoicing_events
from examples.invoicing.invoice import Invoice

import eskit
from eskit.application import Repository
from eskit.domain import EventRegistry
from eskit.errors import UnknownEventType, UnsupportedEventVersion
from eskit.store.model import JSONObject
from eskit.testing import check_event_fixtures
from eskit.testing.golden import Golden, goldens

FIXTURES = Path(__file__).with_name("fixtures")


def stored(
    type_name: str, data: JSONObject, schema_version: int | None = None
) -> eskit.RecordedEvent:
    """An event as a store returns it."""
    metadata: JSONObject = {} if schema_version is None else {"schema_version": schema_version}
    return eskit.RecordedEvent(
        id=uuid.uuid4(),
        stream="test-1",
        version=0,
        position=1,
        type=type_name,
        data=data,
        metadata=metadata,
        recorded_at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    )


def as_json(events: EventRegistry, decoded: list[Any]) -> list[JSONObject]:
    """Decoded events as the registered name and plain JSON data, to compare with fixtures."""
    return [
        {"type": events.type_of(e).name, "data": msgspec.json.decode(msgspec.json.encode(e))}
        for e in decoded
    ]


# -- golden fixtures (T7.1, T7.2) -------------------------------------------------------------


@pytest.mark.parametrize("golden", goldens(FIXTURES), ids=lambda g: g.file)
def test_every_shipped_payload_decodes_to_todays_event(golden: Golden) -> None:
    decoded = invoicing_events.decode(stored(golden.type, golden.data, golden.schema_version))

    assert as_json(invoicing_events, decoded) == golden.expected
    for event, expected in zip(decoded, golden.expected, strict=True):
        assert type(event) is invoicing_events.by_name(expected["type"]).cls


def test_every_shipped_type_and_version_has_a_golden_fixture_of_its_shape() -> None:
    check_event_fixtures(invoicing_events, FIXTURES)  # tests/domain/test_event_fixtures.py


def test_the_chain_is_the_identity_on_todays_payloads() -> None:
    for golden in goldens(FIXTURES):
        entry = invoicing_events.by_name(golden.type)
        if golden.schema_version != entry.version:
            continue
        (event,) = invoicing_events.decode(stored(golden.type, golden.data, entry.version))
        assert invoicing_events.encode(event) == (entry, golden.data)


def test_upcasting_leaves_the_stored_event_unchanged() -> None:
    # The invoicing upcaster pops `created_on` from the dict it is given.
    (v1,) = [g for g in goldens(FIXTURES) if (g.type, g.schema_version) == ("InvoiceCreated", 1)]
    recorded = stored(v1.type, copy.deepcopy(v1.data), v1.schema_version)

    first = invoicing_events.decode(recorded)
    second = invoicing_events.decode(recorded)

    assert recorded.data == v1.data
    assert first == second


def test_an_upcaster_that_mutates_nested_values_gets_a_copy() -> None:
    events = EventRegistry()

    @events.register("BasketFilled", version=2)
    @dataclasses.dataclass(frozen=True)
    class BasketFilled:
        items: list[dict[str, int]]

    @events.upcasters.register("BasketFilled", from_version=1)
    def _v1(data: JSONObject) -> JSONObject:
        for item in data["items"]:
            item["quantity"] = item.pop("qty")
        data["items"].append({"quantity": 0})
        return data

    data = {"items": [{"qty": 2}, {"qty": 5}]}
    recorded = stored("BasketFilled", data, 1)

    assert events.decode(recorded) == [
        BasketFilled([{"quantity": 2}, {"quantity": 5}, {"quantity": 0}])
    ]
    assert recorded.data == {"items": [{"qty": 2}, {"qty": 5}]}


# -- the shapes of upcasting ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TemperatureRecorded:
    sensor_id: str
    millikelvin: int


def temperature_events() -> EventRegistry:
    """v1 {sensor, celsius} -> v2 {sensor_id, celsius} -> v3 {sensor_id, millikelvin}."""
    events = EventRegistry()
    events.register("TemperatureRecorded", version=3)(TemperatureRecorded)

    @events.upcasters.register("TemperatureRecorded", from_version=1)
    def _v1(data: JSONObject) -> JSONObject:
        return {"sensor_id": data["sensor"], "celsius": data["celsius"]}

    @events.upcasters.register("TemperatureRecorded", from_version=2)
    def _v2(data: JSONObject) -> JSONObject:
        return {"sensor_id": data["sensor_id"], "millikelvin": data["celsius"] * 1000 + 273150}

    return events


@pytest.mark.parametrize(
    ("version", "data"),
    [
        (1, {"sensor": "s-1", "celsius": 21}),
        (2, {"sensor_id": "s-1", "celsius": 21}),
        (3, {"sensor_id": "s-1", "millikelvin": 294150}),
    ],
)
def test_a_chain_brings_every_old_version_to_the_current_one(
    version: int, data: JSONObject
) -> None:
    decoded = temperature_events().decode(stored("TemperatureRecorded", data, version))

    assert decoded == [TemperatureRecorded("s-1", 294150)]


def test_a_hole_in_the_chain_is_an_error_naming_the_version() -> None:
    events = EventRegistry()
    events.register("TemperatureRecorded", version=3)(TemperatureRecorded)
    events.upcasters.register("TemperatureRecorded", from_version=2)(lambda data: data)

    with pytest.raises(UnsupportedEventVersion, match=r"'TemperatureRecorded'.* 1 .*no upcaster"):
        events.decode(stored("TemperatureRecorded", {"sensor": "s-1", "celsius": 21}, 1))


def test_a_second_upcaster_for_the_same_version_is_refused() -> None:
    events = temperature_events()

    with pytest.raises(ValueError, match="'TemperatureRecorded' version 2 already exists"):
        events.upcasters.register("TemperatureRecorded", from_version=2)(lambda data: data)


@dataclasses.dataclass(frozen=True)
class CustomerRenamed:
    customer_id: str
    name: str


@dataclasses.dataclass(frozen=True)
class CustomerEmailChanged:
    customer_id: str
    email: str


def test_an_upcaster_splits_one_event_into_two() -> None:
    events = EventRegistry()
    events.register("CustomerRenamed")(CustomerRenamed)
    events.register("CustomerEmailChanged")(CustomerEmailChanged)

    @events.upcasters.register("CustomerUpdated", from_version=1)  # no longer a class
    def _split(data: JSONObject) -> list[tuple[str, int, JSONObject]]:
        who = data["customer_id"]
        return [
            ("CustomerRenamed", 1, {"customer_id": who, "name": data["name"]}),
            ("CustomerEmailChanged", 1, {"customer_id": who, "email": data["email"]}),
        ]

    old = {"customer_id": "c-1", "name": "Ann Lee", "email": "ann@example.com"}

    assert events.decode(stored("CustomerUpdated", old)) == [
        CustomerRenamed("c-1", "Ann Lee"),
        CustomerEmailChanged("c-1", "ann@example.com"),
    ]


@dataclasses.dataclass(frozen=True)
class OrderDispatched:
    order_id: str
    carrier: str


def test_an_upcaster_renames_a_type_and_the_new_types_chain_continues() -> None:
    events = EventRegistry()
    events.register("OrderDispatched", version=2)(OrderDispatched)

    @events.upcasters.register("OrderShipped", from_version=1)  # the type's old name
    def _rename(data: JSONObject) -> list[tuple[str, int, JSONObject]]:
        return [("OrderDispatched", 1, data)]

    @events.upcasters.register("OrderDispatched", from_version=1)
    def _carrier(data: JSONObject) -> JSONObject:
        return {**data, "carrier": "unknown"}

    assert events.decode(stored("OrderShipped", {"order_id": "o-1"})) == [
        OrderDispatched("o-1", "unknown")
    ]
    assert events.decode(stored("OrderDispatched", {"order_id": "o-2"}, 1)) == [
        OrderDispatched("o-2", "unknown")
    ]


def test_an_upcaster_drops_an_event() -> None:
    events = EventRegistry()
    events.upcasters.register("DebugPinged", from_version=1)(lambda data: [])

    assert events.decode(stored("DebugPinged", {"at": "2019-01-01"})) == []


def test_an_upcaster_towards_an_unknown_type_names_that_type() -> None:
    events = EventRegistry()
    events.upcasters.register("OrderShipped", from_version=1)(lambda data: [("OrderSent", 1, data)])

    with pytest.raises(UnknownEventType, match="OrderSent"):
        events.decode(stored("OrderShipped", {"order_id": "o-1"}))


# -- a mixed-version log rebuilds like a log written today (T7.3) ----------------------------

DAY = dt.date(2024, 1, 10)
NOON = dt.datetime(2024, 1, 10, 12, tzinfo=dt.UTC)


def history_as_written_back_then() -> dict[str, list[eskit.NewEvent]]:
    """The invoices as older deployments stored them: InvoiceCreated at v1, some written
    before eskit stored schema versions at all."""

    def v1(**data: Any) -> eskit.NewEvent:
        return eskit.NewEvent("InvoiceCreated", data, {"schema_version": 1})

    def event(type_name: str, **data: Any) -> eskit.NewEvent:
        return eskit.NewEvent(type_name, data)  # no metadata: version 1

    return {
        "invoice-a": [
            v1(invoice_id="a", customer_id="c-1", currency="EUR", created_on="2024-01-10"),
            event("InvoiceLineAdded", sku="pen", amount=250),
            event("InvoiceLineAdded", sku="ink", amount=1000),
            event("InvoiceIssued", issued_at="2024-01-10T12:00:00Z", total=1250),
            event("InvoicePaid", amount=1250, paid_at="2024-01-11T12:00:00Z"),
        ],
        "invoice-b": [
            eskit.NewEvent(
                "InvoiceCreated",
                {
                    "invoice_id": "b",
                    "customer_id": "c-2",
                    "currency": "USD",
                    "due_date": "2024-03-01",
                },
                {"schema_version": 2},
            ),
            event("InvoiceLineAdded", sku="desk", amount=30000),
        ],
        "invoice-c": [
            eskit.NewEvent(  # pre-versioning writer: no metadata at all
                "InvoiceCreated",
                {
                    "invoice_id": "c",
                    "customer_id": "c-1",
                    "currency": "EUR",
                    "created_on": "2023-12-31",
                },
            ),
            event("InvoiceCancelled", reason="duplicate", cancelled_at="2024-01-02T09:00:00Z"),
        ],
    }


def history_as_written_today() -> dict[str, list[object]]:
    return {
        "a": [
            InvoiceCreated("a", "c-1", "EUR", DAY + dt.timedelta(days=30)),
            InvoiceLineAdded("pen", 250),
            InvoiceLineAdded("ink", 1000),
            InvoiceIssued(NOON, 1250),
            InvoicePaid(1250, NOON + dt.timedelta(days=1)),
        ],
        "b": [
            InvoiceCreated("b", "c-2", "USD", dt.date(2024, 3, 1)),
            InvoiceLineAdded("desk", 30000),
        ],
        "c": [
            InvoiceCreated("c", "c-1", "EUR", dt.date(2024, 1, 30)),
            InvoiceCancelled("duplicate", dt.datetime(2024, 1, 2, 9, tzinfo=dt.UTC)),
        ],
    }


async def rebuild(store: eskit.EventStore) -> tuple[dict[str, JSONObject], dict[str, int]]:
    """Every invoice's state, and a projection (billed per customer) folded from read_all."""
    repository = Repository(store, invoicing_events, Invoice.model())
    to_snapshot = Invoice.model().to_snapshot
    assert to_snapshot is not None
    states = {}
    for invoice_id in ("a", "b", "c"):
        loaded = await repository.load(invoice_id)
        states[invoice_id] = to_snapshot(loaded.state)
    billed: dict[str, int] = {}
    customer_of: dict[str, str] = {}
    async for recorded in store.read_all():
        for event in invoicing_events.decode(recorded):
            if isinstance(event, InvoiceCreated):
                customer_of[recorded.stream] = event.customer_id
            elif isinstance(event, InvoiceIssued):
                customer = customer_of[recorded.stream]
                billed[customer] = billed.get(customer, 0) + event.total
    return states, billed


@pytest.mark.anyio
async def test_a_mixed_version_log_rebuilds_like_the_same_history_written_today() -> None:
    async with eskit.open_store("memory://") as old_store:
        for stream, written in history_as_written_back_then().items():
            await old_store.append(stream, written, eskit.NO_STREAM)
        from_old_log = await rebuild(old_store)
    async with eskit.open_store("memory://") as new_store:
        repository = Repository(new_store, invoicing_events, Invoice.model())
        for invoice_id, history in history_as_written_today().items():
            await repository.save(invoice_id, history, eskit.NO_STREAM)
        from_new_log = await rebuild(new_store)

    assert from_old_log == from_new_log
    assert from_new_log[0]["a"]["due_date"] == "2024-02-09"
    assert from_new_log[1] == {"c-1": 1250}
