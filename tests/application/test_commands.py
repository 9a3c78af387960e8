"""The command bus on every backend: both aggregate styles, retries on conflict, idempotent
command ids, correlation metadata, middleware, and atomic appends to other streams
(correctness.md §3)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import anyio
import pytest
from examples.invoicing.app import invoicing
from examples.invoicing.commands import AddInvoiceLine, CreateInvoice, IssueInvoice, PayInvoice
from examples.invoicing.customer import Customer, RegisterCustomer, customer_decider
from examples.invoicing.events import CustomerRegistered, EmailClaimed, InvoicePaid
from examples.invoicing.events import events as invoicing_events
from examples.invoicing.invoice import Invoice, InvoiceError

import eskit
from eskit.application import CommandBus, CommandContext, CommandResult
from eskit.application.commands import AlsoAppend
from eskit.application.idempotency import command_digest
from eskit.domain import Aggregate, Decider, EventRegistry, Model, applies, struct_snapshots
from eskit.errors import ConcurrencyError, DomainError

pytestmark = pytest.mark.anyio

Style = Literal["decider", "class"]
STYLES = pytest.mark.parametrize("style", ["decider", "class"])
NOON = dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)


# -- a small account, in both styles --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Deposit:
    account_id: str
    amount: int


@dataclasses.dataclass(frozen=True)
class Withdraw:
    account_id: str
    amount: int


@dataclasses.dataclass(frozen=True)
class Deposited:
    amount: int


@dataclasses.dataclass(frozen=True)
class Withdrew:
    amount: int


events = EventRegistry()
events.register("Deposited")(Deposited)
events.register("Withdrew", version=2)(Withdrew)


class InsufficientFunds(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class Balance:
    balance: int = 0


def decide(command: Deposit | Withdraw, state: Balance) -> list[object]:
    match command:
        case Deposit(amount=amount):
            return [Deposited(amount)]
        case Withdraw(amount=amount):
            if amount > state.balance:
                raise InsufficientFunds(f"{amount} > {state.balance}")
            return [Withdrew(amount)]


def evolve(state: Balance, event: Any) -> Balance:
    match event:
        case Deposited(amount=amount):
            return Balance(state.balance + amount)
        case Withdrew(amount=amount):
            return Balance(state.balance - amount)
    return state


account_decider: Decider[Deposit | Withdraw, Balance] = Decider(
    category="account",
    initial_state=Balance,
    evolve=evolve,
    decide=decide,
    snapshot_every=2,
    **struct_snapshots(Balance),
)


class Account(Aggregate):
    category = "account"
    snapshot_every = 2

    balance: int

    def __init__(self) -> None:
        self.balance = 0

    def deposit(self, amount: int) -> None:
        self.record(Deposited(amount))

    def withdraw(self, amount: int) -> None:
        if amount > self.balance:
            raise InsufficientFunds(f"{amount} > {self.balance}")
        self.record(Withdrew(amount))

    @applies(Deposited)
    def _deposited(self, event: Deposited) -> None:
        self.balance += event.amount

    @applies(Withdrew)
    def _withdrew(self, event: Withdrew) -> None:
        self.balance -= event.amount


def handle_account(command: Deposit | Withdraw, account: Account) -> None:
    match command:
        case Deposit(amount=amount):
            account.deposit(amount)
        case Withdraw(amount=amount):
            account.withdraw(amount)


Handle = Callable[[Any, Any], Any]
FindEvent = Callable[[uuid.UUID], Awaitable[eskit.RecordedEvent | None]]


def target_of(style: Style) -> Model[Any]:
    return account_decider if style == "decider" else Account.model()


def make_bus(
    store: eskit.EventStore,
    style: Style,
    wrap: Callable[[Handle], Handle] | None = None,
    **options: Any,
) -> CommandBus:
    """The account commands routed to the account in ``style``; ``wrap`` the handler."""
    bus = CommandBus(store, events, **options)
    handle: Handle = account_decider.decide if style == "decider" else handle_account
    if wrap is not None:
        handle = wrap(handle)
    target: Model[Any] | type[Aggregate] = account_decider if style == "decider" else Account
    bus.register(Deposit, target, aggregate_id=account_id, handle=handle)
    bus.register(Withdraw, target, aggregate_id=account_id, handle=handle)
    return bus


def account_id(command: Deposit | Withdraw) -> str:
    return command.account_id


async def balance_of(bus: CommandBus, style: Style, account_id: str) -> tuple[int, int | None]:
    loaded = await bus.repository(target_of(style)).load(account_id, missing_ok=True)
    return loaded.state.balance, loaded.version


async def stream_events(store: eskit.EventStore, stream: str) -> list[eskit.RecordedEvent]:
    return [e async for e in store.read_stream(stream)]


def interfering(
    store: eskit.EventStore, times: int
) -> tuple[Callable[[Handle], Handle], list[int]]:
    """A handler wrapper that, on its first ``times`` calls, lets another writer append to the
    same stream between the bus's load and its append; it lists the balance of each call."""
    calls: list[int] = []

    def wrap(handle: Handle) -> Handle:
        async def run(command: Any, state: Any) -> Any:
            calls.append(state.balance)
            if len(calls) <= times:
                someone_else = eskit.NewEvent("Deposited", {"amount": 1000}, {"by": "other"})
                await store.append(f"account-{command.account_id}", [someone_else])
            return handle(command, state)

        return run

    return wrap, calls


# -- handling ---------------------------------------------------------------------------------


@STYLES
async def test_a_command_appends_what_the_aggregate_decides(
    store: eskit.EventStore, style: Style
) -> None:
    bus = make_bus(store, style)

    first = await bus.send(Deposit("a", 70))
    second = await bus.send(Withdraw("a", 30))

    assert (first.stream, first.version, first.events, first.replayed) == (
        "account-a",
        0,
        [Deposited(70)],
        False,
    )
    assert (second.version, second.position, second.events) == (1, 2, [Withdrew(30)])
    assert await balance_of(bus, style, "a") == (40, 1)


@STYLES
async def test_a_refused_command_raises_and_writes_nothing(
    store: eskit.EventStore, style: Style
) -> None:
    bus = make_bus(store, style)
    await bus.send(Deposit("a", 10))

    with pytest.raises(InsufficientFunds):
        await bus.send(Withdraw("a", 11))

    assert [e.type for e in await stream_events(store, "account-a")] == ["Deposited"]


@STYLES
async def test_async_handlers_are_awaited(store: eskit.EventStore, style: Style) -> None:
    def wrap(handle: Handle) -> Handle:
        async def run(command: Any, state: Any) -> Any:
            await asyncio.sleep(0)
            return handle(command, state)

        return run

    bus = make_bus(store, style, wrap=wrap)

    result = await bus.send(Deposit("a", 5))

    assert result.events == [Deposited(5)]
    assert await balance_of(bus, style, "a") == (5, 0)


@STYLES
async def test_a_plain_handler_returning_an_awaitable_has_it_awaited(
    store: eskit.EventStore, style: Style
) -> None:
    def wrap(handle: Handle) -> Handle:
        async def later(command: Any, state: Any) -> Any:
            await asyncio.sleep(0)
            return handle(command, state)

        def run(command: Any, state: Any) -> Any:  # no `async def`: the bus sees a plain one
            return later(command, state)

        return run

    bus = make_bus(store, style, wrap=wrap)

    await bus.send(Deposit("a", 5))
    result = await bus.send(Deposit("a", 2))  # after a read: SQLite's in its worker thread

    assert result.events == [Deposited(2)]
    assert await balance_of(bus, style, "a") == (7, 1)


async def test_a_class_style_handler_may_use_the_aggregates_methods_and_return_none(
    store: eskit.EventStore,
) -> None:
    bus = invoicing(store)

    await bus.send(CreateInvoice("inv-1", "c-1", "EUR", dt.date(2024, 4, 1)))
    await bus.send(AddInvoiceLine("inv-1", "pen", 250, "EUR"))
    await bus.send(IssueInvoice("inv-1", NOON))
    paid = await bus.send(PayInvoice("inv-1", 250, NOON))
    invoice = await bus.repository(Invoice.model()).load("inv-1")

    assert (paid.stream, paid.version, paid.events) == (
        "invoice-inv-1",
        3,
        [InvoicePaid(250, NOON)],
    )
    assert (invoice.state.status, invoice.state.paid, invoice.version) == ("paid", 250, 3)


async def test_a_command_that_decides_nothing_writes_nothing(store: eskit.EventStore) -> None:
    bus = CommandBus(store, events)
    bus.register(
        Deposit, account_decider, aggregate_id=lambda c: c.account_id, handle=lambda c, s: []
    )

    result = await bus.send(Deposit("a", 1))

    assert result == CommandResult("account-a", None, None, [])
    assert await store.stream_version("account-a") is None


@STYLES
async def test_snapshots_are_taken_through_the_bus(store: eskit.EventStore, style: Style) -> None:
    bus = make_bus(store, style)

    for amount in (1, 2, 3, 4, 5):
        await bus.send(Deposit("a", amount))
    await bus.repository(target_of(style)).wait_for_snapshots()
    snapshot = await store.load_snapshot("account-a", 1)

    assert snapshot is not None
    assert (snapshot.version, snapshot.state) == (3, {"balance": 10})
    assert await balance_of(bus, style, "a") == (15, 4)


# -- conflicts --------------------------------------------------------------------------------


@STYLES
@pytest.mark.parametrize("conflicts", [1, 3])
async def test_a_conflict_is_retried_and_the_command_succeeds(
    store: eskit.EventStore, style: Style, conflicts: int
) -> None:
    wrap, calls = interfering(store, times=conflicts)
    bus = make_bus(store, style, wrap=wrap, max_attempts=conflicts + 1, backoff=0)

    result = await bus.send(Deposit("a", 5))

    assert calls == [1000 * n for n in range(conflicts + 1)]  # each attempt reloads
    assert (result.version, result.events) == (conflicts, [Deposited(5)])
    assert await balance_of(bus, style, "a") == (1000 * conflicts + 5, conflicts)


@STYLES
async def test_after_max_attempts_conflicts_the_command_fails_and_writes_nothing(
    store: eskit.EventStore, style: Style
) -> None:
    wrap, calls = interfering(store, times=3)
    bus = make_bus(store, style, wrap=wrap, max_attempts=3, backoff=0)

    with pytest.raises(ConcurrencyError, match="'account-a' changed under the command 3 times"):
        await bus.send(Deposit("a", 5))

    written = await stream_events(store, "account-a")
    assert len(calls) == 3
    assert [e.metadata for e in written] == [{"by": "other"}] * 3


async def test_concurrent_commands_on_one_aggregate_all_succeed(store: eskit.EventStore) -> None:
    bus = make_bus(store, "decider", max_attempts=12, backoff=0.0005)

    results = await asyncio.gather(*(bus.send(Deposit("a", amount)) for amount in range(1, 7)))

    assert sorted(r.version for r in results if r.version is not None) == list(range(6))
    assert await balance_of(bus, "decider", "a") == (21, 5)


# -- idempotent command ids -------------------------------------------------------------------


@STYLES
async def test_a_command_sent_again_with_its_id_is_replayed_not_handled_again(
    store: eskit.EventStore, style: Style
) -> None:
    wrap, calls = interfering(store, times=0)
    bus = make_bus(store, style, wrap=wrap)
    command_id = uuid.uuid4()

    first = await bus.send(Deposit("a", 5), command_id=command_id)
    again = await bus.send(Deposit("a", 5), command_id=command_id)

    assert (again.stream, again.version, again.position, again.events) == (
        first.stream,
        first.version,
        first.position,
        first.events,
    )
    assert (first.replayed, again.replayed) == (False, True)
    assert len(calls) == 1
    assert len(await stream_events(store, "account-a")) == 1


async def test_the_replay_is_the_original_result_after_later_commands(
    store: eskit.EventStore,
) -> None:
    bus = make_bus(store, "decider")
    command_id = uuid.uuid4()
    first = await bus.send(Deposit("a", 5), command_id=command_id)
    await bus.send(Deposit("a", 7), command_id=uuid.uuid4())
    await bus.send(Deposit("a", 9))

    again = await bus.send(Deposit("a", 5), command_id=command_id)

    assert (again.version, again.position, again.events) == (0, first.position, [Deposited(5)])
    assert await balance_of(bus, "decider", "a") == (21, 2)


async def test_a_command_of_several_events_is_replayed_whole(store: eskit.EventStore) -> None:
    bus = CommandBus(store, events)
    bus.register(
        Deposit,
        account_decider,
        aggregate_id=lambda c: c.account_id,
        handle=lambda c, s: [Deposited(c.amount), Withdrew(1), Deposited(2)],
    )
    await bus.send(Deposit("a", 1))
    command_id = uuid.uuid4()

    first = await bus.send(Deposit("a", 10), command_id=command_id)
    again = await bus.send(Deposit("a", 10), command_id=command_id)

    assert (again.version, again.position, again.replayed) == (5, first.position, True)
    assert again.events == [Deposited(10), Withdrew(1), Deposited(2)]


async def test_a_retried_payment_is_replayed_although_paying_again_would_fail(
    store: eskit.EventStore,
) -> None:
    bus = invoicing(store)
    await bus.send(CreateInvoice("inv-1", "c-1", "EUR", dt.date(2024, 4, 1)))
    await bus.send(AddInvoiceLine("inv-1", "pen", 250, "EUR"))
    await bus.send(IssueInvoice("inv-1", NOON))
    pay = PayInvoice("inv-1", 250, NOON)
    command_id = uuid.uuid4()

    first = await bus.send(pay, command_id=command_id)
    again = await bus.send(pay, command_id=command_id)

    assert (again.version, again.position, again.replayed) == (first.version, first.position, True)
    assert [e.type for e in await stream_events(store, "invoice-inv-1")].count("InvoicePaid") == 1
    with pytest.raises(InvoiceError, match="a paid invoice cannot be paid"):
        await bus.send(pay, command_id=uuid.uuid4())  # a new payment is a new command


async def test_a_retry_is_replayed_after_its_events_were_hidden_from_the_stream(
    store: eskit.EventStore,
) -> None:
    bus = make_bus(store, "decider")
    command_id = uuid.uuid4()
    first = await bus.send(Deposit("a", 5), command_id=command_id)
    await bus.send(Deposit("a", 6))
    await store.set_stream_metadata("account-a", eskit.StreamMetadata(max_count=1))

    again = await bus.send(Deposit("a", 5), command_id=command_id)

    assert (again.version, again.position, again.replayed) == (first.version, first.position, True)
    assert await store.last_position() == 2


async def test_commands_without_an_id_are_each_handled(store: eskit.EventStore) -> None:
    bus = make_bus(store, "decider")

    await bus.send(Deposit("a", 5))
    await bus.send(Deposit("a", 5))

    assert await balance_of(bus, "decider", "a") == (10, 1)


async def test_concurrent_sends_of_one_command_id_write_its_events_once(
    store: eskit.EventStore,
) -> None:
    bus = make_bus(store, "decider", backoff=0.0005)
    command_id = uuid.uuid4()

    results = await asyncio.gather(
        *(bus.send(Deposit("a", 5), command_id=command_id) for _ in range(5))
    )

    assert {(r.version, r.position) for r in results} == {(0, 1)}
    assert len(await stream_events(store, "account-a")) == 1


async def test_a_retry_racing_the_original_is_replayed_not_refused(
    store: eskit.EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client retries while its first request is still in flight: the retry looks for the
    # command's events just before the original writes them, then loads the paid invoice.
    bus = invoicing(store)
    await bus.send(CreateInvoice("inv-1", "c-1", "EUR", dt.date(2024, 4, 1)))
    await bus.send(AddInvoiceLine("inv-1", "pen", 250, "EUR"))
    await bus.send(IssueInvoice("inv-1", NOON))
    pay, command_id = PayInvoice("inv-1", 250, NOON), uuid.uuid4()
    # getattr: type-checks before and after EventStore.find_event lands.
    find_event: FindEvent = getattr(store, "find_event")  # noqa: B009
    retry_looked, original_done = asyncio.Event(), asyncio.Event()
    tasks: dict[str, asyncio.Task[CommandResult]] = {}

    async def interleaved(event_id: uuid.UUID) -> eskit.RecordedEvent | None:
        found = await find_event(event_id)
        if asyncio.current_task() is tasks["original"]:
            await retry_looked.wait()  # the original writes only after the retry has looked
        elif not retry_looked.is_set():
            retry_looked.set()  # the retry found nothing; it goes on after the original
            await original_done.wait()
        return found

    monkeypatch.setattr(store, "find_event", interleaved)

    async def original() -> CommandResult:
        try:
            return await bus.send(pay, command_id=command_id)
        finally:
            original_done.set()

    with anyio.fail_after(10):
        tasks["original"] = asyncio.create_task(original())
        retry = await bus.send(pay, command_id=command_id)
        first = await tasks["original"]

    assert (retry.version, retry.position) == (first.version, first.position)
    assert [e.type for e in await stream_events(store, "invoice-inv-1")].count("InvoicePaid") == 1


# -- metadata ---------------------------------------------------------------------------------


async def test_every_event_carries_correlation_causation_command_and_schema_version(
    store: eskit.EventStore,
) -> None:
    bus = CommandBus(store, events)
    bus.register(
        Deposit,
        account_decider,
        aggregate_id=lambda c: c.account_id,
        handle=lambda c, s: [Deposited(c.amount), Withdrew(1)],
    )
    command_id = uuid.uuid4()

    await bus.send(
        Deposit("a", 5),
        command_id=command_id,
        correlation_id="order-77",
        causation_id="event-12",
        metadata={"user": "ann"},
    )
    written = await stream_events(store, "account-a")

    common = {
        "user": "ann",
        "correlation_id": "order-77",
        "causation_id": "event-12",
        "command": "Deposit",
        "command_id": str(command_id),
        "command_digest": command_digest(Deposit("a", 5)),
    }
    assert [e.metadata for e in written] == [
        {**common, "schema_version": 1},
        {**common, "schema_version": 2},
    ]


async def test_a_command_without_ids_correlates_and_causes_by_its_own_id(
    store: eskit.EventStore,
) -> None:
    bus = make_bus(store, "class")

    await bus.send(Deposit("a", 5))
    (event,) = await stream_events(store, "account-a")

    command_id = event.metadata["command_id"]
    assert uuid.UUID(command_id)
    assert event.metadata["correlation_id"] == event.metadata["causation_id"] == command_id
    assert event.metadata["command"] == "Deposit"


async def test_the_correlation_id_defaults_to_the_given_command_id(
    store: eskit.EventStore,
) -> None:
    bus = make_bus(store, "decider")
    command_id = uuid.uuid4()

    await bus.send(Deposit("a", 5), command_id=command_id, causation_id="event-3")
    (event,) = await stream_events(store, "account-a")

    assert (event.metadata["correlation_id"], event.metadata["causation_id"]) == (
        str(command_id),
        "event-3",
    )


# -- middleware -------------------------------------------------------------------------------

Next = Callable[[CommandContext], Awaitable[CommandResult]]


async def test_middleware_runs_in_order_around_the_command(store: eskit.EventStore) -> None:
    seen: list[str] = []

    def named(name: str) -> Callable[[CommandContext, Next], Awaitable[CommandResult]]:
        async def middleware(context: CommandContext, call_next: Next) -> CommandResult:
            seen.append(f"{name} before")
            result = await call_next(context)
            seen.append(f"{name} after version {result.version}")
            return result

        return middleware

    def wrap(handle: Handle) -> Handle:
        def run(command: Any, state: Any) -> Any:
            seen.append("handler")
            return handle(command, state)

        return run

    bus = make_bus(store, "decider", wrap=wrap, middleware=[named("outer"), named("inner")])

    await bus.send(Deposit("a", 5))

    assert seen == [
        "outer before",
        "inner before",
        "handler",
        "inner after version 0",
        "outer after version 0",
    ]


async def test_middleware_adds_metadata_to_every_event(store: eskit.EventStore) -> None:
    async def tenant(context: CommandContext, call_next: Next) -> CommandResult:
        context.metadata["tenant"] = "acme"
        return await call_next(context)

    async def trace(context: CommandContext, call_next: Next) -> CommandResult:
        return await call_next(
            dataclasses.replace(context, metadata={**context.metadata, "trace": "t-1"})
        )

    bus = make_bus(store, "class", middleware=[tenant, trace])

    await bus.send(Deposit("a", 5), metadata={"user": "ann"})
    (event,) = await stream_events(store, "account-a")

    assert {k: event.metadata[k] for k in ("user", "tenant", "trace")} == {
        "user": "ann",
        "tenant": "acme",
        "trace": "t-1",
    }


async def test_middleware_can_refuse_a_command(store: eskit.EventStore) -> None:
    async def no_large_amounts(context: CommandContext, call_next: Next) -> CommandResult:
        command = context.command
        if isinstance(command, Deposit) and command.amount > 100:
            raise PermissionError("deposits above 100 need approval")
        return await call_next(context)

    wrap, calls = interfering(store, times=0)
    bus = make_bus(store, "decider", wrap=wrap, middleware=[no_large_amounts])

    with pytest.raises(PermissionError, match="need approval"):
        await bus.send(Deposit("a", 101))

    assert calls == []
    assert await store.stream_version("account-a") is None
    assert (await bus.send(Deposit("a", 100))).version == 0


# -- routing ----------------------------------------------------------------------------------


async def test_an_unknown_command_is_a_domain_error_naming_it(store: eskit.EventStore) -> None:
    @dataclasses.dataclass
    class CloseAccount:
        account_id: str

    with pytest.raises(DomainError, match=r"no handler for command .*CloseAccount"):
        await make_bus(store, "decider").send(CloseAccount("a"))


async def test_a_command_type_is_routed_once(store: eskit.EventStore) -> None:
    bus = make_bus(store, "decider")

    with pytest.raises(ValueError, match="Deposit already has a handler"):
        bus.register(Deposit, account_decider, aggregate_id=lambda c: c.account_id)


async def test_a_target_without_decide_needs_a_handler(store: eskit.EventStore) -> None:
    bus = CommandBus(store, events)
    model = Model(category="account", initial_state=Balance, evolve=evolve)

    with pytest.raises(TypeError, match="Deposit: give `handle=`"):
        bus.register(Deposit, model, aggregate_id=lambda c: c.account_id)
    with pytest.raises(TypeError, match="Withdraw: give `handle=`"):
        bus.register(Withdraw, Account, aggregate_id=lambda c: c.account_id)


async def test_the_decorator_form_registers_a_handler(store: eskit.EventStore) -> None:
    bus = CommandBus(store, events)

    @bus.handles(Deposit, Account, aggregate_id=lambda c: c.account_id)
    def deposit_twice(command: Deposit, account: Account) -> None:
        account.deposit(command.amount)
        account.deposit(command.amount)

    result = await bus.send(Deposit("a", 4))

    assert (result.version, result.events) == (1, [Deposited(4), Deposited(4)])


# -- appending to other streams in the same atomic append -----------------------------------


def customer_bus(
    store: eskit.EventStore, decider: Decider[Any, Any] = customer_decider
) -> tuple[CommandBus, list[object]]:
    """A bare bus for RegisterCustomer (no middleware), counting the decisions."""
    decisions: list[object] = []

    def handle(command: Any, state: Any) -> Any:
        decisions.append(command)
        return decider.decide(command, state)

    bus = CommandBus(store, invoicing_events, backoff=0)
    bus.register(RegisterCustomer, decider, aggregate_id=lambda c: c.customer_id, handle=handle)
    return bus, decisions


async def test_registering_claims_the_email_in_the_same_atomic_append(
    store: eskit.EventStore,
) -> None:
    bus, _ = customer_bus(store)

    result = await bus.send(
        RegisterCustomer("c-1", "Ann", "Ann@Example.com"), correlation_id="signup-1"
    )
    (registered,) = await stream_events(store, "customer-c-1")
    (claimed,) = await stream_events(store, "email-ann@example.com")

    assert (result.stream, result.version, result.events) == (
        "customer-c-1",
        0,
        [CustomerRegistered("c-1", "Ann", "ann@example.com")],
    )
    assert (registered.position, claimed.position) == (1, 2)
    assert invoicing_events.decode(claimed) == [EmailClaimed("c-1")]
    assert claimed.metadata["correlation_id"] == registered.metadata["correlation_id"] == "signup-1"
    assert claimed.metadata["command"] == "RegisterCustomer"


async def test_a_second_customer_with_the_same_email_writes_nothing(
    store: eskit.EventStore,
) -> None:
    bus, decisions = customer_bus(store)
    await bus.send(RegisterCustomer("c-1", "Ann", "ann@example.com"))

    with pytest.raises(eskit.WrongExpectedVersion) as raised:
        await bus.send(RegisterCustomer("c-2", "Annie", " ANN@example.com "))

    assert (raised.value.stream, raised.value.expected, raised.value.actual) == (
        "email-ann@example.com",
        eskit.NO_STREAM,
        0,
    )
    assert len(decisions) == 2  # the claim's conflict is not retried
    assert await store.stream_version("customer-c-2") is None
    assert await store.stream_version("email-ann@example.com") == 0
    assert await store.last_position() == 2


async def test_a_retried_registration_is_replayed_with_its_claim_written_once(
    store: eskit.EventStore,
) -> None:
    bus, decisions = customer_bus(store)
    register, command_id = RegisterCustomer("c-1", "Ann", "ann@example.com"), uuid.uuid4()

    first = await bus.send(register, command_id=command_id)
    again = await bus.send(register, command_id=command_id)

    assert (again.stream, again.version, again.position, again.replayed) == (
        first.stream,
        first.version,
        first.position,
        True,
    )
    assert len(decisions) == 1
    assert await store.last_position() == 2


async def test_a_command_writing_only_other_streams_replays_its_original_result(
    store: eskit.EventStore,
) -> None:
    bus = CommandBus(store, invoicing_events)
    bus.register(
        RegisterCustomer,
        customer_decider,
        aggregate_id=lambda c: c.customer_id,
        handle=lambda c, s: [AlsoAppend(f"email-{c.email}", [EmailClaimed(c.customer_id)])],
    )
    register, command_id = RegisterCustomer("c-1", "Ann", "ann@example.com"), uuid.uuid4()

    first = await bus.send(register, command_id=command_id)
    again = await bus.send(register, command_id=command_id)

    assert await store.last_position() == 1
    assert (again.stream, again.version, again.position, again.events) == (
        first.stream,
        first.version,
        first.position,
        first.events,
    )


async def test_commands_that_also_append_elsewhere_still_take_snapshots(
    store: eskit.EventStore,
) -> None:
    decider = dataclasses.replace(customer_decider, snapshot_every=1, **struct_snapshots(Customer))
    bus, _ = customer_bus(store, decider)

    await bus.send(RegisterCustomer("c-1", "Ann", "ann@example.com"))
    await bus.repository(decider).wait_for_snapshots()

    snapshot = await store.load_snapshot("customer-c-1", 1)
    assert snapshot is not None
    assert snapshot.state == {"registered": True, "name": "Ann", "email": "ann@example.com"}
