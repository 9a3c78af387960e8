"""The append planner on its own: every outcome, the order within a group, all-or-nothing
requests, revival, positions and links; and, with hypothesis, the same answers as the model
of the contract."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eskit.errors import IdempotencyConflict, StreamDeleted, WrongExpectedVersion
from eskit.store import rules
from eskit.store.chain import link
from eskit.store.model import ANY, NO_STREAM, STREAM_EXISTS, AppendResult, ExpectedVersion, NewEvent
from eskit.store.planner import (
    LIVE,
    NEW_STREAM,
    SOFT_DELETED,
    TOMBSTONED,
    UNTOUCHED,
    Head,
    Planner,
    Row,
    StreamTouched,
    lookups,
)
from eskit.store.rules import ExistingEvent, PreparedAppend
from eskit.testing.conformance.model import _failure, _Model, _ModelStream

KEY = bytes(range(32))


def append(
    stream: str, count: int = 1, expected: ExpectedVersion = ANY, ids: Sequence[uuid.UUID] = ()
) -> PreparedAppend:
    events = [NewEvent("Happened", {"n": n}, id=ids[n] if ids else None) for n in range(count)]
    return rules.prepare_append(stream, events, expected, 1 << 20)


def planner(
    heads: dict[str, Head], earlier: dict[uuid.UUID, ExistingEvent] | None = None
) -> Planner:
    return Planner(heads, earlier or {}, first_position=11, recorded_at=123, key=KEY)


def check_links(rows: Sequence[Row], previous: bytes | None) -> None:
    """Each row's link is the chain's link after the one before it in its stream."""
    for row in rows:
        position, stream, category, version, id_, kind, data, meta, at, hash_ = row[:10]
        assert row[10:] == (None, None, None)  # no raw parts
        assert category == rules.category(stream)
        expected = link(previous, position, stream, version, id_, kind, data, meta, at, KEY)
        assert hash_ == expected
        previous = hash_


def test_a_new_stream_is_written_from_the_first_position_with_linked_rows() -> None:
    plan = planner({"order-1": NEW_STREAM}).plan([append("order-1", 3, NO_STREAM)])
    assert plan.error is None
    assert plan.results == [AppendResult(2, 13, 3)]
    assert [(r[0], r[1], r[3]) for r in plan.rows] == [
        (11, "order-1", 0),
        (12, "order-1", 1),
        (13, "order-1", 2),
    ]
    assert all(r[8] == 123 and len(r[4]) == 16 for r in plan.rows)
    assert len({r[4] for r in plan.rows}) == 3  # fresh ids, distinct
    check_links(plan.rows, None)
    assert plan.revived == []


@pytest.mark.parametrize("fresh", [0, 2, 5, 9])
def test_fresh_ids_drawn_for_the_group_are_uuid7_distinct_and_in_order(fresh: int) -> None:
    """However many the planner was told to draw (too few: it draws more), every event
    without an id gets a UUIDv7 of its own, in the order of the group."""
    plans = Planner({"a-1": NEW_STREAM, "b-1": NEW_STREAM}, {}, 1, 1, None, fresh)
    rows = plans.plan([append("a-1", 3)]).rows + plans.plan([append("b-1", 2)]).rows
    ids = [uuid.UUID(bytes=r[4]) for r in rows]
    assert all(i.version == 7 for i in ids)
    assert len(set(ids)) == 5
    assert ids == sorted(ids)


def test_an_existing_stream_continues_its_versions_and_its_chain() -> None:
    last_link = b"\x01" * 32
    plan = planner({"order-1": Head(4, LIVE, last_link)}).plan([append("order-1", 2, 4)])
    assert plan.results == [AppendResult(6, 12, 2)]
    assert [r[3] for r in plan.rows] == [5, 6]
    check_links(plan.rows, last_link)


def test_caller_given_ids_are_the_rows_ids() -> None:
    ids = [uuid.uuid4(), uuid.uuid4()]
    plan = planner({"order-1": NEW_STREAM}).plan([append("order-1", 2, ids=ids)])
    assert [r[4] for r in plan.rows] == [i.bytes for i in ids]


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (NEW_STREAM, 0),
        (NEW_STREAM, STREAM_EXISTS),
        (Head(3, LIVE, None), NO_STREAM),
        (Head(3, LIVE, None), 2),
        (Head(3, SOFT_DELETED, None), 3),
        (Head(3, SOFT_DELETED, None), STREAM_EXISTS),
    ],
)
def test_a_wrong_expected_version_is_refused_and_plans_nothing(
    head: Head, expected: ExpectedVersion
) -> None:
    plans = planner({"order-1": head})
    plan = plans.plan([append("order-1", 1, expected)])
    assert isinstance(plan.error, WrongExpectedVersion)
    assert (plan.results, plan.rows, plan.revived) == (None, [], [])
    assert plans.heads["order-1"] == head
    assert plans.next_position == 11


def test_a_tombstoned_stream_refuses_even_a_retry() -> None:
    id_ = uuid.uuid4()
    earlier = {id_: ExistingEvent("order-1", 0, 5)}
    plan = planner({"order-1": Head(0, TOMBSTONED, None)}, earlier).plan(
        [append("order-1", 1, ANY, [id_])]
    )
    assert isinstance(plan.error, StreamDeleted)
    assert plan.rows == []


def test_a_retry_is_answered_with_the_original_result_and_writes_nothing() -> None:
    ids = [uuid.uuid4(), uuid.uuid4()]
    earlier = {ids[0]: ExistingEvent("order-1", 3, 40), ids[1]: ExistingEvent("order-1", 4, 41)}
    plans = planner({"order-1": Head(9, LIVE, None)}, earlier)
    plan = plans.plan([append("order-1", 2, 2, ids)])  # the version it was written after
    assert plan.results == [AppendResult(4, 41, 2)]
    assert plan.error is None
    assert plan.rows == []
    assert plans.next_position == 11


@pytest.mark.parametrize(
    ("earlier", "expected"),
    [
        ({0: ExistingEvent("order-1", 3, 40)}, ANY),  # one of two ids written
        ({0: ExistingEvent("order-2", 0, 40), 1: ExistingEvent("order-2", 1, 41)}, ANY),
        ({0: ExistingEvent("order-1", 4, 40), 1: ExistingEvent("order-1", 3, 41)}, ANY),
        ({0: ExistingEvent("order-1", 3, 40), 1: ExistingEvent("order-1", 4, 41)}, 5),
    ],
)
def test_ids_written_otherwise_are_an_idempotency_conflict(
    earlier: dict[int, ExistingEvent], expected: ExpectedVersion
) -> None:
    ids = [uuid.uuid4(), uuid.uuid4()]
    found = {ids[i]: where for i, where in earlier.items()}
    plan = planner({"order-1": Head(9, LIVE, None)}, found).plan(
        [append("order-1", 2, expected, ids)]
    )
    assert isinstance(plan.error, IdempotencyConflict)
    assert plan.rows == []


def test_writing_to_a_soft_deleted_stream_revives_it_after_its_last_version() -> None:
    plans = planner({"order-1": Head(2, SOFT_DELETED, b"\x02" * 32)})
    plan = plans.plan([append("order-1", 1, NO_STREAM)])
    assert plan.results == [AppendResult(3, 11, 1)]
    assert plan.revived == ["order-1"]
    check_links(plan.rows, b"\x02" * 32)
    assert plans.heads["order-1"].state == LIVE


def test_requests_are_decided_in_order_against_the_heads_as_they_move() -> None:
    plans = planner({"order-1": NEW_STREAM, "order-2": NEW_STREAM})
    first = plans.plan([append("order-1", 2, NO_STREAM)])
    refused = plans.plan([append("order-1", 1, NO_STREAM)])
    other = plans.plan([append("order-2", 1, NO_STREAM)])
    then = plans.plan([append("order-1", 1, 1)])
    assert first.results == [AppendResult(1, 12, 2)]
    assert isinstance(refused.error, WrongExpectedVersion)
    assert refused.error.actual == 1
    assert other.results == [AppendResult(0, 13, 1)]
    assert then.results == [AppendResult(2, 14, 1)]
    check_links(first.rows + then.rows, None)  # the chain goes on across requests


def test_a_retry_of_an_earlier_request_of_the_same_group_is_replayed() -> None:
    ids = [uuid.uuid4()]
    plans = planner({"order-1": NEW_STREAM})
    first = plans.plan([append("order-1", 1, NO_STREAM, ids)])
    again = plans.plan([append("order-1", 1, NO_STREAM, ids)])
    assert again.results == first.results
    assert again.rows == []
    clash = plans.plan([append("order-1", 2, ANY, [ids[0], uuid.uuid4()])])
    assert isinstance(clash.error, IdempotencyConflict)


def test_an_append_to_several_streams_is_all_or_nothing() -> None:
    plans = planner({"order-1": NEW_STREAM, "order-2": Head(0, LIVE, None)})
    refused = plans.plan([append("order-1", 2, NO_STREAM), append("order-2", 1, NO_STREAM)])
    assert isinstance(refused.error, WrongExpectedVersion)
    assert refused.rows == []
    assert plans.heads["order-1"] == NEW_STREAM
    accepted = plans.plan([append("order-1", 2, NO_STREAM), append("order-2", 1, 0)])
    assert accepted.results == [AppendResult(1, 12, 2), AppendResult(1, 13, 1)]
    assert [(r[0], r[1]) for r in accepted.rows] == [
        (11, "order-1"),
        (12, "order-1"),
        (13, "order-2"),
    ]


def test_a_request_may_mix_a_retry_and_a_new_append() -> None:
    id_ = uuid.uuid4()
    plans = planner({"order-1": Head(0, LIVE, None), "order-2": NEW_STREAM})
    plans.earlier[id_] = ExistingEvent("order-1", 0, 7)
    plan = plans.plan([append("order-1", 1, NO_STREAM, [id_]), append("order-2", 1, NO_STREAM)])
    assert plan.results == [AppendResult(0, 7, 1), AppendResult(0, 11, 1)]
    assert len(plan.rows) == 1


def test_undo_forgets_the_last_plan() -> None:
    ids = [uuid.uuid4()]
    plans = planner({"order-1": Head(5, SOFT_DELETED, b"\x03" * 32)})
    first = plans.plan([append("order-1", 1, ANY, ids)])
    plans.undo()
    assert plans.heads["order-1"] == Head(5, SOFT_DELETED, b"\x03" * 32)
    assert plans.next_position == 11
    assert ids[0] not in plans.earlier
    again = plans.plan([append("order-1", 1, ANY, ids)])
    assert again.rows == first.rows
    assert again.revived == ["order-1"]


def test_undo_of_a_retry_and_a_new_append_keeps_the_retried_ids() -> None:
    old, new = uuid.uuid4(), uuid.uuid4()
    plans = planner({"order-1": Head(0, LIVE, None), "order-2": NEW_STREAM})
    plans.earlier[old] = ExistingEvent("order-1", 0, 7)
    plans.plan([append("order-1", 1, NO_STREAM, [old]), append("order-2", 1, NO_STREAM, [new])])
    plans.undo()
    assert plans.earlier == {old: ExistingEvent("order-1", 0, 7)}
    assert plans.heads == {"order-1": Head(0, LIVE, None), "order-2": NEW_STREAM}
    assert plans.next_position == 11


def test_lookups_name_each_stream_once_and_every_given_id() -> None:
    ids = [uuid.uuid4(), uuid.uuid4()]
    streams, wanted, fresh = lookups(
        [
            [append("a-1", 1), append("b-1", 1, ids=ids[:1])],
            [append("a-1", 1, ids=ids[1:])],
            [append("c-1", 2)],
        ]
    )
    assert streams == ["a-1", "b-1", "c-1"]
    assert wanted == ids
    assert fresh == 3  # the events without an id


# Hypothesis: random groups of requests, planned group after group against a log kept from
# the rows the planner returned, answer exactly as the model of the contract does.

STREAMS = ("order-1", "order-2", "user-1")
EXPECTED = st.one_of(st.sampled_from([ANY, NO_STREAM, STREAM_EXISTS]), st.integers(0, 5))
PART = st.tuples(
    st.sampled_from(["fresh", "given", "again"]),
    st.integers(1, 3),
    EXPECTED,
    st.integers(0, 100),
)
REQUEST = st.dictionaries(st.sampled_from(STREAMS), PART, min_size=1, max_size=3)
GROUP = st.tuples(
    st.lists(REQUEST, min_size=1, max_size=6),
    st.sampled_from([None, "soft", "hard"]),
    st.sampled_from(STREAMS),
)


class Log:
    """What a backend keeps of the planned rows: enough to gather heads and ids again."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.states: dict[str, int] = {}

    def head(self, stream: str) -> Head:
        mine = [r for r in self.rows if r[1] == stream]
        state = self.states.get(stream, LIVE)
        return Head(mine[-1][3], state, mine[-1][9]) if mine else Head(None, state, None)

    def earlier(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, ExistingEvent]:
        where = {r[4]: ExistingEvent(r[1], r[3], r[0]) for r in self.rows}
        return {i: where[i.bytes] for i in ids if i.bytes in where}


@settings(max_examples=150, deadline=None)
@given(st.lists(GROUP, min_size=1, max_size=6))
def test_the_planner_answers_as_the_model(
    groups: list[tuple[list[dict[str, tuple[str, int, ExpectedVersion, int]]], str | None, str]],
) -> None:
    model, log = _Model(), Log()
    batches: list[tuple[str, list[NewEvent]]] = []
    for requests, delete, victim in groups:
        parts: list[list[tuple[str, list[NewEvent], ExpectedVersion]]] = []
        for request in requests:
            call: list[tuple[str, list[NewEvent], ExpectedVersion]] = []
            for stream, (kind, size, expected, pick) in request.items():
                if kind == "again" and batches:
                    stream, events = batches[pick % len(batches)]
                else:
                    chosen = [uuid.uuid4() if kind == "given" else None for _ in range(size)]
                    events = [NewEvent("Happened", {"n": n}, id=i) for n, i in enumerate(chosen)]
                    batches.append((stream, events))
                call.append((stream, events, expected))
            given_ids = [e.id for _, events, _ in call for e in events if e.id]
            named = [s for s, _, _ in call]
            if len(set(given_ids)) == len(given_ids) and len(set(named)) == len(named):
                parts.append(call)
        prepared = [[rules.prepare_append(*part, 1 << 20) for part in c] for c in parts]
        streams, ids, fresh = lookups(prepared)
        plans = Planner(
            {s: log.head(s) for s in streams},
            log.earlier(ids),
            len(log.rows) + 1,
            recorded_at=1,
            key=None,
            fresh=fresh,
        )
        for call, appends in zip(parts, prepared, strict=True):
            plan = plans.plan(appends)
            try:
                want: object = ("ok", model.append_many(call))
            except (StreamDeleted, WrongExpectedVersion, IdempotencyConflict) as error:
                want = _failure(error)
            got = ("ok", plan.results) if plan.error is None else _failure(plan.error)
            assert got == want
            log.rows += plan.rows
            for stream in plan.revived:
                log.states[stream] = LIVE
        assert [r[0] for r in log.rows] == list(range(1, len(log.rows) + 1))
        for stream in STREAMS:
            check_chain([r for r in log.rows if r[1] == stream])
        if delete is not None and not model.streams.get(victim, _ModelStream()).tombstoned:
            had_events = model.stream_version(victim) is not None
            model.delete(victim, ANY, hard=delete == "hard")
            if delete == "hard":
                log.states[victim] = TOMBSTONED
            elif had_events:
                log.states[victim] = SOFT_DELETED


def check_chain(rows: list[Row]) -> None:
    assert [r[3] for r in rows] == list(range(len(rows)))
    previous = None
    for row in rows:
        position, stream, _, version, id_, kind, data, meta, at, hash_ = row[:10]
        assert row[10:] == (None, None, None)  # no raw parts
        expected = link(previous, position, stream, version, id_, kind, data, meta, at, None)
        assert hash_ == expected
        previous = hash_


# -- an append made if_untouched (the command bus's, from a kept state) ------------------------


def untouched(stream: str, expected: ExpectedVersion) -> PreparedAppend:
    return msgspec.structs.replace(append(stream, 1, expected), if_untouched=True)


@pytest.mark.parametrize("head", [NEW_STREAM, Head(3, UNTOUCHED, None)])
def test_an_untouched_append_is_accepted_on_a_stream_without_a_row(head: Head) -> None:
    expected = NO_STREAM if head.last is None else head.last
    plans = planner({"order-1": head})

    plan = plans.plan([untouched("order-1", expected)])

    assert plan.error is None
    assert plans.heads["order-1"].state == UNTOUCHED  # an append leaves it so
    assert plans.plan([untouched("order-1", plans.heads["order-1"].last or 0)]).error is None


@pytest.mark.parametrize(("state", "expected"), [(LIVE, 3), (SOFT_DELETED, NO_STREAM)])
def test_an_untouched_append_is_refused_on_a_stream_with_a_row(
    state: int, expected: ExpectedVersion
) -> None:
    plans = planner({"order-1": Head(3, state, None)})

    plan = plans.plan([untouched("order-1", expected)])

    assert isinstance(plan.error, StreamTouched)
    assert isinstance(plan.error, WrongExpectedVersion)  # a conflict to every caller
    assert (plan.error.stream, plan.rows, plan.revived) == ("order-1", [], [])
    assert plans.heads["order-1"] == Head(3, state, None)
    assert plans.plan([append("order-1", 1, ANY)]).error is None  # any other append: as ever


def test_an_untouched_append_to_a_tombstoned_stream_is_refused_as_deleted() -> None:
    plan = planner({"order-1": Head(3, TOMBSTONED, None)}).plan([untouched("order-1", 3)])
    assert isinstance(plan.error, StreamDeleted)


def test_a_wrong_version_refuses_an_untouched_append_as_a_plain_conflict() -> None:
    plan = planner({"order-1": Head(3, UNTOUCHED, None)}).plan([untouched("order-1", 2)])
    assert type(plan.error) is WrongExpectedVersion


def test_a_revived_stream_is_live_after_the_append_a_live_one_stays_live() -> None:
    plans = planner({"order-1": Head(3, SOFT_DELETED, None), "order-2": Head(0, LIVE, None)})
    assert plans.plan([append("order-1", 1, NO_STREAM)]).revived == ["order-1"]
    assert plans.plan([append("order-2", 1, 0)]).error is None
    assert (plans.heads["order-1"].state, plans.heads["order-2"].state) == (LIVE, LIVE)
