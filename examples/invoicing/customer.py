"""The Customer, decider style: ``decide(command, state) -> events`` and
``evolve(state, event) -> state``, two pure functions over an immutable state.

An e-mail address belongs to one customer at most. A customer's stream cannot see the
others, so registering also claims the address in a stream of its own, ``email-<address>``,
with ``expected_version=NO_STREAM``, in the same atomic append as ``CustomerRegistered``:
the second claim on an address fails and nothing of its command is written.
"""

from __future__ import annotations

from typing import TypeAlias, assert_never

import msgspec

from eskit.application.commands import AlsoAppend
from eskit.domain import Decider
from eskit.store.model import NO_STREAM
from examples.invoicing.events import CustomerRegistered, CustomerRenamed, EmailClaimed

EMAIL_CATEGORY = "email"
MAX_STREAM_NAME = 200  # eskit's limit on stream names: the claim's stream must fit


class CustomerError(Exception):
    """A command that breaks a customer rule; nothing was recorded."""


class EmailAlreadyUsed(CustomerError):
    """Another customer registered with this e-mail address first."""

    def __init__(self, email: str) -> None:
        self.email = email
        super().__init__(f"the e-mail address {email} is already used by another customer")


# -- commands ---------------------------------------------------------------------------------


class RegisterCustomer(msgspec.Struct, frozen=True):
    customer_id: str
    name: str
    email: str


class ChangeCustomerName(msgspec.Struct, frozen=True):
    customer_id: str
    name: str


CustomerCommand: TypeAlias = RegisterCustomer | ChangeCustomerName
CustomerEvent: TypeAlias = CustomerRegistered | CustomerRenamed


# -- state --------------------------------------------------------------------------------------


class Customer(msgspec.Struct, frozen=True):
    registered: bool = False
    name: str = ""
    email: str = ""


def normalise_email(email: str) -> str:
    """The form an address is compared and claimed in: trimmed, lower case."""
    return email.strip().lower()


def email_stream(email: str) -> str:
    """The stream whose existence says that ``email`` is taken."""
    return f"{EMAIL_CATEGORY}-{normalise_email(email)}"


# -- deciding: the rules, no IO -----------------------------------------------------------------


def decide(command: CustomerCommand, state: Customer) -> list[object]:
    """The events a command leads to, or ``CustomerError``."""
    match command:
        case RegisterCustomer():
            if state.registered:
                raise CustomerError(f"customer {command.customer_id} is already registered")
            name, email = _valid_name(command.name), _valid_email(command.email)
            return [
                CustomerRegistered(command.customer_id, name, email),
                AlsoAppend(
                    stream=email_stream(email),
                    events=[EmailClaimed(command.customer_id)],
                    expected_version=NO_STREAM,
                ),
            ]
        case ChangeCustomerName():
            if not state.registered:
                raise CustomerError(f"customer {command.customer_id} is not registered")
            name = _valid_name(command.name)
            return [] if name == state.name else [CustomerRenamed(name)]
        case _:
            assert_never(command)


def _valid_name(name: str) -> str:
    if not name.strip():
        raise CustomerError("a customer's name must not be blank")
    return name.strip()


def _valid_email(email: str) -> str:
    address = normalise_email(email)
    local, at, domain = address.partition("@")
    if not (local and at and domain) or "@" in domain or any(c.isspace() for c in address):
        raise CustomerError(f"{email!r} is not an e-mail address")
    if len(email_stream(address)) > MAX_STREAM_NAME:
        raise CustomerError(f"the e-mail address {address} is too long")
    return address


# -- evolving: never raises -----------------------------------------------------------------------


def evolve(state: Customer, event: CustomerEvent) -> Customer:
    """The state after one of the customer's events."""
    match event:
        case CustomerRegistered():
            return Customer(registered=True, name=event.name, email=event.email)
        case CustomerRenamed():
            return msgspec.structs.replace(state, name=event.name)
        case _:
            assert_never(event)


customer_decider: Decider[CustomerCommand, Customer] = Decider(
    category="customer", initial_state=Customer, evolve=evolve, decide=decide
)
"""The customer decider: the command bus, the repository and ``Spec`` all take it."""
