"""The digest of a command's arguments: equal for a retry of the same command, whatever
release of its class sent it; different for any other arguments."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

import msgspec
import pytest

import eskit
from eskit.application import CommandBus
from eskit.application.idempotency import command_digest
from tests.application.test_commands import Deposited, account_decider, events

pytestmark = pytest.mark.anyio


class Address(msgspec.Struct, frozen=True):
    city: str


class Move(msgspec.Struct, frozen=True):
    person: str
    to: Address
    extra: dict[str, int] = {}
    now: dt.datetime | None = None


# The next release: fields in another order, and new fields with defaults, nested too.
AddressLater = msgspec.defstruct(
    "Address", [("zip", str, ""), ("city", str)], frozen=True, kw_only=True
)
MoveLater = msgspec.defstruct(
    "Move",
    [
        ("to", AddressLater),
        ("person", str),
        ("movers", int, 0),
        ("extra", dict[str, int], {}),
        ("now", dt.datetime | None, None),
    ],
    frozen=True,
    kw_only=True,
)


def test_a_later_release_of_the_class_gives_the_same_digest() -> None:
    first = Move("ann", Address("Oslo"), {"b": 2, "a": 1})
    later = MoveLater(to=AddressLater(city="Oslo"), person="ann", extra={"a": 1, "b": 2})
    assert command_digest(first) == command_digest(later)


@pytest.mark.parametrize(
    "other",
    [
        Move("bob", Address("Oslo")),
        Move("ann", Address("Bergen")),
        Move("ann", Address("Oslo"), {"a": 1}),
    ],
)
def test_other_arguments_give_another_digest(other: Move) -> None:
    assert command_digest(Move("ann", Address("Oslo"))) != command_digest(other)


def test_a_field_set_to_a_value_other_than_its_default_counts() -> None:
    oslo = AddressLater(city="Oslo")
    plain = command_digest(MoveLater(to=oslo, person="ann"))
    assert command_digest(MoveLater(to=oslo, person="ann", movers=2)) != plain
    assert (
        command_digest(MoveLater(to=AddressLater(zip="0150", city="Oslo"), person="ann")) != plain
    )


def test_the_time_a_command_is_sent_does_not_count() -> None:
    noon = dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)
    sent = Move("ann", Address("Oslo"), now=noon)
    assert command_digest(sent) == command_digest(Move("ann", Address("Oslo")))
    assert command_digest(sent, retry_may_change=()) != command_digest(Move("ann", Address("Oslo")))


@dataclasses.dataclass(frozen=True)
class Deposit:
    account_id: str
    amount: int
    memo: object = None
    sent_at: str = ""


def deposit_bus(store: eskit.EventStore, **options: Any) -> CommandBus:
    bus = CommandBus(store, events)
    bus.register(
        Deposit,
        account_decider,
        aggregate_id=lambda c: c.account_id,
        handle=lambda c, s: [Deposited(c.amount)],
        **options,
    )
    return bus


async def test_the_fields_a_retry_may_change_are_named_per_command(
    store: eskit.EventStore,
) -> None:
    bus = deposit_bus(store, retry_may_change=("sent_at",))
    command_id = uuid.uuid4()
    first = await bus.send(Deposit("a", 5, sent_at="09:00"), command_id=command_id)

    again = await bus.send(Deposit("a", 5, sent_at="09:05"), command_id=command_id)

    assert (again.position, again.replayed) == (first.position, True)


async def test_a_command_with_an_id_must_hold_json_values(store: eskit.EventStore) -> None:
    """Its digest could not be computed, so its retries not be recognised: refused before
    anything is written. Without an id nothing needs recognising."""
    bus = deposit_bus(store)

    with pytest.raises(TypeError, match="Deposit: a command sent with a command id must hold"):
        await bus.send(Deposit("a", 5, memo=object()), command_id=uuid.uuid4())

    assert await store.last_position() == 0
    await bus.send(Deposit("a", 5, memo=object()))
    assert await store.last_position() == 1
