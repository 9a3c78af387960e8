"""The projection engine on its own (it does no IO): a batch that fails goes event by event;
a poison event is retried with backoff, then stuck, holding back only its key; failures
that are not a handler's end the batch (the backoff policy: tests/test_retry.py)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Hashable

import pytest

from eskit.errors import StoreUnavailable
from eskit.projections.engine import (
    Commit,
    MarkStuck,
    Outcome,
    Policy,
    apply_batch,
    drive,
    drive_blocking,
)
from eskit.store.model import RecordedEvent


def event(position: int, stream: str, type_: str = "Added") -> RecordedEvent:
    return RecordedEvent(
        id=uuid.uuid4(),
        stream=stream,
        version=0,
        position=position,
        type=type_,
        data={},
        metadata={},
        recorded_at=dt.datetime(2024, 5, 2, tzinfo=dt.UTC),
    )


class Target:
    """A read model that refuses ``Poison`` events (and any batch holding one)."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.applied: list[int] = []
        self.checkpoints: list[tuple[int, Hashable | None, frozenset[Hashable]]] = []
        self.poison_tries = 0
        self.stuck: list[tuple[int, Hashable | None, str]] = []
        self.failure = failure

    def perform(self, effect: object) -> None:
        if isinstance(effect, Commit):
            if any(e.type == "Poison" for e in effect.events):
                self.poison_tries += 1
                raise self.failure or RuntimeError("cannot digest poison")
            self.applied += [e.position for e in effect.events]
            self.checkpoints.append((effect.position, effect.key, effect.stuck))
        elif isinstance(effect, MarkStuck):
            self.stuck.append((effect.event.position, effect.key, effect.text))


POLICY = Policy(retries=2, backoff=0.0)


def test_a_batch_that_goes_through_is_one_commit() -> None:
    target = Target()
    events = [event(1, "a"), event(2, "b")]
    outcome = drive_blocking(apply_batch("p", events, 5, POLICY), target.perform)
    assert outcome == Outcome()
    assert (target.applied, target.checkpoints) == ([1, 2], [(5, None, frozenset())])


def test_a_poison_event_without_keys_stops_the_batch_before_it() -> None:
    target = Target()
    events = [event(1, "a"), event(2, "a", "Poison"), event(3, "b")]
    outcome = drive_blocking(apply_batch("p", events, 9, POLICY), target.perform)
    assert outcome == Outcome(frozenset({None}))
    assert target.applied == [1]  # alone; nothing after the poison, no checkpoint past it
    assert target.checkpoints == [(1, None, frozenset())]
    assert target.poison_tries == 1 + 3  # in the batch, then alone: first try and 2 retries
    assert target.stuck == [(2, None, "RuntimeError: cannot digest poison")]


def test_a_poison_event_holds_back_only_its_key() -> None:
    target = Target()
    events = [event(1, "a"), event(2, "a", "Poison"), event(3, "a"), event(4, "b")]
    steps = apply_batch("p", events, 9, POLICY, key=lambda e: e.stream)
    outcome = drive_blocking(steps, target.perform)
    assert outcome == Outcome(frozenset({"a"}))
    assert target.applied == [1, 4]
    assert target.checkpoints[-1] == (9, None, frozenset({"a"}))  # the rest, "a" left behind
    assert [position for position, _, _ in target.stuck] == [2]


def test_a_failure_that_is_not_the_handlers_ends_the_batch_unblamed() -> None:
    target = Target(StoreUnavailable("the database went away"))
    events = [event(1, "a", "Poison")]
    with pytest.raises(StoreUnavailable):
        drive_blocking(apply_batch("p", events, 1, POLICY), target.perform)
    assert target.stuck == []


@pytest.mark.anyio
async def test_the_async_driver_runs_the_same_steps() -> None:
    target = Target()

    async def perform(effect: object) -> None:
        target.perform(effect)

    events = [event(1, "a"), event(2, "b", "Poison"), event(3, "c")]
    outcome = await drive(apply_batch("p", events, 3, POLICY, key=lambda e: e.stream), perform)
    assert outcome == Outcome(frozenset({"b"}))
    assert target.applied == [1, 3]
