"""Conformance: appends to several streams at once (``append_many``), all or nothing."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from eskit.errors import IdempotencyConflict, StreamDeleted, WrongExpectedVersion
from eskit.store.base import EventStore
from eskit.store.model import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    Append,
    AppendResult,
    NewEvent,
    RecordedEvent,
)
from eskit.testing.conformance.helpers import (
    INVALID_NAMES,
    NOT_JSON,
    ConformanceBase,
    collect,
    log_of,
    new,
    numbered,
    subscription,
    take,
    versions,
    with_id,
)


async def _three_streams(store: EventStore) -> list[RecordedEvent]:
    """order-1 at version 1, order-2 at version 0, order-3 absent; returns the log."""
    await store.append("order-1", numbered(2))
    await store.append("order-2", numbered(1))
    return await log_of(store)


class MultiAppendConformance(ConformanceBase):
    """append_many: every part checked like an append, then all written or none."""

    # == all written ==========================================================================

    async def test_append_many_writes_all_with_consecutive_positions(
        self, store: EventStore
    ) -> None:
        """Results in the order given; the events follow each other in the log in that order."""
        await _three_streams(store)
        results = await store.append_many(
            [
                Append("order-3", numbered(3, type_="C"), NO_STREAM),
                Append("order-1", numbered(1, type_="A"), 1),
                Append("order-2", numbered(2, type_="B"), STREAM_EXISTS),
            ]
        )
        assert results == [AppendResult(2, 6, 3), AppendResult(2, 7, 1), AppendResult(2, 9, 2)]
        written = await collect(store.read_all(after=3))
        assert [(e.stream, e.version, e.position, e.type) for e in written] == [
            ("order-3", 0, 4, "C"),
            ("order-3", 1, 5, "C"),
            ("order-3", 2, 6, "C"),
            ("order-1", 2, 7, "A"),
            ("order-2", 1, 8, "B"),
            ("order-2", 2, 9, "B"),
        ]
        assert await versions(store, "order-1") == [0, 1, 2]
        assert await store.stream_version("order-3") == 2
        assert await store.last_position() == 9

    async def test_append_many_of_one_append_is_an_append(self, store: EventStore) -> None:
        (result,) = await store.append_many([Append("order-1", numbered(2))])
        assert result == AppendResult(1, 2, 2)
        assert await store.append("order-1", [new()], expected_version=1) == AppendResult(2, 3)

    async def test_append_many_expected_version_defaults_to_any(self, store: EventStore) -> None:
        await _three_streams(store)
        results = await store.append_many([Append("order-1", [new()]), Append("order-3", [new()])])
        assert [r.last_version for r in results] == [2, 0]

    async def test_append_many_continues_a_soft_deleted_stream(self, store: EventStore) -> None:
        """A soft-deleted part is absent for the check and continues its versions."""
        await _three_streams(store)
        await store.delete_stream("order-1")
        results = await store.append_many(
            [Append("order-1", numbered(1), NO_STREAM), Append("order-2", numbered(1), 0)]
        )
        assert [r.last_version for r in results] == [2, 1]
        assert await versions(store, "order-1") == [2]

    # == nothing written ======================================================================

    @pytest.mark.parametrize("wrong", [0, 1, 2], ids=["first", "middle", "last"])
    async def test_append_many_with_one_wrong_expected_version_writes_nothing(
        self, store: EventStore, wrong: int
    ) -> None:
        """Whichever part conflicts, none of the others is written (nor half-written)."""
        log = await _three_streams(store)
        parts = [
            Append("order-1", numbered(2), 1),
            Append("order-2", numbered(3), 0),
            Append("order-3", numbered(1), NO_STREAM),
        ]
        parts[wrong] = Append(parts[wrong].stream, parts[wrong].events, 7)
        with pytest.raises(WrongExpectedVersion) as raised:
            await store.append_many(parts)
        actual = [1, 0, None][wrong]
        assert (raised.value.stream, raised.value.expected, raised.value.actual) == (
            parts[wrong].stream,
            7,
            actual,
        )
        assert await log_of(store) == log
        assert await store.stream_version("order-1") == 1
        assert await store.stream_version("order-3") is None

    async def test_append_many_with_tombstoned_part_raises_and_writes_nothing(
        self, store: EventStore
    ) -> None:
        log = await _three_streams(store)
        await store.tombstone_stream("order-2")
        with pytest.raises(StreamDeleted) as raised:
            await store.append_many(
                [Append("order-1", [new()]), Append("order-2", [new()]), Append("order-3", [new()])]
            )
        assert raised.value.stream == "order-2"
        assert await log_of(store) == log
        assert await store.stream_version("order-3") is None

    async def test_append_many_raises_the_first_failure_in_call_order(
        self, store: EventStore
    ) -> None:
        log = await _three_streams(store)
        await store.tombstone_stream("order-2")
        parts = [Append("order-1", [new()], 5), Append("order-2", [new()])]
        with pytest.raises(WrongExpectedVersion):
            await store.append_many(parts)
        with pytest.raises(StreamDeleted):
            await store.append_many(parts[::-1])
        assert await log_of(store) == log

    async def test_append_many_with_idempotency_conflict_writes_nothing(
        self, store: EventStore
    ) -> None:
        a, b = with_id("A"), with_id("B")
        await store.append("order-1", [a])
        log = await log_of(store)
        with pytest.raises(IdempotencyConflict) as raised:
            await store.append_many([Append("order-2", [new()]), Append("order-1", [a, b])])
        assert raised.value.stream == "order-1"
        assert await log_of(store) == log

    async def test_append_many_failure_leaves_store_usable(self, store: EventStore) -> None:
        await _three_streams(store)
        with pytest.raises(WrongExpectedVersion):
            await store.append_many([Append("order-3", [new()]), Append("order-1", [new()], 0)])
        results = await store.append_many(
            [Append("order-3", [new()], NO_STREAM), Append("order-1", [new()], 1)]
        )
        assert results == [AppendResult(0, 4, 1), AppendResult(2, 5, 1)]

    # == idempotent retries ===================================================================

    async def test_append_many_idempotent_retry_returns_the_original_results(
        self, store: EventStore
    ) -> None:
        """The whole call sent again (a client retrying) writes nothing and answers the same."""
        await _three_streams(store)
        parts = [
            Append("order-3", [with_id("C"), with_id("C")], NO_STREAM),
            Append("order-1", [with_id("A")], 1),
        ]
        first = await store.append_many(parts)
        log = await log_of(store)
        assert await store.append_many(parts) == first
        await store.append("order-1", [new()])  # later appends do not change the answer
        assert await store.append_many(parts) == first
        assert await store.last_position() == len(log) + 1

    async def test_append_many_with_one_part_retried_writes_the_others(
        self, store: EventStore
    ) -> None:
        """A part that was written before is answered with its original result, and only
        the new parts are written (with consecutive positions)."""
        earlier = [with_id("A"), with_id("A")]
        original = await store.append("order-1", earlier, expected_version=NO_STREAM)
        results = await store.append_many(
            [
                Append("order-2", numbered(2)),
                Append("order-1", earlier, NO_STREAM),
                Append("order-3", numbered(1)),
            ]
        )
        assert results == [AppendResult(1, 4, 2), original, AppendResult(0, 5, 1)]
        assert await versions(store, "order-1") == [0, 1]
        assert await store.last_position() == 5

    async def test_append_many_concurrent_retries_write_once(self, store: EventStore) -> None:
        parts = [Append("order-1", [with_id()], NO_STREAM), Append("order-2", [with_id()])]
        results = await asyncio.gather(*(store.append_many(parts) for _ in range(10)))
        assert all(r == [AppendResult(0, 1, 1), AppendResult(0, 2, 1)] for r in results)
        assert await store.last_position() == 2

    # == invalid input ========================================================================

    @pytest.mark.parametrize(
        ("appends", "error", "message"),
        [
            ([], ValueError, "at least one"),
            ((), ValueError, "at least one"),
            (Append("order-1", [new()]), TypeError, "list of eskit.Append"),
            ((a for a in [Append("order-1", [new()])]), TypeError, "list of eskit.Append"),
            (None, TypeError, "list of eskit.Append"),
            ("order-1", TypeError, "list of eskit.Append"),
            ([Append("order-1", [new()]), ("order-2", [new()])], TypeError, r"appends\[1\]"),
            ([Append("order-1", [new()]), Append("order-1", [new()])], ValueError, "twice"),
            ([Append("order-2", [new()]), Append("order-1", [])], ValueError, r"appends\[1\]"),
            (
                [Append("order-2", [new()]), Append(INVALID_NAMES["dollar"], [new()])],
                ValueError,
                r"\[1\]",
            ),
            (
                [Append("order-2", [new()]), Append("order-1", [new()], -1)],
                ValueError,
                r"appends\[1\]",
            ),
            (
                [
                    Append("order-1", [new()]),
                    Append("order-2", [new(), NewEvent("X", NOT_JSON["set"])]),
                ],
                ValueError,
                r"appends\[1\].*event 1",
            ),
        ],
        ids=[
            "empty_list",
            "empty_tuple",
            "bare_append",
            "generator",
            "none",
            "str",
            "tuple_part",
            "same_stream_twice",
            "no_events",
            "invalid_name",
            "invalid_expected_version",
            "not_json",
        ],
    )
    async def test_append_many_invalid_input_is_refused(
        self, store: EventStore, appends: Any, error: type[Exception], message: str
    ) -> None:
        """A wrong type is a TypeError, a wrong value a ValueError; nothing is written."""
        await _three_streams(store)
        log = await log_of(store)
        with pytest.raises(error, match=message):
            await store.append_many(appends)
        assert await log_of(store) == log

    async def test_append_many_same_event_id_in_two_parts_is_value_error(
        self, store: EventStore
    ) -> None:
        event = NewEvent("A", {}, id=uuid.uuid4())
        with pytest.raises(ValueError, match="twice"):
            await store.append_many([Append("order-1", [event]), Append("order-2", [event])])
        assert await store.last_position() == 0

    async def test_append_many_over_max_event_size_is_value_error(self, tmp_path: Any) -> None:
        async with self.make_store(tmp_path, max_event_size=1000) as store:
            with pytest.raises(ValueError, match="1000"):
                await store.append_many(
                    [Append("order-1", [new()]), Append("order-2", [new(blob="x" * 1001)])]
                )
            assert await store.last_position() == 0

    # == concurrency and readers ==============================================================

    async def test_append_many_racing_on_overlapping_streams_one_wins(
        self, store: EventStore
    ) -> None:
        """30 writers each append to two of three streams at version 0; any two writers
        share a stream, so exactly one call lands and the others conflict."""
        streams = ["order-1", "order-2", "order-3"]
        for stream in streams:
            await store.append(stream, [new()])
        pairs = [(streams[w % 3], streams[(w + 1) % 3]) for w in range(30)]
        outcomes = await asyncio.gather(
            *(
                store.append_many([Append(s, [new("Raced", writer=w)], 0) for s in pair])
                for w, pair in enumerate(pairs)
            ),
            return_exceptions=True,
        )
        wins = [w for w, o in enumerate(outcomes) if isinstance(o, list)]
        assert len(wins) == 1, outcomes
        assert all(
            isinstance(o, WrongExpectedVersion) for w, o in enumerate(outcomes) if w != wins[0]
        )
        winner = wins[0]
        for stream in streams:
            read = await collect(store.read_stream(stream))
            if stream in pairs[winner]:
                assert [(e.version, e.data) for e in read[1:]] == [(1, {"writer": winner})]
            else:
                assert len(read) == 1
        assert await store.last_position() == 5

    async def test_append_many_seen_by_a_subscriber_in_order(self, store: EventStore) -> None:
        store.poll_interval = 60.0  # a missed wake-up fails the test instead of polling
        async with subscription(store) as events:
            pending = asyncio.ensure_future(take(events, 5))
            await store.append_many(
                [Append("user-1", numbered(2)), Append("order-1", numbered(3, start=2))]
            )
            received = await pending
        assert [(e.stream, e.position, e.data["n"]) for e in received] == [
            ("user-1", 1, 0),
            ("user-1", 2, 1),
            ("order-1", 3, 2),
            ("order-1", 4, 3),
            ("order-1", 5, 4),
        ]

    async def test_append_many_readers_never_see_part_of_it(self, store: EventStore) -> None:
        """A reader sees all events of an append_many or none, even while they are written."""
        store.page_size = 10_000  # one query per read: each read is one snapshot of the log

        async def write() -> None:
            for i in range(20):
                await store.append_many(
                    [Append(f"order-{i}", numbered(5)), Append(f"user-{i}", numbered(5))]
                )

        async def read() -> list[list[RecordedEvent]]:
            snapshots = []
            for _ in range(20):
                snapshots.append(await log_of(store))
                await asyncio.sleep(0)  # let the writer advance between snapshots
            return snapshots

        _, snapshots = await asyncio.gather(write(), read())
        for snapshot in snapshots:
            assert len(snapshot) % 10 == 0, [e.stream for e in snapshot]
            assert [e.position for e in snapshot] == list(range(1, len(snapshot) + 1))

    async def test_append_many_to_many_streams(self, store: EventStore) -> None:
        """More parts than SQLite takes parameters in one statement, many events each."""
        parts = [Append(f"order-{i}", numbered(3), ANY) for i in range(700)]
        results = await store.append_many(parts)
        assert [r.last_position for r in results] == list(range(3, 2101, 3))
        assert await store.stream_version("order-699") == 2
