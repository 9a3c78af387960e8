"""The one projection engine: how every worker applies what it read, written once.

Every worker that feeds a read model (the runner on both faces, partitioned workers, the
JetStream, Redis Streams and RabbitMQ consumers, process managers through the runner)
applies a batch the same way, here:

1. the batch in one commit;
2. if a handler raised, each event alone, retried ``retries`` times with ``backoff``;
3. an event that still fails is stuck: the worker records it (position, type, error) and
   applies nothing more of its key (the projection, a partition) until an operator skips
   it. Events of other keys go on.

A database or broker that went away (``Unavailable``, ``StoreClosed``) or a projection
moved by someone else (``ProjectionMoved``) is never blamed on an event: it ends the batch
and the worker's own loop backs off (``backoff`` too) or reloads.

The engine does no IO: ``apply_batch`` is a generator that yields what to do (``Commit``,
``Pause``, ``MarkStuck``) and is told how it went (an error is thrown into it). ``drive``
runs it with coroutines, ``drive_blocking`` with blocking functions, so the async and
the blocking faces share it; ``translate`` nests it in a worker's own procedures (the
runner's, in ``worker``), which the same drivers run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import msgspec

from eskit.drivers import Pause as Pause
from eskit.drivers import Steps as Steps
from eskit.drivers import drive as drive
from eskit.drivers import drive_blocking as drive_blocking
from eskit.errors import StoreClosed, Unavailable
from eskit.projections.failure import describe
from eskit.projections.state import ProjectionMoved
from eskit.retry import backoff
from eskit.store.model import RecordedEvent

log = logging.getLogger("eskit.projections")
T = TypeVar("T")

NOT_THE_HANDLER: tuple[type[BaseException], ...] = (StoreClosed, Unavailable, ProjectionMoved)
"""Failures never blamed on an event: they end the batch for the worker to deal with."""


class Policy(msgspec.Struct, frozen=True):
    """How hard a worker tries an event before it is stuck."""

    retries: int = 3
    """Attempts of one event after the first, before it is stuck."""
    backoff: float = 0.1
    """Seconds before the first retry; doubled at each (``backoff``)."""
    not_the_handler: tuple[type[BaseException], ...] = NOT_THE_HANDLER


class Commit(msgspec.Struct, frozen=True):
    """Apply ``events`` (none: only move the checkpoint) and move the checkpoint of
    ``key`` (every key not stuck, if None) to ``position``, in one transaction."""

    events: Sequence[RecordedEvent]
    position: int
    key: Hashable | None = None
    stuck: frozenset[Hashable] = frozenset()
    """Keys stuck in this batch: leave their checkpoints where they are."""


class MarkStuck(msgspec.Struct, frozen=True):
    """Record that ``event`` of ``key`` keeps failing with ``error``; ``text`` says why,
    redacted (``failure.describe``)."""

    event: RecordedEvent
    error: Exception
    text: str
    key: Hashable | None = None


Effect = Commit | Pause | MarkStuck


class Outcome(msgspec.Struct, frozen=True):
    """What became of a batch: the keys now stuck (none if it all went through)."""

    stuck: frozenset[Hashable] = frozenset()


def apply_batch(
    name: str,
    events: Sequence[RecordedEvent],
    position: int,
    policy: Policy,
    *,
    key: Callable[[RecordedEvent], Hashable] | None = None,
    batch_failed: bool = False,
) -> Steps[Outcome]:
    """Apply ``events`` and move the checkpoint to ``position`` (see the module's doc).

    ``key`` gives each event's key (its partition); without it, all share one and the
    first stuck event ends the batch with no checkpoint moved past it. ``batch_failed``:
    the worker tried the batch its own way already (e.g. read and applied in one
    transaction), so go event by event at once."""
    if not batch_failed:
        try:
            yield Commit(events, position)
            return Outcome()
        except policy.not_the_handler:
            raise
        except Exception as error:
            log.warning(
                "projection %s: batch up to %d failed (%s); retrying event by event",
                name,
                position,
                describe(error),
            )
    stuck: set[Hashable] = set()
    for event in events:
        event_key = None if key is None else key(event)
        if event_key in stuck:
            continue
        if not (yield from _apply_one(event, event_key, policy)):
            stuck.add(event_key)
            if key is None:
                return Outcome(frozenset(stuck))
    yield Commit((), position, stuck=frozenset(stuck))
    return Outcome(frozenset(stuck))


def _apply_one(event: RecordedEvent, key: Hashable | None, policy: Policy) -> Steps[bool]:
    """Apply ``event`` alone, retried with backoff; False if it is stuck."""
    for attempt in range(policy.retries + 1):
        try:
            yield Commit((event,), event.position, key)
            return True
        except policy.not_the_handler:
            raise
        except Exception as error:
            if attempt < policy.retries:
                yield Pause(backoff(policy.backoff, attempt))
                continue
            yield MarkStuck(event, error, describe(error), key)
    return False


def translate(steps: Steps[T], perform: Callable[[Any], Steps[Any] | None]) -> Steps[T]:
    """Run ``steps`` inside another procedure: an effect ``perform`` turns into steps of
    that procedure is done by them (their result sent back, their error thrown in); any
    other is yielded on, to whoever drives the procedure."""
    result: Any = None
    error: Exception | None = None
    while True:
        try:
            effect = steps.throw(error) if error is not None else steps.send(result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        result, error = None, None
        try:
            own = perform(effect)
            result = (yield from own) if own is not None else (yield effect)
        except Exception as raised:
            error = raised
