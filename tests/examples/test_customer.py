"""The customer decider: its rules as given/when/then specs, then the one rule no single
stream can keep — an e-mail address belongs to one customer — through the real command bus on
a SQLite file."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from examples.invoicing.app import invoicing
from examples.invoicing.customer import (
    ChangeCustomerName,
    CustomerError,
    EmailAlreadyUsed,
    RegisterCustomer,
    customer_decider,
)
from examples.invoicing.events import CustomerRegistered, CustomerRenamed, EmailClaimed

import eskit
from eskit.application import CommandBus
from eskit.application.commands import AlsoAppend
from eskit.testing.specs import Spec

TIMEOUT = 30.0

customer = Spec(customer_decider)

registered = CustomerRegistered("c-1", "Ada Lovelace", "ada@example.com")


def claim(email: str, customer_id: str) -> AlsoAppend:
    return AlsoAppend(
        stream=f"email-{email}",
        events=[EmailClaimed(customer_id)],
        expected_version=eskit.NO_STREAM,
    )


# -- the decider's rules -------------------------------------------------------------------------


def test_registering_claims_the_email_address_in_the_same_append() -> None:
    customer.given().when(RegisterCustomer("c-1", "Ada Lovelace", "ada@example.com")).then(
        registered, claim("ada@example.com", "c-1")
    )


def test_the_email_address_is_claimed_trimmed_and_in_lower_case() -> None:
    customer.given().when(RegisterCustomer("c-1", " Ada Lovelace ", " Ada@Example.COM ")).then(
        registered, claim("ada@example.com", "c-1")
    )


def test_a_customer_is_registered_once() -> None:
    customer.given(registered).when(
        RegisterCustomer("c-1", "Ada Lovelace", "ada@example.com")
    ).then_raises(CustomerError, match="already registered")


@pytest.mark.parametrize("email", ["ada", "ada@", "@example.com", "a da@example.com", "a@b@c"])
def test_an_email_address_must_look_like_one(email: str) -> None:
    customer.given().when(RegisterCustomer("c-1", "Ada", email)).then_raises(
        CustomerError, match="is not an e-mail address"
    )


def test_an_email_address_too_long_for_a_stream_name_is_refused() -> None:
    customer.given().when(RegisterCustomer("c-1", "Ada", "a" * 190 + "@example.com")).then_raises(
        CustomerError, match="too long"
    )


def test_a_name_must_not_be_blank() -> None:
    customer.given().when(RegisterCustomer("c-1", "  ", "ada@example.com")).then_raises(
        CustomerError, match="must not be blank"
    )


def test_a_customer_can_change_name() -> None:
    customer.given(registered).when(ChangeCustomerName("c-1", "Ada King")).then(
        CustomerRenamed("Ada King")
    )


def test_the_new_name_is_the_state() -> None:
    customer.given(registered).when(ChangeCustomerName("c-1", "Ada King")).then_state(
        lambda state: state.name == "Ada King" and state.email == "ada@example.com"
    )


def test_changing_to_the_same_name_records_nothing() -> None:
    customer.given(registered).when(ChangeCustomerName("c-1", "Ada Lovelace")).then_nothing()


def test_an_unregistered_customer_cannot_change_name() -> None:
    customer.given().when(ChangeCustomerName("c-1", "Ada King")).then_raises(
        CustomerError, match="not registered"
    )


# -- unique e-mail addresses through the command bus on SQLite ---------------------------------


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[CommandBus]:
    async with eskit.open_store(f"sqlite:///{tmp_path / 'events.db'}") as store:
        yield invoicing(store)


async def stream_types(bus: CommandBus, stream: str) -> list[str]:
    return [e.type async for e in bus.store.read_stream(stream)]


@pytest.mark.anyio
async def test_a_second_customer_with_the_same_email_is_refused(bus: CommandBus) -> None:
    await bus.send(RegisterCustomer("c-1", "Ada Lovelace", "ada@example.com"))

    with pytest.raises(EmailAlreadyUsed, match=r"ada@example\.com is already used"):
        await bus.send(RegisterCustomer("c-2", "Ada L.", " ADA@example.com"))

    assert await stream_types(bus, "customer-c-2") == []  # nothing of the command was written
    assert await stream_types(bus, "email-ada@example.com") == ["EmailClaimed"]


@pytest.mark.anyio
async def test_registration_and_claim_are_one_atomic_append(bus: CommandBus) -> None:
    result = await bus.send(RegisterCustomer("c-1", "Ada Lovelace", "ada@example.com"))

    logged = [e async for e in bus.store.read_all()]
    assert result.position is not None
    assert [(e.stream, e.type) for e in logged] == [
        ("customer-c-1", "CustomerRegistered"),
        ("email-ada@example.com", "EmailClaimed"),
    ]
    assert [e.position for e in logged] == [result.position, result.position + 1]
    assert logged[0].metadata["correlation_id"] == logged[1].metadata["correlation_id"]


@pytest.mark.anyio
async def test_of_two_concurrent_registrations_with_one_email_one_wins(bus: CommandBus) -> None:
    outcomes = await asyncio.wait_for(
        asyncio.gather(
            bus.send(RegisterCustomer("c-1", "Ada", "ada@example.com")),
            bus.send(RegisterCustomer("c-2", "Ada", "ada@example.com")),
            return_exceptions=True,
        ),
        TIMEOUT,
    )

    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(refused) == 1
    assert isinstance(refused[0], EmailAlreadyUsed)
    claims = [e async for e in bus.store.read_stream("email-ada@example.com")]
    assert len(claims) == 1


@pytest.mark.anyio
async def test_a_retried_registration_is_replayed_not_refused(bus: CommandBus) -> None:
    command_id = uuid.uuid4()
    command = RegisterCustomer("c-1", "Ada Lovelace", "ada@example.com")
    first = await bus.send(command, command_id=command_id)

    again = await bus.send(command, command_id=command_id)

    assert again.replayed
    assert (again.version, again.position, again.events) == (
        first.version,
        first.position,
        [registered],
    )
    assert await stream_types(bus, "email-ada@example.com") == ["EmailClaimed"]


@pytest.mark.anyio
async def test_a_customer_renamed_through_the_bus_loads_with_the_new_name(
    bus: CommandBus,
) -> None:
    await bus.send(RegisterCustomer("c-1", "Ada Lovelace", "ada@example.com"))
    await bus.send(ChangeCustomerName("c-1", "Ada King"))

    loaded = await bus.repository(customer_decider).load("c-1")

    assert (loaded.version, loaded.state.name, loaded.state.email) == (
        1,
        "Ada King",
        "ada@example.com",
    )
