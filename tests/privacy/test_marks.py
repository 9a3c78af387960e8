"""Marking fields sensitive: on dataclasses, msgspec Structs and pydantic models, with masks
checked at registration, and marks eskit would not honour refused loudly."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated

import msgspec
import pytest

from eskit.domain import EventRegistry
from eskit.domain.sensitive import SensitiveField
from eskit.privacy import FORGOTTEN, Sensitive
from tests.privacy import events as examples


def fields_of(cls: type) -> tuple[SensitiveField, ...]:
    registry = EventRegistry()
    registry.register("Example")(cls)
    return registry.by_name("Example").sensitive


def test_each_event_kind_declares_its_sensitive_fields() -> None:
    events = examples.registry()
    assert events.by_name("CustomerRegistered").sensitive == (
        SensitiveField("email", "customer_id", FORGOTTEN),
        SensitiveField("born", "customer_id", "1900-01-01"),
    )
    assert events.by_name("CustomerRenamed").sensitive == (SensitiveField("name", None, FORGOTTEN),)
    assert events.by_name("CustomerMoved").sensitive == (
        SensitiveField("address", "customer_id", None),
    )
    assert events.by_name("OrderPlaced").sensitive == ()


def test_a_renamed_struct_field_is_named_as_stored() -> None:
    class Renamed(msgspec.Struct, rename="camel"):
        customer_id: str
        home_address: Annotated[str, Sensitive(subject="customer_id")]

    assert fields_of(Renamed) == (SensitiveField("homeAddress", "customerId", FORGOTTEN),)


def test_a_field_that_is_not_a_string_needs_a_mask() -> None:
    @dataclasses.dataclass
    class Salary:
        amount: Annotated[int, Sensitive()]

    with pytest.raises(TypeError, match=r"Salary.amount is Sensitive but not a str: give"):
        fields_of(Salary)


def test_a_mask_must_be_a_value_of_the_field_type() -> None:
    @dataclasses.dataclass
    class Born:
        day: Annotated[dt.date, Sensitive(mask="soon")]

    with pytest.raises(TypeError, match=r"Born.day: the mask 'soon' is not a valid value"):
        fields_of(Born)


def test_a_mark_inside_the_type_is_refused() -> None:
    @dataclasses.dataclass
    class Hidden:
        email: Annotated[str, Sensitive()] | None

    with pytest.raises(TypeError, match=r"Sensitive must mark the whole field"):
        fields_of(Hidden)


def test_the_subject_must_be_a_field() -> None:
    @dataclasses.dataclass
    class Typo:
        email: Annotated[str, Sensitive(subject="customer")]

    with pytest.raises(TypeError, match=r"subject 'customer' is not a field of"):
        fields_of(Typo)


def test_a_field_marked_twice_is_refused() -> None:
    @dataclasses.dataclass
    class Twice:
        email: Annotated[str, Sensitive(), Sensitive()]

    with pytest.raises(TypeError, match=r"marked Sensitive twice"):
        fields_of(Twice)
