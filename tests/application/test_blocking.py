"""The blocking face of the application layer (``eskit.sync.CommandBus``, ``Repository``) on
memory and a real SQLite file: the async bus's behaviours, blocking (retries on conflict,
the attempts' bound, idempotent command ids, correlation metadata, middleware, appends to
other streams, snapshots), and plain functions only."""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from examples.invoicing.app import sync_invoicing
from examples.invoicing.commands import AddInvoiceLine, CreateInvoice, IssueInvoice, PayInvoice
from examples.invoicing.customer import EmailAlreadyUsed, RegisterCustomer
from examples.invoicing.invoice import Invoice, InvoiceError

import eskit
import eskit.sync
from eskit.application import CommandContext, CommandResult
from eskit.application.commands import AlsoAppend
from eskit.application.idempotency import command_digest
from eskit.domain import Aggregate, Model
from eskit.errors import AggregateNotFound, ConcurrencyError, DomainError
from eskit.sync import CommandBus, Repository, SyncStore
from tests.application.conftest import ManualClock
from tests.application.test_commands import (
    Account,
    Deposit,
    Deposited,
    InsufficientFunds,
    Withdraw,
    Withdrew,
    account_decider,
    events,
    handle_account,
)

Style = Literal["decider", "class"]
STYLES = pytest.mark.parametrize("style", ["decider", "class"])
NOON = dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)
Handle = Callable[[Any, Any], Any]
Next = Callable[[CommandContext], CommandResult]


@pytest.fixture(params=["memory", "sqlite"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> Iterator[SyncStore]:
    """An opened blocking store on memory and on a SQLite file; closed after the test."""
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/events.db"
    with eskit.sync.open_store(url, clock=clock) as opened:
        yield opened


def target_of(style: Style) -> Model[Any] | type[Aggregate]:
    return account_decider if style == "decider" else Account


def make_bus(
    store: SyncStore, style: Style, wrap: Callable[[Handle], Handle] | None = None, **options: Any
) -> CommandBus:
    bus = CommandBus(store, events, **options)
    handle: Handle = account_decider.decide if style == "decider" else handle_account
    if wrap is not None:
        handle = wrap(handle)
    bus.register(Deposit, target_of(style), aggregate_id=account_id, handle=handle)
    bus.register(Withdraw, target_of(style), aggregate_id=account_id, handle=handle)
    return bus


def account_id(command: Deposit | Withdraw) -> str:
    return command.account_id


def balance_of(bus: CommandBus, style: Style, account_id: str) -> tuple[int, int | None]:
    model: Model[Any] = account_decider if style == "decider" else Account.model()
    loaded = bus.repository(model).load(account_id, missing_ok=True)
    return loaded.state.balance, loaded.version


def interfering(store: SyncStore, times: int) -> tuple[Callable[[Handle], Handle], list[int]]:
    """A handler wrapper that, on its first ``times`` calls, has another writer append to the
    stream between the bus's load and its append; it lists the balance each call saw."""
    calls: list[int] = []

    def wrap(handle: Handle) -> Handle:
        def run(command: Any, state: Any) -> Any:
            calls.append(state.balance)
            if len(calls) <= times:
                someone_else = eskit.NewEvent("Deposited", {"amount": 1000}, {"by": "other"})
                store.append(f"account-{command.account_id}", [someone_else])
            return handle(command, state)

        return run

    return wrap, calls


def stream_events(store: SyncStore, stream: str) -> list[eskit.RecordedEvent]:
    return list(store.read_stream(stream))


# -- the same API as the async face --------------------------------------------------------


@pytest.mark.parametrize(
    ("async_class", "blocking_class"),
    [(eskit.CommandBus, CommandBus), (eskit.Repository, Repository)],
    ids=["CommandBus", "Repository"],
)
def test_every_public_method_of_the_async_face_has_a_blocking_twin(
    async_class: type[Any], blocking_class: type[Any]
) -> None:
    public = [n for n in dir(async_class) if not n.startswith("_") or n == "__init__"]
    for name in public:
        method, twin = getattr(async_class, name), getattr(blocking_class, name, None)
        assert twin is not None, f"{blocking_class.__qualname__} has no {name}"
        if not inspect.isfunction(method):
            continue
        assert not inspect.iscoroutinefunction(twin), name
        assert parameters(twin) == parameters(method), f"{name} differs"


def parameters(function: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


# -- handling ---------------------------------------------------------------------------------


@STYLES
def test_a_command_appends_what_the_aggregate_decides(store: SyncStore, style: Style) -> None:
    bus = make_bus(store, style)

    first = bus.send(Deposit("a", 70))
    second = bus.send(Withdraw("a", 30))

    assert (first.stream, first.version, first.events, first.replayed) == (
        "account-a",
        0,
        [Deposited(70)],
        False,
    )
    assert (second.version, second.position, second.events) == (1, 2, [Withdrew(30)])
    assert balance_of(bus, style, "a") == (40, 1)


@STYLES
def test_a_refused_command_raises_and_writes_nothing(store: SyncStore, style: Style) -> None:
    bus = make_bus(store, style)
    bus.send(Deposit("a", 10))

    with pytest.raises(InsufficientFunds):
        bus.send(Withdraw("a", 11))

    assert [e.type for e in stream_events(store, "account-a")] == ["Deposited"]


def test_the_invoicing_example_runs_on_the_blocking_face(store: SyncStore) -> None:
    bus = sync_invoicing(store)

    bus.send(CreateInvoice("inv-1", "c-1", "EUR", dt.date(2024, 4, 1)))
    bus.send(AddInvoiceLine("inv-1", "pen", 250, "EUR"))
    bus.send(IssueInvoice("inv-1", NOON))
    paid = bus.send(PayInvoice("inv-1", 250, NOON))
    invoice = bus.repository(Invoice.model()).load("inv-1")

    assert (paid.stream, paid.version) == ("invoice-inv-1", 3)
    assert (invoice.state.status, invoice.state.paid, invoice.version) == ("paid", 250, 3)
    with pytest.raises(InvoiceError, match="a paid invoice cannot be paid"):
        bus.send(PayInvoice("inv-1", 250, NOON))


def test_a_command_that_decides_nothing_writes_nothing(store: SyncStore) -> None:
    bus = CommandBus(store, events)
    bus.register(
        Deposit, account_decider, aggregate_id=lambda c: c.account_id, handle=lambda c, s: []
    )

    assert bus.send(Deposit("a", 1)) == CommandResult("account-a", None, None, [])
    assert store.stream_version("account-a") is None


@STYLES
def test_snapshots_are_stored_before_send_returns(store: SyncStore, style: Style) -> None:
    bus = make_bus(store, style)

    for amount in (1, 2, 3, 4):
        bus.send(Deposit("a", amount))
    snapshot = store.load_snapshot("account-a", 1)

    assert snapshot is not None
    assert (snapshot.version, snapshot.state) == (3, {"balance": 10})
    bus.send(Deposit("a", 5))
    assert balance_of(bus, style, "a") == (15, 4)


def test_a_failing_snapshot_is_counted_and_never_fails_the_command(
    store: SyncStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(snapshot: eskit.Snapshot) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "save_snapshot", broken)
    bus = make_bus(store, "decider")

    results = [bus.send(Deposit("a", amount)) for amount in (1, 2, 3, 4)]

    assert [r.version for r in results] == [0, 1, 2, 3]
    assert bus.repository(account_decider).snapshot_failures == 2  # at versions 1 and 3
    assert balance_of(bus, "decider", "a") == (10, 3)


# -- plain functions only ---------------------------------------------------------------------


def test_an_async_handler_is_refused_when_it_is_registered(store: SyncStore) -> None:
    bus = CommandBus(store, events)

    async def deposit(command: Deposit, state: Any) -> list[object]:
        return [Deposited(command.amount)]

    with pytest.raises(TypeError, match=r"the handler of Deposit .*deposit.* is async"):
        bus.register(Deposit, account_decider, aggregate_id=lambda c: c.account_id, handle=deposit)
    assert bus.command_types == []


def test_async_middleware_is_refused_when_the_bus_is_made(store: SyncStore) -> None:
    async def tenant(context: CommandContext, call_next: Any) -> CommandResult:
        return await call_next(context)  # type: ignore[no-any-return]

    with pytest.raises(TypeError, match=r"middleware .*tenant.* is async"):
        CommandBus(store, events, middleware=[tenant])  # type: ignore[list-item]


def test_a_handler_that_returns_an_awaitable_is_refused_when_called(store: SyncStore) -> None:
    async def deposit(command: Deposit, state: Any) -> list[object]:
        return [Deposited(command.amount)]

    bus = CommandBus(store, events)
    # A lambda hides the coroutine function: it can only be seen when called.
    bus.register(
        Deposit,
        account_decider,
        aggregate_id=lambda c: c.account_id,
        handle=lambda c, s: deposit(c, s),
    )

    with pytest.raises(TypeError, match="returned an awaitable: the blocking face"):
        bus.send(Deposit("a", 1))
    assert store.last_position() == 0


# -- conflicts --------------------------------------------------------------------------------


@STYLES
@pytest.mark.parametrize("conflicts", [1, 3])
def test_a_conflict_is_retried_and_the_command_succeeds(
    store: SyncStore, style: Style, conflicts: int
) -> None:
    wrap, calls = interfering(store, times=conflicts)
    bus = make_bus(store, style, wrap=wrap, max_attempts=conflicts + 1, backoff=0)
    retried: list[int] = []
    bus.on_retry = lambda context, attempt: retried.append(attempt)

    result = bus.send(Deposit("a", 5))

    assert calls == [1000 * n for n in range(conflicts + 1)]  # each attempt reloads
    assert retried == list(range(1, conflicts + 1))
    assert (result.version, result.events) == (conflicts, [Deposited(5)])
    assert balance_of(bus, style, "a") == (1000 * conflicts + 5, conflicts)


@STYLES
def test_after_max_attempts_conflicts_the_command_fails_and_writes_nothing(
    store: SyncStore, style: Style
) -> None:
    wrap, calls = interfering(store, times=3)
    bus = make_bus(store, style, wrap=wrap, max_attempts=3, backoff=0)

    with pytest.raises(ConcurrencyError, match="'account-a' changed under the command 3 times"):
        bus.send(Deposit("a", 5))

    assert len(calls) == 3
    assert [e.metadata for e in stream_events(store, "account-a")] == [{"by": "other"}] * 3


# -- idempotent command ids -------------------------------------------------------------------


@STYLES
def test_a_command_sent_again_with_its_id_is_replayed_not_handled_again(
    store: SyncStore, style: Style
) -> None:
    wrap, calls = interfering(store, times=0)
    bus = make_bus(store, style, wrap=wrap)
    command_id = uuid.uuid4()

    first = bus.send(Deposit("a", 5), command_id=command_id)
    again = bus.send(Deposit("a", 5), command_id=command_id)

    assert (again.version, again.position, again.events) == (
        first.version,
        first.position,
        first.events,
    )
    assert (first.replayed, again.replayed, len(calls)) == (False, True, 1)
    assert len(stream_events(store, "account-a")) == 1


def test_a_command_id_reused_for_another_command_is_refused(store: SyncStore) -> None:
    bus = make_bus(store, "decider")
    command_id = uuid.uuid4()
    bus.send(Deposit("a", 5), command_id=command_id)

    with pytest.raises(eskit.IdempotencyConflict, match="already used by Deposit on account-a"):
        bus.send(Deposit("a", 6), command_id=command_id)
    with pytest.raises(eskit.IdempotencyConflict, match="not by Withdraw"):
        bus.send(Withdraw("a", 1), command_id=command_id)
    assert store.last_position() == 1


# -- metadata and middleware ------------------------------------------------------------------


def test_every_event_carries_correlation_causation_and_command(store: SyncStore) -> None:
    bus = make_bus(store, "decider")
    command_id = uuid.uuid4()

    bus.send(
        Deposit("a", 5),
        command_id=command_id,
        correlation_id="order-77",
        causation_id="event-12",
        metadata={"user": "ann"},
    )
    (event,) = stream_events(store, "account-a")

    assert event.metadata == {
        "user": "ann",
        "correlation_id": "order-77",
        "causation_id": "event-12",
        "command": "Deposit",
        "command_id": str(command_id),
        "command_digest": command_digest(Deposit("a", 5)),
        "schema_version": 1,
    }


def test_a_command_without_ids_correlates_by_its_own_id(store: SyncStore) -> None:
    make_bus(store, "class").send(Deposit("a", 5))
    (event,) = stream_events(store, "account-a")

    assert event.metadata["correlation_id"] == event.metadata["causation_id"]
    assert event.metadata["command_id"] == event.metadata["correlation_id"]


def test_middleware_runs_in_order_around_the_command_and_adds_metadata(store: SyncStore) -> None:
    seen: list[str] = []

    def named(name: str) -> Callable[[CommandContext, Next], CommandResult]:
        def middleware(context: CommandContext, call_next: Next) -> CommandResult:
            seen.append(f"{name} before")
            context.metadata[name] = "yes"
            result = call_next(context)
            seen.append(f"{name} after version {result.version}")
            return result

        return middleware

    bus = make_bus(store, "decider", middleware=[named("outer"), named("inner")])

    bus.send(Deposit("a", 5))
    (event,) = stream_events(store, "account-a")

    assert seen == [
        "outer before",
        "inner before",
        "inner after version 0",
        "outer after version 0",
    ]
    assert (event.metadata["outer"], event.metadata["inner"]) == ("yes", "yes")


def test_an_unknown_command_is_a_domain_error(store: SyncStore) -> None:
    @dataclasses.dataclass
    class CloseAccount:
        account_id: str

    with pytest.raises(DomainError, match=r"no handler for command .*CloseAccount"):
        make_bus(store, "decider").send(CloseAccount("a"))


# -- appending to other streams in the same atomic append -----------------------------------


def test_registering_claims_the_email_and_a_taken_one_is_refused(store: SyncStore) -> None:
    bus = sync_invoicing(store)

    result = bus.send(RegisterCustomer("c-1", "Ann", "Ann@Example.com"))
    with pytest.raises(EmailAlreadyUsed):
        bus.send(RegisterCustomer("c-2", "Annie", " ANN@example.com "))

    assert (result.stream, result.version, result.position) == ("customer-c-1", 0, 1)
    assert store.stream_version("email-ann@example.com") == 0
    assert store.stream_version("customer-c-2") is None
    assert store.last_position() == 2


def test_a_command_writing_only_other_streams_is_replayed(store: SyncStore) -> None:
    bus = CommandBus(store, events)
    bus.register(
        Deposit,
        account_decider,
        aggregate_id=lambda c: c.account_id,
        handle=lambda c, s: [AlsoAppend(f"ledger-{c.account_id}", [Deposited(c.amount)])],
    )
    command_id = uuid.uuid4()

    first = bus.send(Deposit("a", 5), command_id=command_id)
    again = bus.send(Deposit("a", 5), command_id=command_id)

    assert (first.version, again.replayed) == (None, True)
    assert [e.stream for e in store.read_all()] == ["ledger-a"]


# -- the repository ---------------------------------------------------------------------------


def test_the_repository_loads_saves_and_travels_in_time(
    store: SyncStore, clock: ManualClock
) -> None:
    repository = Repository(store, events, account_decider)
    repository.save("a", [Deposited(5)], eskit.NO_STREAM)
    before = clock.advance(60)
    repository.save("a", [Deposited(7), Withdrew(2)], 0)

    assert (repository.load("a").state.balance, repository.load("a").version) == (10, 2)
    assert repository.load("a", version=1).state.balance == 12
    assert repository.load("a", at=before - dt.timedelta(seconds=1)).state.balance == 5
    with pytest.raises(eskit.WrongExpectedVersion):
        repository.save("a", [Deposited(1)], 0)
    with pytest.raises(AggregateNotFound):
        repository.load("b")
    assert repository.load("b", missing_ok=True).version is None
