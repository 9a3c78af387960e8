"""The command-handling flow on its own, driven by hand: what it asks of the store, in which
order, and what it makes of the answers (no store, no event loop, no thread)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

import pytest

from eskit.application.effects import (
    AppendEvents,
    Consume,
    FindEvent,
    Flow,
    ReadStream,
    Request,
)
from eskit.application.handling import BusCore, CommandContext, CommandResult, command_event_id
from eskit.application.repository import RepositoryCore
from eskit.domain import Decider, Model
from eskit.drivers import Pause
from eskit.errors import ConcurrencyError, WrongExpectedVersion
from eskit.store.model import NO_STREAM, AppendResult, RecordedEvent
from tests.application.test_commands import Deposit, Deposited, account_decider, events

T0 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
account = Decider(  # the account without snapshots: plain reads
    category="account",
    initial_state=account_decider.initial_state,
    evolve=account_decider.evolve,
    decide=account_decider.decide,
)


class Bus(BusCore):
    def _new_repository(self, model: Model[Any]) -> RepositoryCore[Any]:
        return RepositoryCore(self.events, model)

    decided_on: list[Any]
    """The states the handler was handed, in order (the flow calls it itself)."""


def bus(creates: bool = False, **options: Any) -> Bus:
    made = Bus(events, **options)
    made.decided_on = []

    def decide(command: Deposit, state: Any) -> Any:
        made.decided_on.append(state)
        return account.decide(command, state)

    made.register(
        Deposit, account, aggregate_id=lambda c: c.account_id, handle=decide, creates=creates
    )
    return made


def flow_of(made: Bus, command: object, command_id: uuid.UUID | None = None) -> Flow[Any]:
    return made.handling(made._context(command, command_id, None, None, None)[0])


def recorded(
    version: int, amount: int, event_id: uuid.UUID | None = None, **metadata: Any
) -> RecordedEvent:
    return RecordedEvent(
        event_id or uuid.uuid4(),
        "account-a",
        version,
        version + 1,
        "Deposited",
        {"amount": amount},
        {"schema_version": 1, **metadata},
        T0,
    )


def fold(flow: Flow[Any], history: list[RecordedEvent]) -> Request:
    """Answer the flow's read of the stream with ``history``; the request after it."""
    read = next(flow)
    assert read == ReadStream("account-a", None)
    consume = flow.send(iter(history))
    assert isinstance(consume, Consume)
    for event in consume.source:
        assert consume.step(event)
    return flow.send(None)


def appended(request: Request) -> AppendEvents:
    """The request, which must be an append."""
    assert isinstance(request, AppendEvents)
    return request


def finish(flow: Flow[Any], value: Any) -> Any:
    with pytest.raises(StopIteration) as stopped:
        flow.send(value)
    return stopped.value.value


def test_a_command_reads_the_stream_decides_and_appends_at_the_version_read() -> None:
    made = bus()
    flow = flow_of(made, Deposit("a", 5))

    append = appended(fold(flow, [recorded(0, 10), recorded(1, 20)]))
    assert [state.balance for state in made.decided_on] == [30]
    assert (append.stream, append.expected_version, [e.type for e in append.events]) == (
        "account-a",
        1,
        ["Deposited"],
    )

    result = finish(flow, AppendResult(2, 3, 1))
    assert result == CommandResult("account-a", 2, 3, [Deposited(5)])


def test_a_conflict_backs_off_then_reads_again_until_the_bound() -> None:
    made = bus(max_attempts=2, backoff=0.01)
    flow = flow_of(made, Deposit("a", 5))
    conflict = WrongExpectedVersion("account-a", 0, 1)

    appended(fold(flow, [recorded(0, 10)]))
    sleep = flow.throw(conflict)
    assert isinstance(sleep, Pause)
    assert 0 <= sleep.seconds <= 0.04
    append = appended(fold(flow, [recorded(0, 10), recorded(1, 1)]))
    assert [state.balance for state in made.decided_on] == [10, 11]
    assert append.expected_version == 1

    with pytest.raises(ConcurrencyError, match="changed under the command 2 times"):
        flow.throw(conflict)


def test_a_create_is_decided_and_appended_without_reading() -> None:
    made = bus(creates=True)
    flow = flow_of(made, Deposit("a", 5))

    append = appended(next(flow))
    assert [state.balance for state in made.decided_on] == [0]
    assert append.expected_version == NO_STREAM

    assert finish(flow, AppendResult(0, 1, 1)).version == 0


def test_a_create_whose_stream_exists_reads_it_and_decides_again_at_once() -> None:
    made = bus(creates=True)
    flow = flow_of(made, Deposit("a", 5))
    appended(next(flow))

    append = appended(fold_after(flow.throw(WrongExpectedVersion("account-a", NO_STREAM, 0)), flow))
    assert [state.balance for state in made.decided_on] == [0, 10]
    assert append.expected_version == 0


def fold_after(read: Request, flow: Flow[Any]) -> Request:
    assert read == ReadStream("account-a", None)
    consume = flow.send(iter([recorded(0, 10)]))
    assert isinstance(consume, Consume)
    for event in consume.source:
        consume.step(event)
    return flow.send(None)


def test_a_command_id_is_looked_up_after_the_read_and_replays_what_it_wrote() -> None:
    command_id = uuid.uuid4()
    first_id = command_event_id(command_id, 0)
    made = bus()
    flow = flow_of(made, Deposit("a", 5), command_id)
    written = recorded(0, 5, first_id, command="Deposit", command_digest="")

    find = fold(flow, [written])
    assert find == FindEvent(first_id)
    assert flow.send(written) == FindEvent(command_event_id(command_id, 1))

    result = finish(flow, None)
    assert made.decided_on == []  # the handler was never called
    assert (result.version, result.position, result.events, result.replayed) == (
        0,
        1,
        [Deposited(5)],
        True,
    )


def test_a_context_and_a_result_are_frozen_dataclasses_that_replace_keeps() -> None:
    """Their own ``__init__`` (faster than the generated one) sets every field, and
    ``dataclasses.replace`` (what middleware uses) still makes a new one."""
    context = CommandContext(Deposit("a", 1), uuid.uuid4(), "corr", "cause", {"k": 1}, True)
    result = CommandResult("account-a", 2, 3, [Deposited(5)])
    for made in (context, result):
        values = {f.name: getattr(made, f.name) for f in dataclasses.fields(made)}
        assert dataclasses.replace(made) == made
        assert dataclasses.asdict(dataclasses.replace(made)) == dataclasses.asdict(made)
        assert type(made)(**values) == made
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(made, "events", [])  # noqa: B010 - a frozen field, set by name
    assert result.replayed is False
    assert dataclasses.replace(result, replayed=True).replayed is True
    assert dataclasses.replace(context, causation_id="other").causation_id == "other"


def test_a_context_keeps_its_command_ids_text_and_replace_makes_it_again() -> None:
    """``command_id_text`` (what the events' metadata holds) is not a field: made with the
    context, by ``send`` or the class, and again for a replaced id."""
    made = bus()
    sent, _ = made._context(Deposit("a", 1), None, None, None, None)
    assert sent.command_id_text == str(sent.command_id) == sent.correlation_id
    given = uuid.uuid4()
    built = CommandContext(Deposit("a", 1), given, "corr", "cause", {}, True)
    assert built.command_id_text == str(given)
    other = uuid.uuid4()
    assert dataclasses.replace(built, command_id=other).command_id_text == str(other)
    assert "command_id_text" not in {f.name for f in dataclasses.fields(built)}
    assert dataclasses.replace(sent) == sent
