"""The nesting limit's two checks agree with a plain recursive measure of depth: the cheap
bound on the JSON (``may_nest_too_deep``) never misses a document that is too deep, and the
walk (``check_nesting``) refuses exactly those."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eskit.store.nesting import check_nesting, may_nest_too_deep

LIMIT = 4
"""A small limit, so that random documents land on both sides of it."""

scalars = st.none() | st.booleans() | st.integers() | st.text(alphabet='{}[]"\\ab', max_size=5)
documents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=40,
)


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


@settings(max_examples=2000, deadline=None)
@given(st.dictionaries(st.text(max_size=3), documents, max_size=4))
def test_the_checks_agree_with_the_depth(value: dict[str, Any]) -> None:
    too_deep = depth(value) > LIMIT
    encoded = msgspec.json.encode(value)
    if too_deep:
        assert may_nest_too_deep(encoded, LIMIT)
    if not may_nest_too_deep(encoded, LIMIT):
        assert not too_deep
    if too_deep:
        with pytest.raises(ValueError, match="nested deeper"):
            check_nesting(value, "data", "data", LIMIT)
    else:
        check_nesting(value, "data", "data", LIMIT)
