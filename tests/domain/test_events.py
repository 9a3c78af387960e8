"""The event registry: stable type names and schema versions, and the codec of each style
of event class (dataclass, msgspec Struct, pydantic model)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import re
import uuid
from typing import Annotated, Any

import msgspec
import pydantic
import pytest

import eskit
from eskit.application import Repository
from eskit.domain import EventRegistry, Model
from eskit.errors import PrivacyError, UnknownEventType, UnsupportedEventVersion
from eskit.privacy import Sensitive
from eskit.store.model import JSONObject

WHEN = dt.datetime(2024, 3, 1, 9, 30, 15, 123456, tzinfo=dt.UTC)


def stored(
    type_name: str, data: JSONObject, schema_version: int | None = None
) -> eskit.RecordedEvent:
    """An event as a store returns it, its data gone through JSON as a store does."""
    metadata: JSONObject = {} if schema_version is None else {"schema_version": schema_version}
    return eskit.RecordedEvent(
        id=uuid.uuid4(),
        stream="test-1",
        version=0,
        position=1,
        type=type_name,
        data=msgspec.json.decode(msgspec.json.encode(data)),
        metadata=metadata,
        recorded_at=WHEN,
    )


def round_trip(events: EventRegistry, event: object) -> list[Any]:
    entry, data = events.encode(event)
    return events.decode(stored(entry.name, data, entry.version))


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass(frozen=True)
class Line:
    sku: str
    quantity: int


@dataclasses.dataclass(frozen=True)
class OrderPlacedDataclass:
    order_id: uuid.UUID
    placed_at: dt.datetime
    ships_on: dt.date
    price: decimal.Decimal
    colour: Colour
    lines: list[Line]
    note: str | None = None


class OrderPlacedStruct(msgspec.Struct, frozen=True):
    order_id: uuid.UUID
    placed_at: dt.datetime
    ships_on: dt.date
    price: decimal.Decimal
    colour: Colour
    lines: list[Line]
    note: str | None = None


class OrderPlacedModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True)

    order_id: uuid.UUID
    placed_at: dt.datetime
    ships_on: dt.date
    price: decimal.Decimal
    colour: Colour
    lines: list[Line]
    note: str | None = None


ORDER: dict[str, Any] = {
    "order_id": uuid.UUID("2f1e0c7a-5b8d-4c1e-9f3a-6d2b7e8a9c01"),
    "placed_at": WHEN,
    "ships_on": dt.date(2024, 3, 4),
    "price": decimal.Decimal("12.30"),
    "colour": Colour.BLUE,
    "lines": [Line("pen", 2), Line("ink", 1)],
}


@pytest.mark.parametrize("event_class", [OrderPlacedDataclass, OrderPlacedStruct, OrderPlacedModel])
def test_every_style_of_event_class_round_trips_through_json(event_class: type[Any]) -> None:
    events = EventRegistry()
    events.register("OrderPlaced")(event_class)
    event = event_class(**ORDER)

    assert round_trip(events, event) == [event]


@pytest.mark.parametrize("event_class", [OrderPlacedDataclass, OrderPlacedStruct, OrderPlacedModel])
def test_stored_data_is_readable_json_of_plain_values(event_class: type[Any]) -> None:
    events = EventRegistry()
    events.register("OrderPlaced", version=3)(event_class)

    entry, data = events.encode(event_class(**ORDER))

    assert (entry.name, entry.version, entry.cls) == ("OrderPlaced", 3, event_class)
    assert data == {
        "order_id": "2f1e0c7a-5b8d-4c1e-9f3a-6d2b7e8a9c01",
        "placed_at": "2024-03-01T09:30:15.123456Z",
        "ships_on": "2024-03-04",
        "price": "12.30",
        "colour": "blue",
        "lines": [{"sku": "pen", "quantity": 2}, {"sku": "ink", "quantity": 1}],
        "note": None,
    }


@dataclasses.dataclass(frozen=True)
class TagsChanged:
    tags: tuple[str, ...]
    counts: dict[int, int]


@pytest.mark.anyio
async def test_tuple_and_int_keyed_fields_can_be_saved_and_read_back() -> None:
    # to_builtins keeps tuples and int keys, which JSON cannot hold exactly: the store
    # refuses such data unless the codec turns them into lists and string keys first.
    events = EventRegistry()
    events.register("TagsChanged")(TagsChanged)
    event = TagsChanged(tags=("a", "b"), counts={1: 2})
    model: Model[int] = Model(category="tags", initial_state=int, evolve=lambda n, e: n + 1)
    async with eskit.open_store("memory://") as store:
        await Repository(store, events, model).save("1", [event], eskit.NO_STREAM)
        (recorded,) = [e async for e in store.read_stream("tags-1")]

    assert events.decode(recorded) == [event]


def test_a_moved_and_renamed_class_reads_what_the_old_class_wrote() -> None:
    old = EventRegistry()

    @old.register("CustomerRegistered")
    @dataclasses.dataclass(frozen=True)
    class CustomerSignedUp:
        customer_id: str
        email: str

    entry, data = old.encode(CustomerSignedUp("c-1", "ann@example.com"))
    written = stored(entry.name, data, entry.version)

    new = EventRegistry()  # the next deployment: another class, in another module

    @new.register("CustomerRegistered")
    class CustomerRegistered(msgspec.Struct, frozen=True):
        customer_id: str
        email: str

    assert written.type == "CustomerRegistered"
    assert new.decode(written) == [CustomerRegistered("c-1", "ann@example.com")]


def test_an_unknown_stored_type_names_the_type() -> None:
    events = EventRegistry()

    with pytest.raises(UnknownEventType, match="InvoiceVoided") as raised:
        events.decode(stored("InvoiceVoided", {"reason": "typo"}))

    assert raised.value.name == "InvoiceVoided"


def test_encoding_an_unregistered_class_names_the_class() -> None:
    @dataclasses.dataclass
    class NotRegistered:
        value: int

    with pytest.raises(UnknownEventType, match="NotRegistered"):
        EventRegistry().encode(NotRegistered(1))


def test_a_schema_version_newer_than_the_code_is_refused_by_name_and_version() -> None:
    events = EventRegistry()

    @events.register("PriceChanged", version=2)
    @dataclasses.dataclass(frozen=True)
    class PriceChanged:
        price: int

    with pytest.raises(UnsupportedEventVersion, match=r"'PriceChanged'.* 3 .*newer") as raised:
        events.decode(stored("PriceChanged", {"price": 1, "currency": "EUR"}, schema_version=3))

    assert (raised.value.name, raised.value.version, raised.value.current) == (
        "PriceChanged",
        3,
        2,
    )


def test_an_event_stored_without_a_schema_version_is_version_1() -> None:
    events = EventRegistry()

    @events.register("Pinged")
    @dataclasses.dataclass(frozen=True)
    class Pinged:
        value: int

    assert events.decode(stored("Pinged", {"value": 7})) == [Pinged(7)]


def test_one_name_for_two_classes_is_refused() -> None:
    events = EventRegistry()

    @events.register("InvoicePaid")
    @dataclasses.dataclass
    class InvoicePaid:
        amount: int

    @dataclasses.dataclass
    class PaymentReceived:
        amount: int

    with pytest.raises(ValueError, match=r"'InvoicePaid' is already registered.*InvoicePaid"):
        events.register("InvoicePaid")(PaymentReceived)
    assert events.names() == ["InvoicePaid"]


def test_one_class_under_two_names_is_refused() -> None:
    events = EventRegistry()

    @events.register("InvoicePaid")
    @dataclasses.dataclass
    class InvoicePaid:
        amount: int

    with pytest.raises(ValueError, match="already registered as a different type"):
        events.register("PaymentReceived")(InvoicePaid)


def test_a_class_that_is_no_dataclass_struct_or_model_is_refused() -> None:
    class Plain:
        def __init__(self, amount: int) -> None:
            self.amount = amount

    with pytest.raises(TypeError, match=r"Plain must be a dataclass, a msgspec\.Struct or a pyd"):
        EventRegistry().register("PlainHappened")(Plain)


@pytest.mark.parametrize("version", [0, -1, True, "2", 1.0])
def test_a_schema_version_must_be_a_positive_int(version: Any) -> None:
    with pytest.raises(ValueError, match="schema version"):
        EventRegistry().register("Pinged", version=version)


@pytest.mark.parametrize("name", ["", "$Internal", "bad\nname"])
def test_a_type_name_must_be_a_valid_name(name: str) -> None:
    with pytest.raises(ValueError, match="event type"):
        EventRegistry().register(name)


@pytest.mark.anyio
async def test_events_saved_by_the_repository_carry_their_schema_version() -> None:
    events = EventRegistry()

    @events.register("ThermostatSet", version=4)
    @dataclasses.dataclass(frozen=True)
    class ThermostatSet:
        celsius: int

    @events.register("ThermostatOff")
    @dataclasses.dataclass(frozen=True)
    class ThermostatOff:
        pass

    model: Model[int] = Model(category="thermostat", initial_state=int, evolve=lambda n, e: n)
    async with eskit.open_store("memory://") as store:
        repository = Repository(store, events, model)
        await repository.save(
            "kitchen", [ThermostatSet(21), ThermostatOff()], eskit.NO_STREAM, metadata={"by": "me"}
        )
        written = [e async for e in store.read_stream("thermostat-kitchen")]

    assert [(e.type, e.data, e.metadata) for e in written] == [
        ("ThermostatSet", {"celsius": 21}, {"by": "me", "schema_version": 4}),
        ("ThermostatOff", {}, {"by": "me", "schema_version": 1}),
    ]


# -- check: what a raw append must pass ---------------------------------------------------


def _checking_registry() -> EventRegistry:
    registry = EventRegistry()

    @registry.register("Placed", version=2)
    class Placed(msgspec.Struct, frozen=True):
        order_id: str
        total: int

    @registry.upcasters.register("Placed", from_version=1)
    def _v1(data: JSONObject) -> JSONObject:
        return {"order_id": data["id"], "total": data["total"]}

    @registry.register("Secret")
    class Secret(msgspec.Struct, frozen=True):
        name: Annotated[str, Sensitive()]

    return registry


def test_check_passes_what_decodes_today_or_through_the_upcasters() -> None:
    registry = _checking_registry()
    registry.check("Placed", {"order_id": "1", "total": 5}, {"schema_version": 2})
    registry.check("Placed", {"id": "1", "total": 5}, {})  # no schema_version: version 1


@pytest.mark.parametrize(
    ("name", "data", "metadata", "error", "says"),
    [
        ("Nope", {}, {}, UnknownEventType, "'Nope' is not registered"),
        ("Placed", {"order_id": "1"}, {"schema_version": 2}, ValueError, "`total`"),
        ("Placed", {"order_id": "1", "total": "5"}, {"schema_version": 2}, ValueError, "$.total"),
        ("Placed", {"order_id": "1", "total": 5}, {}, KeyError, "id"),  # v1 has no order_id
        ("Placed", {}, {"schema_version": 3}, UnsupportedEventVersion, "newer"),
        ("Placed", {}, {"schema_version": True}, ValueError, "schema_version"),
        ("Secret", {"name": "Ada"}, {}, PrivacyError, "sensitive fields (name)"),
    ],
    ids=["unknown", "missing", "wrong_type", "old_shape", "newer", "bool_version", "sensitive"],
)
def test_check_refuses_what_no_reader_could_decode(
    name: str, data: JSONObject, metadata: JSONObject, error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=re.escape(says)):
        _checking_registry().check(name, data, metadata)
