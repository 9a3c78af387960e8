"""The engine every aggregate runs on: an initial state and an evolve function.

Both styles — the functional decider and the aggregate class — are turned into a ``Model``,
and the repository, command handling, snapshots and test specs only ever see that. This is
what makes the two styles load, save, snapshot and test the same way.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from eskit.domain.events import from_json_object, to_json_object
from eskit.store import rules
from eskit.store.model import JSONObject

S = TypeVar("S")
C = TypeVar("C")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Model(Generic[S]):
    """How to rebuild one kind of aggregate from its events.

    ``evolve(state, event)`` returns the next state; it must never raise or do IO.
    Snapshots, when ``snapshot_every`` is set, are taken every that many events and stored
    with ``snapshot_version``: bump it whenever ``evolve`` or the state's shape changes, and
    older snapshots are ignored (the aggregate is replayed from its events instead).
    """

    category: str
    initial_state: Callable[[], S]
    evolve: Callable[[S, Any], S]
    snapshot_every: int | None = None
    snapshot_version: int = 1
    to_snapshot: Callable[[S], JSONObject] | None = None
    from_snapshot: Callable[[JSONObject], S] | None = None

    def __post_init__(self) -> None:
        rules.check_name(self.category, "category")
        if "-" in self.category:
            raise ValueError(f"category {self.category!r} must not contain '-'")
        every = self.snapshot_every
        if every is not None and (
            isinstance(every, bool) or not isinstance(every, int) or every < 1
        ):
            raise ValueError(f"snapshot_every must be an int >= 1 or None, got {every!r}")
        if every is not None and (self.to_snapshot is None or self.from_snapshot is None):
            raise ValueError(f"{self.category}: snapshots need to_snapshot and from_snapshot")

    def stream(self, aggregate_id: str) -> str:
        """The stream holding one aggregate's events: ``category-id``."""
        return f"{self.category}-{aggregate_id}"

    def replay(self, events: Sequence[Any], state: S | None = None) -> S:
        """The state after ``events``, from ``state`` (default: the initial state)."""
        evolve = self.evolve
        current = self.initial_state() if state is None else state
        for event in events:
            current = evolve(current, event)
        return current


@dataclasses.dataclass(frozen=True, kw_only=True)
class Decider(Model[S], Generic[C, S]):
    """The functional style: ``decide(command, state) -> events`` on top of a ``Model``.

    ``decide`` checks the rules and returns the new events (or raises); it never does IO:
    time and ids arrive inside the command.
    """

    decide: Callable[[C, S], Sequence[Any]]


def struct_snapshots(state_type: type[S]) -> dict[str, Any]:
    """``to_snapshot``/``from_snapshot`` for a state that is a dataclass or msgspec Struct."""

    return {
        "to_snapshot": to_json_object,
        "from_snapshot": functools.partial(from_json_object, state_type),
    }
