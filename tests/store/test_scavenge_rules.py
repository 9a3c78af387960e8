"""What a scavenge may remove of a stream (``scavenge.removable``), for every stream: a
prefix of its events, each hidden from reads and at or below the consumers' floor, ending
just before the first event that must stay."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from eskit.store.planner import LIVE, SOFT_DELETED, TOMBSTONED
from eskit.store.scavenge import Candidate, StreamRules, hidden_because, removable

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
MICROS = int(NOW.timestamp() * 1_000_000)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

rules = st.builds(
    StreamRules,
    st.sampled_from([LIVE, LIVE, SOFT_DELETED, TOMBSTONED]),
    st.none() | st.integers(0, 30),
    st.none() | st.integers(1, 30),
    st.none() | st.floats(1, 100),
)


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[Candidate], int]:
    """A stream's events (versions from some first one on, positions and times rising,
    times sometimes going back a little) and a floor."""
    first = draw(st.integers(0, 10))
    count = draw(st.integers(0, 25))
    position = draw(st.integers(1, 5))
    at = MICROS - 200_000_000
    events = []
    for version in range(first, first + count):
        position += draw(st.integers(1, 3))
        at += draw(st.integers(-2_000_000, 20_000_000))
        events.append(Candidate(position, version, b"id", at, b"link"))
    return events, draw(st.integers(0, position + 3))


@given(rules, streams())
def test_a_scavenge_takes_a_hidden_prefix_below_the_floor(
    found: StreamRules, stream: tuple[list[Candidate], int]
) -> None:
    events, floor = stream
    last = events[-1].version if events else 0
    taken = removable(found, last, events, floor, NOW)
    assert [e for e, _ in taken] == events[: len(taken)]
    limit = None if found.max_age is None else NOW - dt.timedelta(seconds=found.max_age)
    oldest = None if limit is None else (limit - EPOCH) // dt.timedelta(microseconds=1)
    for event, why in taken:
        assert event.position <= floor
        assert why == hidden_because(found, last, event, oldest)
        assert why is not None
    if len(taken) < len(events):
        stays = events[len(taken)]
        assert stays.position > floor or hidden_because(found, last, stays, oldest) is None
    if found.state in (SOFT_DELETED, TOMBSTONED):
        assert len(taken) == sum(e.position <= floor for e in events)
