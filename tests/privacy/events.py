"""Example data of the privacy tests: a customer whose personal data is encrypted, written as
each of the three event kinds the registry supports, and an aggregate built from them."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated, ClassVar

import msgspec
import pydantic

from eskit.domain import Aggregate, EventRegistry, applies
from eskit.privacy import Sensitive


class CustomerRegistered(msgspec.Struct, frozen=True):
    """A msgspec Struct: the subject is named by another field."""

    customer_id: str
    email: Annotated[str, Sensitive(subject="customer_id")]
    born: Annotated[dt.date, Sensitive(subject="customer_id", mask=dt.date(1900, 1, 1))]
    country: str


@dataclasses.dataclass(frozen=True)
class CustomerRenamed:
    """A dataclass: the subject is the stream's id (customer-<id>)."""

    name: Annotated[str, Sensitive()]


class CustomerMoved(pydantic.BaseModel):
    """A pydantic model: an optional field masks as None."""

    customer_id: str
    address: Annotated[str | None, Sensitive(subject="customer_id")] = None
    floor: int = 0


class OrderPlaced(msgspec.Struct, frozen=True):
    """No sensitive field: stored as it always was."""

    order_id: str
    amount: int


def registry() -> EventRegistry:
    """A registry of the example events (a fresh one per test: each gets its keyring)."""
    events = EventRegistry()
    events.register("CustomerRegistered")(CustomerRegistered)
    events.register("CustomerRenamed")(CustomerRenamed)
    events.register("CustomerMoved")(CustomerMoved)
    events.register("OrderPlaced")(OrderPlaced)
    return events


class Customer(Aggregate):
    """The customer's state, folded from its events."""

    category: ClassVar[str] = "customer"
    snapshot_every: ClassVar[int | None] = 2
    email: str
    name: str
    address: str | None
    orders: int

    def __init__(self) -> None:
        self.email, self.name, self.address, self.orders = "", "", None, 0

    @applies(CustomerRegistered)
    def _registered(self, event: CustomerRegistered) -> None:
        self.email = event.email

    @applies(CustomerRenamed)
    def _renamed(self, event: CustomerRenamed) -> None:
        self.name = event.name

    @applies(CustomerMoved)
    def _moved(self, event: CustomerMoved) -> None:
        self.address = event.address

    @applies(OrderPlaced)
    def _ordered(self, event: OrderPlaced) -> None:
        self.orders += 1


class Order(Aggregate):
    """An aggregate without personal data: snapshotted as usual."""

    category: ClassVar[str] = "order"
    snapshot_every: ClassVar[int | None] = 2
    total: int

    def __init__(self) -> None:
        self.total = 0

    @applies(OrderPlaced)
    def _placed(self, event: OrderPlaced) -> None:
        self.total += event.amount


BORN = dt.date(1984, 2, 29)


def registered(customer_id: str, email: str) -> CustomerRegistered:
    return CustomerRegistered(customer_id, email, BORN, "NL")
