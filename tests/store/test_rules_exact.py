"""``rules._exact_json`` gives the round trip's verdict: a dict it accepts by its types
alone reads back equal, and anything else it still reads back (or refuses) as before."""

from __future__ import annotations

import enum
import math
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from eskit.store import rules
from eskit.store.nesting import may_nest_too_deep


class Level(enum.IntEnum):
    LOW = 1


class Name(str):
    pass


def round_trip(value: dict[Any, Any]) -> bytes | None:
    """The verdict before the shortcut: encode, read back, compare."""
    try:
        encoded = msgspec.json.encode(value)
        if may_nest_too_deep(encoded, rules.MAX_NESTING):
            return None
        return encoded if msgspec.json.decode(encoded) == value else None
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.MsgspecError):
        return None


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text()
    | st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=2)
    | st.just(Level.LOW)
    | st.builds(Name, st.text(max_size=3))
)
odd = st.tuples(scalars) | st.sets(st.integers(), max_size=2) | st.lists(scalars, max_size=2)
keys = st.text() | st.integers() | st.just(Level.LOW) | st.builds(Name, st.text(max_size=3))
flat = st.dictionaries(keys, scalars | odd, max_size=6)


@settings(max_examples=2000)
@given(flat)
def test_same_verdict_as_the_round_trip(value: dict[Any, Any]) -> None:
    assert rules._exact_json(value) == round_trip(value)


@settings(max_examples=1000)
@given(st.dictionaries(st.text(), st.none() | st.booleans() | st.integers() | st.floats()))
def test_accepted_reads_back_equal(value: dict[str, Any]) -> None:
    encoded = rules._exact_json(value)
    if encoded is not None:
        assert msgspec.json.decode(encoded) == value
    else:
        assert any(type(v) is float and not math.isfinite(v) for v in value.values())


def test_too_big_an_int_and_a_lone_surrogate_are_refused() -> None:
    assert rules._exact_json({"a": 10**5000}) is None
    assert rules._exact_json({"a": "\ud800"}) is None
    assert rules._exact_json({"\ud800": 1}) is None
    assert rules._exact_json({"a": math.nan}) is None
    assert rules._exact_json({"a": (1,)}) is None
    assert rules._exact_json({1: 1}) is None
