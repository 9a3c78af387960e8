"""ProjectionSpec: given events, then rows or a query's answer, for SQL projections (on a
private in-memory SQLite database when given none) and plain ones; failures show the
expected against the actual, and a failing handler's error."""

from __future__ import annotations

import pytest

from eskit.projections import Projection, ReadModelConnection, SQLProjection, handles
from eskit.store.model import NewEvent, RecordedEvent
from eskit.testing import ProjectionSpec

pytestmark = pytest.mark.anyio


class Totals(SQLProjection):
    name = "totals"
    tables = ("totals",)
    schema = ("CREATE TABLE {totals} (stream TEXT PRIMARY KEY, total BIGINT NOT NULL)",)

    @handles("Added")
    def added(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        if event.data["n"] < 0:
            raise ValueError("negative")
        db.execute(
            "INSERT INTO {totals} VALUES (:stream, :n) ON CONFLICT (stream)"
            " DO UPDATE SET total = {totals}.total + excluded.total",
            {"stream": event.stream, "n": event.data["n"]},
        )


class Counter(Projection):
    name = "counter"

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    @handles("Added")
    def added(self, event: RecordedEvent) -> None:
        self.seen[event.stream] = self.seen.get(event.stream, 0) + 1


def added(n: int) -> NewEvent:
    return NewEvent("Added", {"n": n})


async def test_rows_and_answers_of_a_sql_projection() -> None:
    async with ProjectionSpec(Totals()) as spec:
        spec.given("a", added(1), added(2)).given("b", added(5))

        assert await spec.then_rows("totals", ("b", 5), ("a", 3)) == [("a", 3), ("b", 5)]
        await spec.then_rows("totals", {"stream": "a"}, {"stream": "b"}, order_by="stream")
        spec.given("b", added(1))
        await spec.then_answer(
            lambda db: db.read(lambda c: c.execute("SELECT sum(total) FROM totals").fetchone()[0]),
            9,
        )


async def test_other_rows_fail_showing_expected_against_actual() -> None:
    async with ProjectionSpec(Totals()) as spec:
        spec.given("a", added(1))

        with pytest.raises(AssertionError) as failed:
            await spec.then_rows("totals", ("a", 2))
    assert str(failed.value) == (
        "totals holds other rows than expected\n✗ #0 expected ('a', 2)\n  #0 actual   ('a', 1)"
    )


async def test_a_failing_handler_fails_the_spec_with_its_error() -> None:
    async with ProjectionSpec(Totals()) as spec:
        spec.given("a", added(1), added(-1))

        with pytest.raises(
            AssertionError, match=r"totals failed on an event: ValueError: negative"
        ):
            await spec.then_rows("totals", ("a", 1))


async def test_a_plain_projection_is_asked_directly() -> None:
    async with ProjectionSpec(Counter()) as spec:
        spec.given("a", added(1), added(2)).given("b", added(3))

        await spec.then_answer(lambda counter: counter.seen, {"a": 2, "b": 1})
        with pytest.raises(AssertionError, match=r"expected \{'a': 1\}\n  actual   \{'a': 2"):
            await spec.then_answer(lambda counter: counter.seen, {"a": 1})


async def test_misuse_is_said_plainly() -> None:
    with pytest.raises(TypeError, match="give ProjectionSpec events="):
        ProjectionSpec(Totals()).given("a", object())
    async with ProjectionSpec(Counter()) as plain:
        with pytest.raises(TypeError, match="then_rows is for a SQLProjection"):
            await plain.then_rows("x")
    async with ProjectionSpec(Totals()) as spec:
        with pytest.raises(ValueError, match="has no table 'nope'"):
            await spec.then_rows("nope")


async def test_rows_as_dicts_compare_their_columns_in_any_order() -> None:
    async with ProjectionSpec(Totals()) as spec:
        spec.given("a", added(1)).given("b", added(2)).given("c", added(3))

        await spec.then_rows("totals", {"total": 3}, {"total": 1}, {"total": 2})
        with pytest.raises(TypeError, match="all as tuples, or all as dicts"):
            await spec.then_rows("totals", {"total": 3}, ("a", 1))
