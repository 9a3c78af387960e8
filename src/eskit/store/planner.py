"""Where an append is decided: one planner for every backend, doing no IO.

A backend reads, under its write lock, what the planner needs (``lookups`` names it): the
head of every stream of the group (``Head``: last version, state, last link), where each
caller-given event id was already written (``ExistingEvent``), and the next position of the
log. ``Planner.plan`` then decides each request of the group in order, against the heads as
they move within the group:

1. a tombstoned stream refuses everything (``StreamDeleted``);
2. an append whose ids were all written before, as this very batch, is a retry: it is
   answered with the original result and writes nothing; ids partly or otherwise written
   are an ``IdempotencyConflict``;
3. otherwise the expected version must match (``WrongExpectedVersion``); a soft-deleted
   stream counts as empty (and, for an append that asks so, as still at its last version:
   KurrentDB's view, which the gRPC layer asks for), and writing to it revives it; an append
   made ``if_untouched`` (the command bus's, on a state it kept) is refused as well, as
   ``StreamTouched``, when the stream is not ``UNTOUCHED``: it may have hidden an event;
4. each new event gets its position and version, then its link (``chain.link`` covers the
   position, so positions are given before anything is hashed).

A request may append to several distinct streams (``append_many``): every part is checked
before any is planned, so a refused request plans nothing. The backend writes the rows a
plan returns, in order, and marks the streams it revives live. ``undo`` forgets the last
plan (an inline projection refused it after its rows were written inside a savepoint).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Final

import msgspec

from eskit.errors import IdempotencyConflict, StreamDeleted, WrongExpectedVersion
from eskit.store import rules
from eskit.store.chain import hasher, link_event
from eskit.store.ids import new_event_ids
from eskit.store.model import AppendResult
from eskit.store.rules import ExistingEvent, PreparedAppend

LIVE, SOFT_DELETED, TOMBSTONED = 0, 1, 2
"""A stream's state, as the ``streams`` tables store it."""
UNTOUCHED: Final = -1
"""The state of a stream with no row in the ``streams`` table (a head reads it so): no read
rules, never deleted, never scavenged, so it never hid an event. Live as ``LIVE`` is, and
stays so when appended to; a row, once written, is never removed."""


class StreamTouched(WrongExpectedVersion):
    """An ``if_untouched`` append refused: the stream has a ``streams`` row (read rules, a
    delete, a scavenge), so it may have hidden an event from a state folded without them.
    A ``WrongExpectedVersion``, so every caller of an append may take it as a conflict."""

    def __str__(self) -> str:
        return f"stream {self.stream!r}: expected a stream that never hid an event"


class Head(msgspec.Struct, frozen=True, gc=False):
    """A stream as the group finds it: its last version (None: no events), its state and
    the link of its last event (None: no events, or none written with a link)."""

    last: int | None = None
    state: int = UNTOUCHED
    link: bytes | None = None


NEW_STREAM: Final = Head()

Row = tuple[
    int, str, str, int, bytes, str, str, str, int, bytes, str | None, bytes | None, bytes | None
]
"""An event to insert: position, stream, category, version, id (16 bytes), type, data,
metadata (JSON text), recorded_at (microseconds since the epoch), link, and the raw parts
(content type, data bytes, metadata bytes: None unless given as ``RawData``); the field
order of ``chain.ChainRow``."""

Refusal = StreamDeleted | WrongExpectedVersion | IdempotencyConflict
"""What a request can be refused with: it fails alone, the rest of its group goes on."""
Decision = tuple[list[AppendResult], None] | tuple[None, Refusal]
"""A request's results (one per part: written or replayed), or the error refusing it: a
backend's outcome for its caller, as it is."""


class Plan(msgspec.Struct, frozen=True, gc=False):
    """What one request comes to: its results (one per part: written or replayed) or the
    error refusing it, and the rows to insert and streams to revive (none if refused)."""

    results: list[AppendResult] | None
    error: Refusal | None
    rows: list[Row]
    revived: list[str]


def lookups(
    requests: Iterable[Sequence[PreparedAppend]],
) -> tuple[list[str], list[uuid.UUID], int]:
    """What a backend must read before planning ``requests``: their streams (each once, in
    order) and the ids their callers gave (those may have been written before); and how
    many events come without an id (``Planner``'s ``fresh``: their ids drawn at once)."""
    ids: list[uuid.UUID] = []
    if type(requests) is list and len(requests) == 1 and len(requests[0]) == 1:
        (append,) = requests[0]  # a lone append: no dict
        for e in append.events:
            if e.id is not None:
                ids.append(e.id)
        return [append.stream], ids, len(append.events) - len(ids)
    streams: dict[str, None] = {}
    fresh = 0
    for appends in requests:
        for append in appends:
            streams[append.stream] = None
            for e in append.events:  # a plain loop: a comprehension is a call of its own
                if e.id is None:  # on Python 3.11, once per append here
                    fresh += 1
                else:
                    ids.append(e.id)
    return list(streams), ids, fresh


class Planner:
    """Decides the requests of one group, in order; see the module's docstring."""

    __slots__ = ("_fresh", "_undo", "earlier", "hasher", "heads", "next_position", "recorded_at")

    def __init__(
        self,
        heads: dict[str, Head],
        earlier: dict[uuid.UUID, ExistingEvent],
        first_position: int,
        recorded_at: int,
        key: bytes | None = None,
        fresh: int = 0,
    ) -> None:
        """``heads`` of every stream the group appends to and ``earlier``, where each
        caller-given id of the group was written before (those not written: absent);
        ``first_position``: the position of the group's first event; ``recorded_at``:
        the group's time (microseconds since the epoch); ``key``: the audit key of the
        links. Events without an id get a fresh one (``ids.new_event_ids``): ``fresh`` of
        them (``lookups`` counts them) are drawn here at once, not request by request; more
        are drawn if more are needed, and those of refused requests go unused (harmless).

        The planner keeps ``heads`` and ``earlier`` and changes them as it plans: hand it
        dicts of its own (the backends read them anew for each group; no copy to make)."""
        self.heads = heads
        """Each stream's head as the group goes: after the group, the heads it leaves."""
        self.earlier = earlier
        self.next_position = first_position
        self.recorded_at = recorded_at
        self.hasher = hasher(key)
        """Where every link of the group starts from (``chain.hasher``: the audit key's)."""
        self._undo: tuple[int, list[tuple[PreparedAppend, Head]]] | None = None
        """The last plan's first position, the appends it queued and their heads before."""
        self._fresh: Iterator[bytes] = iter(new_event_ids(fresh) if fresh else ())

    def plan(self, appends: Sequence[PreparedAppend]) -> Plan:
        """Decide one request (the appends of one call, to distinct streams): all its parts
        are written or replayed, or none is and the plan holds the error. Only a plan can
        be undone: ``decide``, the path without inline projections, keeps nothing for it."""
        rows: list[Row] = []
        revived: list[str] = []
        first, heads = self.next_position, self.heads
        before = [heads[append.stream] for append in appends]
        results, error = self.decide(appends, rows, revived)
        self._undo = None
        if error is None:  # a queued part has a new head (``_queue``); a replayed one not
            queued = zip(appends, before, strict=True)
            self._undo = (first, [(a, h) for a, h in queued if heads[a.stream] is not h])
        return Plan(results, error, rows, revived)

    def decide(
        self, appends: Sequence[PreparedAppend], rows: list[Row], revived: list[str]
    ) -> Decision:
        """``plan`` into the caller's lists: an accepted request adds its rows to ``rows``
        and the streams it revives to ``revived`` (a refused one adds nothing), so that a
        group's requests fill one list each, with no ``Plan`` per request."""
        if len(appends) != 1:
            return self._decide_many(appends, rows, revived)
        (append,) = appends  # one part, the common case: no lists to keep parts together
        try:
            head = self._check(append)
        except (StreamDeleted, WrongExpectedVersion, IdempotencyConflict) as error:
            return None, error
        if isinstance(head, AppendResult):
            return [head], None
        result = self._queue(append, head, rows)
        if head.state == SOFT_DELETED:
            self._revive(append.stream, revived)
        return [result], None

    def _decide_many(
        self, appends: Sequence[PreparedAppend], rows: list[Row], revived: list[str]
    ) -> Decision:
        """``decide`` for a request of several parts: every part checked before any is
        planned."""
        try:
            checked = list(map(self._check, appends))
        except (StreamDeleted, WrongExpectedVersion, IdempotencyConflict) as error:
            return None, error
        results: list[AppendResult] = []
        for append, head in zip(appends, checked, strict=True):
            if isinstance(head, AppendResult):
                results.append(head)
            else:
                results.append(self._queue(append, head, rows))
                if head.state == SOFT_DELETED:
                    self._revive(append.stream, revived)
        return results, None

    def undo(self) -> None:
        """Forget the last plan, as if its request had never come: its positions will be
        given again, its ids are unwritten and its streams' heads are as before."""
        if self._undo is None:
            return
        self.next_position, queued = self._undo
        for append, head in queued:
            self.heads[append.stream] = head
            for e in append.events:  # each given id of a queued append is new (``_check``)
                if e.id is not None:
                    del self.earlier[e.id]
        self._undo = None

    def _check(self, append: PreparedAppend) -> AppendResult | Head:
        """The original result of a retry, or the head a new append writes after; raises
        the refusal. Changes nothing."""
        stream, expected = append.stream, append.expected
        head = self.heads[stream]
        if head.state == TOMBSTONED:
            raise StreamDeleted(stream)
        if self.earlier and any(e.id is not None for e in append.events):
            earlier, events = self.earlier, append.events
            existing = [None if e.id is None else earlier.get(e.id) for e in events]
            replayed = rules.replayed_append(stream, expected, existing)
            if replayed is not None:
                return replayed
        rules.check_version_matches(
            stream, expected, head.last, head.state == SOFT_DELETED, append.deleted_keeps_revision
        )
        if append.if_untouched and head.state != UNTOUCHED:
            raise StreamTouched(stream, expected, head.last, head.state == SOFT_DELETED)
        return head

    def _queue(self, append: PreparedAppend, head: Head, rows: list[Row]) -> AppendResult:
        """Number, version and link the append's events into ``rows``; move the heads.
        (Few locals set up before the loop: most appends hold one event.)"""
        stream = append.stream
        category, at = rules.category(stream), self.recorded_at
        base, name = self.hasher, stream.encode()
        version = -1 if head.last is None else head.last
        position = self.next_position - 1
        previous = head.link
        for e in append.events:
            version += 1
            position += 1
            given_id = e.id
            if given_id is None:
                id_ = next(self._fresh, None)
                if id_ is None:  # more than counted: enough for this append (some unused)
                    self._fresh = iter(new_event_ids(len(append.events)))
                    id_ = next(self._fresh)
            else:
                id_ = given_id.bytes
                self.earlier[given_id] = ExistingEvent(stream, version, position)
            kind, data, meta = e.type, e.data, e.metadata
            ct, raw, raw_meta = e.content_type, e.raw_data, e.raw_metadata
            previous = link_event(
                base,
                name,
                at,
                previous,
                position,
                version,
                id_,
                kind,
                data,
                meta,
                ct,
                raw,
                raw_meta,
            )
            rows.append(
                (
                    position,
                    stream,
                    category,
                    version,
                    id_,
                    kind,
                    data,
                    meta,
                    at,
                    previous,
                    ct,
                    raw,
                    raw_meta,
                )
            )
        self.next_position = position + 1
        self.heads[stream] = Head(version, head.state, previous)  # a revival: ``_revive``
        return AppendResult(version, position, len(append.events))

    def _revive(self, stream: str, revived: list[str]) -> None:
        """Mark a soft-deleted stream just appended to live again (its row stays: it is not
        ``UNTOUCHED``), and add it to ``revived`` for the backend to write so."""
        self.heads[stream] = msgspec.structs.replace(self.heads[stream], state=LIVE)
        revived.append(stream)
