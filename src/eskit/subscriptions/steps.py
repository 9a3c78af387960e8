"""What a consumer does, written once for both faces: sans-IO procedures that yield
effects (a transaction, a read of the log, a handler call) and are sent the outcomes.
``eskit.projections.engine.drive`` runs them on the async face, ``drive_blocking`` on the
blocking one; handling a batch nests the projection engine's own ``apply_batch`` (one
batch/retry/backoff policy for every worker)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, Final

import msgspec

from eskit.projections import engine
from eskit.projections.failure import describe
from eskit.projections.sql import Connection
from eskit.store.model import RecordedEvent
from eskit.subscriptions import parking, window
from eskit.subscriptions.model import Claimed, Replay

READ_AHEAD: Final = 500
"""Events read from the log at most to fetch the ones handed out."""


class Write(msgspec.Struct, frozen=True):
    """Run ``run`` in a write transaction of the group's database."""

    run: Callable[[Connection], Any]


class Read(msgspec.Struct, frozen=True):
    run: Callable[[Connection], Any]


class ReadLog(msgspec.Struct, frozen=True):
    """``store.read_page(after, limit, category=category)``."""

    after: int
    limit: int
    category: str | None = None


class Handle(msgspec.Struct, frozen=True):
    """Call the consumer's handler with ``event``."""

    event: RecordedEvent


class Progress(msgspec.Struct, frozen=True):
    """Tell whoever watches a replay how far it got."""

    done: int
    total: int


Fetched = list[tuple[Claimed, RecordedEvent]]


def fetch(name: str, consumer: str, limit: int) -> engine.Steps[Fetched]:
    """Hand ``consumer`` up to ``limit`` events: waiting ones first, else read on in the
    log (the read is outside the transaction; ``fill`` keeps what no one read first)."""
    want: window.Want = yield Write(lambda c: window.claim(c, name, consumer, limit))
    claimed = list(want.claimed)
    if len(claimed) < limit and want.room > 0:
        page = yield ReadLog(want.read_position, want.room, want.source.category_filter)
        rows = [
            (e.position, e.stream, str(e.id), e.type)
            for e in page.events
            if want.source.matches(e.stream, e.type)
        ]
        if page.next_after > want.read_position:
            after, rest = want.read_position, limit - len(claimed)

            def fill_and_claim(conn: Connection) -> window.Want:
                window.fill(conn, name, after, rows, page.next_after)
                return window.claim(conn, name, consumer, rest)

            more: window.Want = yield Write(fill_and_claim)
            claimed += more.claimed
    events = yield from read_at([c.position for c in claimed])
    gone = [c.position for c in claimed if c.position not in events]
    if gone:  # the event is no longer in the log (scrubbed, truncated): nothing to do
        yield Write(lambda c: window.ack(c, name, gone))
    return [(c, events[c.position]) for c in claimed if c.position in events]


def read_at(positions: Sequence[int]) -> engine.Steps[dict[int, RecordedEvent]]:
    """The events at ``positions``, read in as few pages as they allow."""
    wanted_set = set(positions)
    wanted = sorted(wanted_set)
    found: dict[int, RecordedEvent] = {}
    index = 0
    while index < len(wanted):
        first = wanted[index]
        page = yield ReadLog(first - 1, min(READ_AHEAD, wanted[-1] - first + 1))
        for event in page.events:
            if event.position in wanted_set:
                found[event.position] = event
        last = page.events[-1].position if page.events else wanted[-1]
        while index < len(wanted) and wanted[index] <= max(last, first):
            index += 1
    return found


def replay(name: str, requested_by: str, up_to: int | None, page_size: int) -> engine.Steps[Replay]:
    """Put parked events back to be handed out, one page per transaction (memory stays
    bounded whatever the count), recorded with who asked; the checkpoint does not move."""
    record: Replay = yield Write(lambda c: parking.start_replay(c, name, requested_by, up_to))
    total: int = yield Read(lambda c: parking.count_parked(c, name, record.up_to))
    done = 0
    while True:
        moved: int = yield Write(lambda c: parking.replay_page(c, record, page_size))
        done += moved
        yield Progress(done, total)
        if moved < page_size:
            break
    finished: list[Replay] = yield Read(lambda c: parking.replays(c, name))
    return next(r for r in finished if r.id == record.id)


def handle(
    name: str,
    consumer: str,
    batch: Fetched,
    policy: engine.Policy,
    key: Callable[[RecordedEvent], Hashable],
) -> engine.Steps[int]:
    """Call the handler on each event of ``batch`` through the projection engine (retried
    in place per ``policy``); ack what went through in one transaction, nack ``retry`` what
    still failed (the group parks it after ``max_retries``), hand back what a stuck key
    held. Returns how many were acked."""
    done: list[int] = []
    failed: set[int] = set()

    def perform(effect: Any) -> engine.Steps[Any] | None:
        if isinstance(effect, engine.Commit):
            return _commit(effect.events, done)
        if isinstance(effect, engine.MarkStuck):
            failed.add(effect.event.position)
            return _nack(name, consumer, effect.event.position, effect.text)
        return None

    events = [event for _, event in batch]
    steps = engine.apply_batch(
        f"group {name}", events, events[-1].position, policy, key=key, batch_failed=True
    )
    yield from engine.translate(steps, perform)
    left = [e.position for e in events if e.position not in failed and e.position not in done]

    def finish(conn: Connection) -> None:
        window.ack(conn, name, done)
        window.release(conn, name, consumer, left)

    yield Write(finish)
    return len(done)


def _commit(events: Sequence[RecordedEvent], done: list[int]) -> engine.Steps[None]:
    for event in events:
        yield Handle(event)
        done.append(event.position)


def _nack(name: str, consumer: str, position: int, text: str) -> engine.Steps[None]:
    yield Write(lambda c: window.nack(c, name, consumer, [position], "retry", text))


def reason_of(reason: str | BaseException | None) -> str:
    """A nack's reason as stored: an error described and redacted like a projection's
    (``failure.describe``), a text redacted alike."""
    from eskit.domain.redaction import redact

    if reason is None:
        return ""
    if isinstance(reason, BaseException):
        return describe(reason)
    return redact(str(reason))[:2000]
