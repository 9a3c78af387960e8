"""Conformance: appends (expected versions, races, idempotent retries, atomic batches)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path

import pytest

from eskit.errors import IdempotencyConflict, StreamDeleted, WrongExpectedVersion
from eskit.store.base import EventStore
from eskit.store.model import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
)
from eskit.testing.conformance.helpers import (
    NOT_JSON,
    PAYLOADS,
    T0,
    ConformanceBase,
    ManualClock,
    collect,
    log_of,
    new,
    numbered,
    same_json,
    versions,
    with_id,
)


class AppendConformance(ConformanceBase):
    """Appending: the expected-version matrix, concurrent writers, retries, batches,
    and what a recorded event holds.
    """

    # == expected version: {ANY, NO_STREAM, STREAM_EXISTS, right, wrong} x stream state ====

    async def _check_append_outcome(
        self,
        store: EventStore,
        stream: str,
        expected: ExpectedVersion,
        outcome: int | tuple[type[Exception], int | None],
        visible_before: list[int],
    ) -> None:
        """Append two events; either they land at ``outcome`` (last version) or the
        append raises with ``actual`` and leaves the whole log as it was."""
        log = await log_of(store)
        batch = [new("Tried", i=0), new("Tried", i=1)]
        if isinstance(outcome, int):
            result = await store.append(stream, batch, expected_version=expected)
            assert result.last_version == outcome
            assert result.last_position == len(log) + 2
            assert await store.stream_version(stream) == outcome
            read = await collect(store.read_stream(stream))
            assert [e.version for e in read] == [*visible_before, outcome - 1, outcome]
            assert [e.data for e in read[-2:]] == [{"i": 0}, {"i": 1}]
            return
        error_type, actual = outcome
        with pytest.raises(error_type) as raised:
            await store.append(stream, batch, expected_version=expected)
        if isinstance(raised.value, WrongExpectedVersion):
            assert raised.value.stream == stream
            assert raised.value.expected == expected
            assert raised.value.actual == actual
        assert await log_of(store) == log
        assert await store.last_position() == len(log)

    @pytest.mark.parametrize(
        ("expected", "outcome"),
        [
            (ANY, 1),
            (NO_STREAM, 1),
            (STREAM_EXISTS, (WrongExpectedVersion, None)),
            (0, (WrongExpectedVersion, None)),
            (5, (WrongExpectedVersion, None)),
        ],
        ids=["any", "no_stream", "stream_exists", "int_0", "int_5"],
    )
    async def test_expected_version_on_absent_stream(
        self,
        store: EventStore,
        expected: ExpectedVersion,
        outcome: int | tuple[type[Exception], int | None],
    ) -> None:
        """A stream that was never written: only ANY and NO_STREAM may create it."""
        await store.append("other-1", numbered(2))
        await self._check_append_outcome(store, "order-1", expected, outcome, [])

    @pytest.mark.parametrize(
        ("expected", "outcome"),
        [
            (ANY, 4),
            (NO_STREAM, (WrongExpectedVersion, 2)),
            (STREAM_EXISTS, 4),
            (2, 4),
            (1, (WrongExpectedVersion, 2)),
            (3, (WrongExpectedVersion, 2)),
            (0, (WrongExpectedVersion, 2)),
        ],
        ids=["any", "no_stream", "stream_exists", "right_int", "stale_int", "next_int", "int_0"],
    )
    async def test_expected_version_on_stream_with_events(
        self,
        store: EventStore,
        expected: ExpectedVersion,
        outcome: int | tuple[type[Exception], int | None],
    ) -> None:
        """A stream at version 2: the int must be exactly the last version (not the next)."""
        await store.append("order-1", numbered(3))
        await self._check_append_outcome(store, "order-1", expected, outcome, [0, 1, 2])

    @pytest.mark.parametrize(
        ("expected", "outcome"),
        [
            (ANY, 4),
            (NO_STREAM, 4),
            (STREAM_EXISTS, (WrongExpectedVersion, None)),
            (2, (WrongExpectedVersion, None)),
            (0, (WrongExpectedVersion, None)),
        ],
        ids=["any", "no_stream", "stream_exists", "old_last_int", "int_0"],
    )
    async def test_expected_version_on_soft_deleted_stream(
        self,
        store: EventStore,
        expected: ExpectedVersion,
        outcome: int | tuple[type[Exception], int | None],
    ) -> None:
        """Soft-deleted = absent for the check, but versions continue after the old last."""
        await store.append("order-1", numbered(3))
        await store.delete_stream("order-1")
        await self._check_append_outcome(store, "order-1", expected, outcome, [])

    @pytest.mark.parametrize(
        "expected",
        [ANY, NO_STREAM, STREAM_EXISTS, 2, 3, 0],
        ids=["any", "no_stream", "stream_exists", "old_last_int", "next_int", "int_0"],
    )
    async def test_expected_version_on_tombstoned_stream(
        self, store: EventStore, expected: ExpectedVersion
    ) -> None:
        """A tombstoned stream refuses every append, whatever version is expected."""
        await store.append("order-1", numbered(3))
        await store.tombstone_stream("order-1")
        await self._check_append_outcome(store, "order-1", expected, (StreamDeleted, None), [])

    async def test_expected_version_error_message_names_everything(self, store: EventStore) -> None:
        """The message alone must let an operator see stream, expected and actual."""
        await store.append("order-1", numbered(3))
        with pytest.raises(WrongExpectedVersion) as raised:
            await store.append("order-1", [new()], expected_version=7)
        message = str(raised.value)
        assert "order-1" in message
        assert "7" in message
        assert "2" in message

    @pytest.mark.parametrize(
        ("before", "expected", "message"),
        [
            (
                "absent",
                STREAM_EXISTS,
                "expected the stream to exist, but the stream does not exist",
            ),
            ("absent", 0, "expected version 0, but the stream does not exist"),
            ("at_2", NO_STREAM, "expected no stream, but the stream is at version 2"),
            ("at_2", 5, "expected version 5, but the stream is at version 2"),
            ("deleted", STREAM_EXISTS, "expected the stream to exist, but the stream was deleted"),
            ("deleted", 2, "expected version 2, but the stream was deleted"),
        ],
        ids=[
            "absent-exists",
            "absent-int",
            "at-no_stream",
            "at-int",
            "deleted-exists",
            "deleted-int",
        ],
    )
    async def test_expected_version_error_message_reads_well(
        self, store: EventStore, before: str, expected: ExpectedVersion, message: str
    ) -> None:
        """The same words on every backend, for appends and deletes alike."""
        if before != "absent":
            await store.append("order-1", numbered(3))
        if before == "deleted":
            await store.delete_stream("order-1")
        for attempt in (
            store.append("order-1", [new()], expected_version=expected),
            store.delete_stream("order-1", expected_version=expected),
        ):
            with pytest.raises(WrongExpectedVersion) as raised:
                await attempt
            assert str(raised.value) == f"stream 'order-1': {message}"
            error = raised.value
            assert (error.stream, error.expected) == ("order-1", expected)
            assert (error.actual, error.deleted) == (
                2 if before == "at_2" else None,
                before == "deleted",
            )

    async def test_expected_version_can_chain_appends(self, store: EventStore) -> None:
        """The result of one append is the expected version of the next."""
        result = await store.append("order-1", [new()], expected_version=NO_STREAM)
        for _ in range(5):
            result = await store.append(
                "order-1", numbered(2), expected_version=result.last_version
            )
        assert result.last_version == 10
        assert await versions(store, "order-1") == list(range(11))

    # == concurrency =======================================================================

    async def test_concurrent_appends_with_same_expected_version_one_wins(
        self, store: EventStore
    ) -> None:
        """50 writers race from version 0: exactly one append lands, 49 are refused."""
        await store.append("order-1", [new()])
        outcomes = await asyncio.gather(
            *(
                store.append("order-1", [new("Raced", writer=w)], expected_version=0)
                for w in range(50)
            ),
            return_exceptions=True,
        )
        wins = [o for o in outcomes if isinstance(o, AppendResult)]
        losses = [o for o in outcomes if isinstance(o, WrongExpectedVersion)]
        assert len(wins) == 1
        assert len(losses) == 49
        assert all(e.actual == 1 and e.expected == 0 for e in losses)
        winner = outcomes.index(wins[0])
        read = await collect(store.read_stream("order-1"))
        assert [e.version for e in read] == [0, 1]
        assert read[1].data == {"writer": winner}
        assert await store.last_position() == 2

    async def test_concurrent_appends_with_no_stream_one_creates_it(
        self, store: EventStore
    ) -> None:
        """50 writers race to create the same stream: one creates it, the rest see it."""
        outcomes = await asyncio.gather(
            *(
                store.append("order-1", numbered(2, start=10 * w), expected_version=NO_STREAM)
                for w in range(50)
            ),
            return_exceptions=True,
        )
        wins = [o for o in outcomes if isinstance(o, AppendResult)]
        losses = [o for o in outcomes if isinstance(o, WrongExpectedVersion)]
        assert wins == [AppendResult(1, 2, 2)]
        assert len(losses) == 49
        assert all(e.actual == 1 for e in losses)
        assert await store.last_position() == 2

    async def test_concurrent_writers_retrying_get_contiguous_versions(
        self, store: EventStore
    ) -> None:
        """Writers that retry on conflict all land, in one gap-free sequence of versions."""
        writers, appends_each = 10, 5

        async def write(writer: int) -> None:
            for i in range(appends_each):
                while True:
                    version = await store.stream_version("order-1")
                    # Give the other writers a turn between read and write: the race under test.
                    await asyncio.sleep(0)
                    try:
                        await store.append(
                            "order-1",
                            [new("Raced", writer=writer, i=i)],
                            expected_version=NO_STREAM if version is None else version,
                        )
                        break
                    except WrongExpectedVersion:
                        continue

        async with asyncio.timeout(30):
            await asyncio.gather(*(write(w) for w in range(writers)))
        read = await collect(store.read_stream("order-1"))
        assert [e.version for e in read] == list(range(writers * appends_each))
        assert [e.position for e in read] == sorted(e.position for e in read)
        for writer in range(writers):
            mine = [e.data["i"] for e in read if e.data["writer"] == writer]
            assert mine == list(range(appends_each))

    async def test_concurrent_appends_to_many_streams_get_unique_consecutive_positions(
        self, store: EventStore
    ) -> None:
        """Each append's events are consecutive in the log; no position is given twice."""
        results = await asyncio.gather(
            *(store.append(f"order-{i % 7}", numbered(3, start=3 * i)) for i in range(60))
        )
        taken = [p for r in results for p in range(r.first_position, r.last_position + 1)]
        assert sorted(taken) == list(range(1, 181))
        log = await log_of(store)
        assert [e.position for e in log] == list(range(1, 181))
        for result in results:
            batch = log[result.first_position - 1 : result.last_position]
            assert len({e.stream for e in batch}) == 1
            assert [e.data["n"] for e in batch] == [batch[0].data["n"] + k for k in range(3)]
        for stream in {e.stream for e in log}:
            assert await versions(store, stream) == list(range(len(await versions(store, stream))))

    async def test_concurrent_readers_never_see_part_of_a_batch(self, store: EventStore) -> None:
        """A reader sees all events of an append or none, even while appends run."""
        store.page_size = 10_000  # one query per read: each read is one snapshot of the log

        async def write() -> None:
            for i in range(20):
                await store.append(f"order-{i}", numbered(10, type_=f"Batch{i}"))

        async def read() -> list[list[RecordedEvent]]:
            snapshots = []
            for _ in range(20):
                snapshots.append(await log_of(store))
                await asyncio.sleep(0)  # let the writer advance between snapshots
            return snapshots

        _, snapshots = await asyncio.gather(write(), read())
        for snapshot in snapshots:
            sizes: dict[str, int] = {}
            for event in snapshot:
                sizes[event.stream] = sizes.get(event.stream, 0) + 1
            assert set(sizes.values()) <= {10}, sizes
            assert [e.position for e in snapshot] == list(range(1, len(snapshot) + 1))

    # == idempotent retries ================================================================

    async def test_idempotent_retry_at_same_expected_version_returns_same_result(
        self, store: EventStore
    ) -> None:
        """A retried append (same ids, same place) succeeds and writes nothing again."""
        await store.append("order-1", [new()])
        batch = [with_id("A"), with_id("B")]
        first = await store.append("order-1", batch, expected_version=0)
        again = await store.append("order-1", batch, expected_version=0)
        assert again == first
        assert (again.last_version, again.last_position) == (2, 3)
        read = await collect(store.read_stream("order-1"))
        assert [e.id for e in read[1:]] == [e.id for e in batch]
        assert await store.last_position() == 3

    async def test_idempotent_retry_with_no_stream_returns_same_result(
        self, store: EventStore
    ) -> None:
        """The retry of a stream-creating append is recognised, not a version conflict."""
        batch = [with_id("A"), with_id("B")]
        first = await store.append("order-1", batch, expected_version=NO_STREAM)
        assert await store.append("order-1", batch, expected_version=NO_STREAM) == first
        assert await versions(store, "order-1") == [0, 1]

    async def test_idempotent_retry_with_any_writes_no_duplicate(self, store: EventStore) -> None:
        batch = [with_id("A"), with_id("B")]
        first = await store.append("order-1", batch)
        assert await store.append("order-1", batch, expected_version=ANY) == first
        assert await store.append("order-1", batch, expected_version=STREAM_EXISTS) == first
        assert await versions(store, "order-1") == [0, 1]
        assert await store.last_position() == 2

    async def test_idempotent_retry_after_later_appends_returns_original_result(
        self, store: EventStore
    ) -> None:
        """A retry that arrives late (others appended since) still gets its own result."""
        batch = [with_id("A"), with_id("B")]
        first = await store.append("order-1", batch, expected_version=NO_STREAM)
        await store.append("order-1", numbered(3), expected_version=1)
        assert await store.append("order-1", batch, expected_version=NO_STREAM) == first
        assert await versions(store, "order-1") == [0, 1, 2, 3, 4]

    async def test_idempotent_retry_of_single_event(self, store: EventStore) -> None:
        event = with_id("A")
        first = await store.append("order-1", [event])
        assert await store.append("order-1", [event], expected_version=NO_STREAM) == first
        assert await store.last_position() == 1

    async def test_idempotent_concurrent_retries_write_once(self, store: EventStore) -> None:
        """The same batch sent by 20 tasks at once (a client retrying in a hurry) lands once."""
        batch = [with_id("A"), with_id("B")]
        results = await asyncio.gather(
            *(store.append("order-1", batch, expected_version=NO_STREAM) for _ in range(20))
        )
        assert set(results) == {AppendResult(1, 2, 2)}
        assert await store.last_position() == 2

    async def test_idempotent_partial_overlap_conflicts_and_writes_nothing(
        self, store: EventStore
    ) -> None:
        a, b, c = with_id("A"), with_id("B"), with_id("C")
        await store.append("order-1", [a, b])
        log = await log_of(store)
        with pytest.raises(IdempotencyConflict) as raised:
            await store.append("order-1", [a, c])
        assert isinstance(raised.value, ValueError)
        assert raised.value.stream == "order-1"
        assert await log_of(store) == log
        # c was not written by the refused batch, so it can still be appended on its own.
        await store.append("order-1", [c], expected_version=1)
        assert await versions(store, "order-1") == [0, 1, 2]

    async def test_idempotent_batch_extending_a_written_one_conflicts(
        self, store: EventStore
    ) -> None:
        a, b = with_id("A"), with_id("B")
        await store.append("order-1", [a])
        with pytest.raises(IdempotencyConflict):
            await store.append("order-1", [a, b], expected_version=NO_STREAM)
        assert await store.last_position() == 1

    async def test_idempotent_ids_in_another_order_conflict(self, store: EventStore) -> None:
        a, b = with_id("A"), with_id("B")
        await store.append("order-1", [a, b])
        with pytest.raises(IdempotencyConflict):
            await store.append("order-1", [b, a])
        assert await store.last_position() == 2

    async def test_idempotent_retry_at_other_expected_version_conflicts(
        self, store: EventStore
    ) -> None:
        """Same ids claimed to follow another version: not the same append, not a retry."""
        batch = [with_id("A"), with_id("B")]
        await store.append("order-1", batch, expected_version=NO_STREAM)
        with pytest.raises(IdempotencyConflict):
            await store.append("order-1", batch, expected_version=1)
        assert await store.last_position() == 2

    async def test_idempotent_id_used_in_another_stream_conflicts(self, store: EventStore) -> None:
        batch = [with_id("A")]
        await store.append("order-1", batch)
        with pytest.raises(IdempotencyConflict) as raised:
            await store.append("order-2", batch)
        assert raised.value.stream == "order-2"
        assert await store.stream_version("order-2") is None
        assert await store.last_position() == 1

    async def test_idempotent_id_from_another_stream_in_a_new_batch_conflicts(
        self, store: EventStore
    ) -> None:
        a = with_id("A")
        await store.append("order-1", [a])
        with pytest.raises(IdempotencyConflict):
            await store.append("order-2", [with_id("B"), a])
        assert await store.last_position() == 1

    async def test_idempotent_duplicate_id_within_one_batch_is_value_error(
        self, store: EventStore
    ) -> None:
        a = with_id("A")
        with pytest.raises(ValueError):
            await store.append("order-1", [a, with_id("B"), a])
        assert await store.last_position() == 0

    async def test_idempotent_given_ids_are_kept(self, store: EventStore) -> None:
        batch = [with_id("A"), new("B"), with_id("C")]
        await store.append("order-1", batch)
        read = await collect(store.read_stream("order-1"))
        assert read[0].id == batch[0].id
        assert read[2].id == batch[2].id
        assert len({e.id for e in read}) == 3

    # == atomic batches ====================================================================

    @pytest.mark.parametrize("bad", ["set", "datetime", "nan", "bytes"])
    async def test_append_batch_with_invalid_third_event_writes_nothing(
        self, store: EventStore, bad: str
    ) -> None:
        await store.append("order-1", [new()])
        batch = [new("A"), new("B"), NewEvent("C", NOT_JSON[bad]), new("D")]
        with pytest.raises(ValueError, match="event 2"):
            await store.append("order-1", batch)
        assert await versions(store, "order-1") == [0]
        assert await store.last_position() == 1

    async def test_append_batch_with_oversized_third_event_writes_nothing(
        self, tmp_path: Path
    ) -> None:
        async with self.make_store(tmp_path, max_event_size=1000) as store:
            batch = [new("A"), new("B"), new("C", blob="x" * 2000)]
            with pytest.raises(ValueError, match="event 2"):
                await store.append("order-1", batch)
            assert await store.last_position() == 0

    async def test_append_batch_failing_expected_version_writes_nothing(
        self, store: EventStore
    ) -> None:
        await store.append("order-1", [new()])
        with pytest.raises(WrongExpectedVersion):
            await store.append("order-1", numbered(100), expected_version=NO_STREAM)
        assert await versions(store, "order-1") == [0]
        assert await store.last_position() == 1

    async def test_append_failure_leaves_store_usable(self, store: EventStore) -> None:
        """A refused append is not a broken store: the next append gets the next position."""
        await store.append("order-1", [new()])
        with pytest.raises(WrongExpectedVersion):
            await store.append("order-1", numbered(3), expected_version=5)
        with pytest.raises(ValueError):
            await store.append("order-1", [NewEvent("A", {"x": {1}})])
        result = await store.append("order-1", [new()], expected_version=0)
        assert (result.last_version, result.last_position) == (1, 2)

    # == positions, versions and the recorded event =========================================

    async def test_append_first_event_is_version_0_position_1(self, store: EventStore) -> None:
        result = await store.append("order-1", [new()])
        assert result == AppendResult(last_version=0, last_position=1, count=1)
        assert result.first_position == 1

    async def test_append_result_describes_the_batch(self, store: EventStore) -> None:
        await store.append("other-1", numbered(2))
        result = await store.append("order-1", numbered(3))
        assert (result.last_version, result.last_position, result.count) == (2, 5, 3)
        assert result.first_position == 3
        read = await collect(store.read_stream("order-1"))
        assert [e.position for e in read] == [3, 4, 5]

    async def test_append_versions_are_per_stream_positions_global(self, store: EventStore) -> None:
        await store.append("order-1", numbered(2))
        await store.append("order-2", numbered(3))
        await store.append("order-1", numbered(1))
        log = await log_of(store)
        assert [(e.stream, e.version, e.position) for e in log] == [
            ("order-1", 0, 1),
            ("order-1", 1, 2),
            ("order-2", 0, 3),
            ("order-2", 1, 4),
            ("order-2", 2, 5),
            ("order-1", 2, 6),
        ]

    async def test_append_recorded_event_fields(self, store: EventStore) -> None:
        before = dt.datetime.now(dt.UTC)
        event_id = uuid.uuid4()
        await store.append(
            "order-1",
            [
                NewEvent("OrderPlaced", {"total": 12}, metadata={"correlation_id": "c-1"}),
                NewEvent("OrderPaid", {"paid": True}, id=event_id),
            ],
        )
        after = dt.datetime.now(dt.UTC)
        placed, paid = await collect(store.read_stream("order-1"))
        assert isinstance(placed.id, uuid.UUID)
        assert placed.id != paid.id
        assert paid.id == event_id
        assert (placed.stream, placed.version, placed.position) == ("order-1", 0, 1)
        assert (paid.stream, paid.version, paid.position) == ("order-1", 1, 2)
        assert (placed.type, paid.type) == ("OrderPlaced", "OrderPaid")
        assert placed.data == {"total": 12}
        assert placed.metadata == {"correlation_id": "c-1"}
        assert paid.metadata == {}
        assert placed.category == "order"
        for event in (placed, paid):
            assert isinstance(event.recorded_at, dt.datetime)
            assert event.recorded_at.utcoffset() == dt.timedelta(0)
            slack = dt.timedelta(seconds=1)
            assert before - slack <= event.recorded_at <= after + slack

    async def test_append_generated_ids_are_unique(self, store: EventStore) -> None:
        await asyncio.gather(*(store.append(f"order-{i}", numbered(20)) for i in range(10)))
        ids = [e.id for e in await log_of(store)]
        assert len(ids) == 200
        assert len(set(ids)) == 200

    async def test_append_recorded_at_comes_from_the_injected_clock(self, tmp_path: Path) -> None:
        clock = ManualClock()
        async with self.make_store(tmp_path, clock=clock) as store:
            await store.append("order-1", [new()])
            clock.advance(90)
            await store.append("order-1", [new()])
            first, second = await collect(store.read_stream("order-1"))
            assert first.recorded_at == T0
            assert second.recorded_at == T0 + dt.timedelta(seconds=90)

    @pytest.mark.parametrize("name", list(PAYLOADS))
    async def test_append_data_round_trips_exactly(self, store: EventStore, name: str) -> None:
        """Data and metadata come back equal and of the same types, in every read path."""
        payload = PAYLOADS[name]
        await store.append("order-1", [NewEvent("Stored", payload, metadata=payload or None)])
        (from_stream,) = await collect(store.read_stream("order-1"))
        (from_log,) = await log_of(store)
        for event in (from_stream, from_log):
            assert same_json(event.data, payload), event.data
            assert same_json(event.metadata, payload), event.metadata

    async def test_append_empty_metadata_reads_as_empty_dict(self, store: EventStore) -> None:
        await store.append("order-1", [NewEvent("A", {}, metadata={}), NewEvent("B", {})])
        assert [e.metadata for e in await log_of(store)] == [{}, {}]

    async def test_append_of_largest_allowed_event(self, tmp_path: Path) -> None:
        """The default limit is 1 MiB: just under it is stored intact."""
        async with self.make_store(tmp_path) as store:
            blob = "é" * (1024 * 1024 // 2 - 100)  # two bytes each in UTF-8
            await store.append("order-1", [new(blob=blob)])
            (event,) = await log_of(store)
            assert event.data == {"blob": blob}
