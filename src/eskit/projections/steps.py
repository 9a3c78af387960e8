"""What a projection worker's procedures ask their runner to do (``worker``): the effects
the async runner performs with coroutines and the blocking one with blocking calls."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from eskit.projections import state as st
from eskit.projections.process import ProcessManager
from eskit.projections.projection import Projection
from eskit.projections.sql import Connection
from eskit.store.model import RecordedEvent


class Write(msgspec.Struct, frozen=True):
    """Run ``run`` in a write transaction of the projection's database; its result."""

    run: Callable[[Connection], Any]


class Read(msgspec.Struct, frozen=True):
    """Run ``run`` in a read transaction of the projection's database; its result."""

    run: Callable[[Connection], Any]


class ReadPage(msgspec.Struct, frozen=True):
    """A page of the store's log (``EventStore.read_page``)."""

    after: int
    limit: int
    types: tuple[str, ...] | None


class LastPosition(msgspec.Struct, frozen=True):
    """The store's head."""


class WaitForEvents(msgspec.Struct, frozen=True):
    """Wait for an event past ``after``, at most ``timeout`` seconds, or for a stop."""

    after: int
    timeout: float | None = None


class Idle(msgspec.Struct, frozen=True):
    """Wait ``seconds``, or until the runner is asked to stop."""

    seconds: float


class Stopping(msgspec.Struct, frozen=True):
    """Whether the runner is asked to stop."""


class Notify(msgspec.Struct, frozen=True):
    """Wake whoever waits for the projection's progress (``wait_until``)."""


class Handle(msgspec.Struct, frozen=True):
    """Hand ``events`` to a plain projection's handlers."""

    projection: Projection
    events: Sequence[RecordedEvent]


class ResetTarget(msgspec.Struct, frozen=True):
    """Clear what a plain projection wrote (``Projection.reset``)."""

    projection: Projection


class Tick(msgspec.Struct, frozen=True):
    """Run a process manager's tick; the error it stored, if any (``process.tick``)."""

    manager: ProcessManager
    state: st.State
