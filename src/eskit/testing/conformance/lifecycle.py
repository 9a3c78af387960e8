"""Conformance: soft delete, tombstones, stream metadata, and opening/closing the store."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from eskit.errors import (
    StoreClosed,
    StoreError,
    StoreNotFound,
    StreamDeleted,
    WrongExpectedVersion,
)
from eskit.store.base import EventStore
from eskit.store.model import NO_STREAM, STREAM_EXISTS, Append, Snapshot, StreamMetadata
from eskit.testing.conformance.helpers import (
    SMALL_PAGE,
    ConformanceBase,
    ManualClock,
    collect,
    new,
    numbered,
    positions,
    subscription,
    take,
    versions,
    with_id,
)


class LifecycleConformance(ConformanceBase):
    """delete_stream, tombstone_stream, stream metadata, and the store's open/close."""

    # == soft delete ==========================================================================

    async def test_delete_hides_events_from_stream_reads(self, store: EventStore) -> None:
        await store.append("order-1", numbered(3))
        await store.delete_stream("order-1")
        assert await versions(store, "order-1") == []
        assert await versions(store, "order-1", backwards=True) == []
        assert await versions(store, "order-1", from_version=1) == []
        assert await store.stream_version("order-1") is None

    async def test_delete_keeps_events_in_read_all(self, store: EventStore) -> None:
        """Nothing is removed from the log: projections and subscribers still see it all."""
        await store.append("order-1", numbered(3))
        await store.delete_stream("order-1")
        assert await positions(store) == [1, 2, 3]
        assert await positions(store, category="order") == [1, 2, 3]
        assert await store.last_position() == 3

    async def test_delete_then_append_continues_versions(self, store: EventStore) -> None:
        await store.append("order-1", numbered(3))
        await store.delete_stream("order-1")
        result = await store.append("order-1", numbered(2, start=10), expected_version=NO_STREAM)
        assert (result.last_version, result.last_position) == (4, 5)
        read = await collect(store.read_stream("order-1"))
        assert [(e.version, e.data["n"]) for e in read] == [(3, 10), (4, 11)]
        assert await versions(store, "order-1", backwards=True) == [4, 3]
        assert await store.stream_version("order-1") == 4
        assert await positions(store) == [1, 2, 3, 4, 5]

    async def test_delete_twice_then_append(self, store: EventStore) -> None:
        """Each soft delete hides what came before it, and only that."""
        await store.append("order-1", numbered(2))
        await store.delete_stream("order-1")
        await store.append("order-1", numbered(2, start=2))
        await store.delete_stream("order-1", expected_version=3)
        assert await versions(store, "order-1") == []
        await store.append("order-1", numbered(1, start=4), expected_version=NO_STREAM)
        assert await versions(store, "order-1") == [4]

    async def test_delete_with_expected_version(self, store: EventStore) -> None:
        await store.append("order-1", numbered(3))
        with pytest.raises(WrongExpectedVersion) as raised:
            await store.delete_stream("order-1", expected_version=1)
        assert (raised.value.stream, raised.value.expected, raised.value.actual) == (
            "order-1",
            1,
            2,
        )
        assert await versions(store, "order-1") == [0, 1, 2]
        await store.delete_stream("order-1", expected_version=2)
        assert await store.stream_version("order-1") is None

    async def test_delete_with_stream_exists_on_absent_stream_fails(
        self, store: EventStore
    ) -> None:
        with pytest.raises(WrongExpectedVersion) as raised:
            await store.delete_stream("order-1", expected_version=STREAM_EXISTS)
        assert raised.value.actual is None

    async def test_delete_of_deleted_stream_expects_no_stream(self, store: EventStore) -> None:
        await store.append("order-1", numbered(3))
        await store.delete_stream("order-1")
        await store.delete_stream("order-1", expected_version=NO_STREAM)
        with pytest.raises(WrongExpectedVersion):
            await store.delete_stream("order-1", expected_version=2)
        assert await store.stream_version("order-1") is None

    async def test_delete_leaves_other_streams_alone(self, store: EventStore) -> None:
        await store.append("order-1", numbered(2))
        await store.append("order-10", numbered(2))
        await store.append("order", numbered(2))
        await store.delete_stream("order-1")
        assert await versions(store, "order-10") == [0, 1]
        assert await versions(store, "order") == [0, 1]

    # == tombstone (hard delete) ===============================================================

    async def test_tombstone_refuses_reads_and_appends_for_ever(self, store: EventStore) -> None:
        await store.append("order-1", numbered(3))
        await store.tombstone_stream("order-1")
        for _ in range(2):  # and still after more traffic
            with pytest.raises(StreamDeleted) as raised:
                await store.append("order-1", [new()])
            assert raised.value.stream == "order-1"
            with pytest.raises(StreamDeleted):
                await collect(store.read_stream("order-1"))
            with pytest.raises(StreamDeleted):
                await collect(store.read_stream("order-1", backwards=True))
            with pytest.raises(StreamDeleted):
                await store.stream_version("order-1")
            with pytest.raises(StreamDeleted):
                await store.delete_stream("order-1")
            with pytest.raises(StreamDeleted):
                await store.tombstone_stream("order-1")
            await store.append("order-2", [new()])

    async def test_tombstone_refuses_reads_that_ask_for_nothing(self, store: EventStore) -> None:
        """``limit=0`` still names the stream: a tombstoned one must not read as empty."""
        await store.append("order-1", numbered(3))
        await store.tombstone_stream("order-1")
        with pytest.raises(StreamDeleted):
            await collect(store.read_stream("order-1", limit=0))

    async def test_tombstone_keeps_events_in_read_all(self, store: EventStore) -> None:
        await store.append("order-1", numbered(3))
        await store.tombstone_stream("order-1")
        assert await positions(store) == [1, 2, 3]
        assert await store.last_position() == 3

    async def test_tombstone_refuses_idempotent_retry(self, store: EventStore) -> None:
        """Even a retry of an append that did land is refused: the stream is gone."""
        batch = [with_id()]
        await store.append("order-1", batch)
        await store.tombstone_stream("order-1")
        with pytest.raises(StreamDeleted):
            await store.append("order-1", batch)

    async def test_tombstone_of_absent_stream_prevents_its_creation(
        self, store: EventStore
    ) -> None:
        await store.tombstone_stream("order-1")
        with pytest.raises(StreamDeleted):
            await store.append("order-1", [new()], expected_version=NO_STREAM)
        assert await store.last_position() == 0

    async def test_tombstone_of_soft_deleted_stream(self, store: EventStore) -> None:
        await store.append("order-1", numbered(2))
        await store.delete_stream("order-1")
        await store.tombstone_stream("order-1", expected_version=NO_STREAM)
        with pytest.raises(StreamDeleted):
            await store.append("order-1", [new()])

    async def test_tombstone_with_wrong_expected_version_changes_nothing(
        self, store: EventStore
    ) -> None:
        await store.append("order-1", numbered(3))
        with pytest.raises(WrongExpectedVersion):
            await store.tombstone_stream("order-1", expected_version=0)
        assert await store.stream_version("order-1") == 2
        await store.append("order-1", [new()], expected_version=2)

    async def test_tombstone_leaves_other_streams_alone(self, store: EventStore) -> None:
        await store.append("order-1", numbered(2))
        await store.append("order-10", numbered(2))
        await store.tombstone_stream("order-1")
        assert await versions(store, "order-10") == [0, 1]
        await store.append("order-10", [new()], expected_version=1)

    async def test_tombstoned_stream_wakes_no_subscriber_and_hides_nothing(
        self, store: EventStore
    ) -> None:
        """A subscription already running keeps receiving the old and the new events."""
        await store.append("order-1", numbered(2))
        async with subscription(store) as events:
            assert [e.position for e in await take(events, 2)] == [1, 2]
            await store.tombstone_stream("order-1")
            await store.append("order-2", [new()])
            assert [e.position for e in await take(events, 1)] == [3]

    async def test_positions_are_never_reused_after_deletes(self, store: EventStore) -> None:
        await store.append("order-1", numbered(3))
        await store.append("order-2", numbered(3))
        await store.delete_stream("order-1")
        await store.tombstone_stream("order-2")
        result = await store.append("order-3", numbered(2))
        assert result.first_position == 7
        result = await store.append("order-1", numbered(1))
        assert result.last_position == 9
        assert await positions(store) == list(range(1, 10))
        assert await store.last_position() == 9

    # == stream metadata =======================================================================

    async def test_metadata_max_count_keeps_newest(self, store: EventStore) -> None:
        await store.append("order-1", numbered(10))
        await store.set_stream_metadata("order-1", StreamMetadata(max_count=3))
        assert await versions(store, "order-1") == [7, 8, 9]
        assert await versions(store, "order-1", backwards=True) == [9, 8, 7]
        assert await versions(store, "order-1", from_version=2) == [7, 8, 9]
        assert await versions(store, "order-1", from_version=8) == [8, 9]
        assert await versions(store, "order-1", from_version=5, backwards=True) == []
        assert await versions(store, "order-1", limit=2) == [7, 8]
        assert await store.stream_version("order-1") == 9
        await store.append("order-1", numbered(1), expected_version=9)
        assert await versions(store, "order-1") == [8, 9, 10]

    async def test_metadata_max_count_with_paging(self, store: EventStore) -> None:
        store.page_size = SMALL_PAGE
        await store.append("order-1", numbered(40))
        await store.set_stream_metadata("order-1", StreamMetadata(max_count=20))
        assert await versions(store, "order-1") == list(range(20, 40))
        assert await versions(store, "order-1", backwards=True) == list(range(39, 19, -1))

    async def test_metadata_truncate_before_hides_older_versions(self, store: EventStore) -> None:
        await store.append("order-1", numbered(10))
        await store.set_stream_metadata("order-1", StreamMetadata(truncate_before=4))
        assert await versions(store, "order-1") == [4, 5, 6, 7, 8, 9]
        assert await versions(store, "order-1", backwards=True) == [9, 8, 7, 6, 5, 4]
        assert await versions(store, "order-1", from_version=2, limit=2) == [4, 5]
        assert await versions(store, "order-1", from_version=3, backwards=True) == []
        assert await store.stream_version("order-1") == 9

    async def test_metadata_truncate_before_beyond_the_end_hides_all(
        self, store: EventStore
    ) -> None:
        await store.append("order-1", numbered(3))
        await store.set_stream_metadata("order-1", StreamMetadata(truncate_before=10))
        assert await versions(store, "order-1") == []
        await store.append("order-1", numbered(10), expected_version=2)
        assert await versions(store, "order-1") == [10, 11, 12]

    async def test_metadata_rules_combine_each_can_hide(self, store: EventStore) -> None:
        await store.append("order-1", numbered(10))
        await store.set_stream_metadata("order-1", StreamMetadata(truncate_before=3, max_count=5))
        assert await versions(store, "order-1") == [5, 6, 7, 8, 9]
        await store.set_stream_metadata("order-1", StreamMetadata(truncate_before=8, max_count=5))
        assert await versions(store, "order-1") == [8, 9]

    async def test_metadata_set_before_the_stream_exists(self, store: EventStore) -> None:
        await store.set_stream_metadata("order-1", StreamMetadata(max_count=2))
        assert await store.stream_version("order-1") is None
        await store.append("order-1", numbered(5), expected_version=NO_STREAM)
        assert await versions(store, "order-1") == [3, 4]

    async def test_metadata_max_age_hides_old_events(self, tmp_path: Path) -> None:
        clock = ManualClock()
        async with self.make_store(tmp_path, clock=clock) as store:
            for n in range(4):  # recorded at T0, T0+10s, T0+20s, T0+30s
                await store.append("order-1", [new(n=n)])
                clock.advance(10)
            await store.set_stream_metadata("order-1", StreamMetadata(max_age=25))
            assert await versions(store, "order-1") == [2, 3]  # now T0+40s: ages 40, 30, 20, 10
            assert await versions(store, "order-1", backwards=True) == [3, 2]
            assert await store.stream_version("order-1") == 3
            assert await positions(store) == [1, 2, 3, 4]

    async def test_metadata_max_age_is_evaluated_at_read_time(self, tmp_path: Path) -> None:
        clock = ManualClock()
        async with self.make_store(tmp_path, clock=clock) as store:
            await store.append("order-1", numbered(2))
            await store.set_stream_metadata("order-1", StreamMetadata(max_age=60))
            assert await versions(store, "order-1") == [0, 1]
            clock.advance(60)  # exactly max_age old: not older, still visible
            assert await versions(store, "order-1") == [0, 1]
            clock.advance(0.001)
            assert await versions(store, "order-1") == []
            await store.append("order-1", numbered(1))
            assert await versions(store, "order-1") == [2]

    async def test_metadata_max_age_longer_than_the_calendar_hides_nothing(
        self, tmp_path: Path
    ) -> None:
        """1e11 s (~3000 years) reaches before year 1: every event is younger than that."""
        async with self.make_store(tmp_path, clock=ManualClock()) as store:
            await store.append("order-1", numbered(2))
            await store.set_stream_metadata("order-1", StreamMetadata(max_age=1e11))
            assert await versions(store, "order-1") == [0, 1]

    async def test_metadata_does_not_hide_events_from_read_all(self, store: EventStore) -> None:
        await store.append("order-1", numbered(5))
        await store.set_stream_metadata("order-1", StreamMetadata(max_count=1, truncate_before=4))
        assert await positions(store) == [1, 2, 3, 4, 5]
        async with subscription(store) as events:
            assert [e.position for e in await take(events, 5)] == [1, 2, 3, 4, 5]

    async def test_metadata_round_trips(self, store: EventStore) -> None:
        assert await store.get_stream_metadata("order-1") == StreamMetadata()
        metadata = StreamMetadata(truncate_before=2, max_count=5, max_age=3600.5)
        await store.set_stream_metadata("order-1", metadata)
        assert await store.get_stream_metadata("order-1") == metadata
        replaced = StreamMetadata(max_count=1)
        await store.set_stream_metadata("order-1", replaced)
        assert await store.get_stream_metadata("order-1") == replaced
        assert await store.get_stream_metadata("order-2") == StreamMetadata()

    async def test_metadata_cleared_shows_events_again(self, store: EventStore) -> None:
        """Metadata hides, never deletes: removing the rule brings the events back."""
        await store.append("order-1", numbered(5))
        await store.set_stream_metadata("order-1", StreamMetadata(max_count=1))
        await store.set_stream_metadata("order-1", StreamMetadata())
        assert await versions(store, "order-1") == [0, 1, 2, 3, 4]

    async def test_metadata_very_large_values(self, store: EventStore) -> None:
        """Limits are Python ints: past 64 bits they still mean 'everything' or 'nothing'."""
        await store.append("order-1", numbered(3))
        await store.set_stream_metadata("order-1", StreamMetadata(max_count=2**64))
        assert await versions(store, "order-1") == [0, 1, 2]
        await store.set_stream_metadata("order-1", StreamMetadata(truncate_before=2**64))
        assert await versions(store, "order-1") == []

    @pytest.mark.parametrize(
        ("metadata", "error"),
        [
            pytest.param(StreamMetadata(max_count=0), ValueError, id="max_count_0"),
            pytest.param(StreamMetadata(max_count=-1), ValueError, id="max_count_negative"),
            pytest.param(
                StreamMetadata(truncate_before=-1), ValueError, id="truncate_before_negative"
            ),
            pytest.param(StreamMetadata(max_age=0), ValueError, id="max_age_0"),
            pytest.param(StreamMetadata(max_age=-5.0), ValueError, id="max_age_negative"),
            pytest.param(StreamMetadata(max_age=math.nan), ValueError, id="max_age_nan"),
            pytest.param(StreamMetadata(max_count=True), TypeError, id="max_count_bool"),
            pytest.param(
                StreamMetadata(truncate_before=1.5),  # type: ignore[arg-type]
                TypeError,
                id="truncate_before_float",
            ),
            pytest.param(
                StreamMetadata(max_age="60"),  # type: ignore[arg-type]
                TypeError,
                id="max_age_str",
            ),
            pytest.param({"max_count": 3}, TypeError, id="plain_dict"),
        ],
    )
    async def test_metadata_invalid_is_refused(
        self, store: EventStore, metadata: Any, error: type[Exception]
    ) -> None:
        """A wrong type is a TypeError, a wrong value a ValueError; nothing changes."""
        await store.append("order-1", numbered(3))
        with pytest.raises(error):
            await store.set_stream_metadata("order-1", metadata)
        assert await store.get_stream_metadata("order-1") == StreamMetadata()
        assert await versions(store, "order-1") == [0, 1, 2]

    # == lifecycle =============================================================================

    async def test_lifecycle_unopened_store_raises_store_closed(self, tmp_path: Path) -> None:
        store = self.make_store(tmp_path)
        assert not store.is_open
        await self._assert_closed(store)

    async def test_lifecycle_closed_store_raises_store_closed(self, store: EventStore) -> None:
        await store.append("order-1", [new()])
        await store.close()
        assert not store.is_open
        await self._assert_closed(store)
        await store.close()  # closing twice is harmless

    async def _assert_closed(self, store: EventStore) -> None:
        with pytest.raises(StoreClosed):
            await store.append("order-1", [new()])
        with pytest.raises(StoreClosed):
            await collect(store.read_stream("order-1"))
        with pytest.raises(StoreClosed):
            await collect(store.read_all())
        with pytest.raises(StoreClosed):
            await anext(store.subscribe())
        with pytest.raises(StoreClosed):
            await store.stream_version("order-1")
        with pytest.raises(StoreClosed):
            await store.last_position()
        with pytest.raises(StoreClosed):
            await store.delete_stream("order-1")
        with pytest.raises(StoreClosed):
            await store.tombstone_stream("order-1")
        with pytest.raises(StoreClosed):
            await store.set_stream_metadata("order-1", StreamMetadata(max_count=1))
        with pytest.raises(StoreClosed):
            await store.get_stream_metadata("order-1")
        with pytest.raises(StoreClosed):
            await store.append_many([Append("order-1", [new()])])
        with pytest.raises(StoreClosed):
            await store.save_snapshot(Snapshot("order-1", 0, 1, {}))
        with pytest.raises(StoreClosed):
            await store.load_snapshot("order-1", 1)

    async def test_lifecycle_reopened_store_keeps_its_events(self, tmp_path: Path) -> None:
        store = self.make_store(tmp_path)
        async with store:
            await store.append("order-1", numbered(3))
            await store.append("order-2", numbered(1))
            await store.tombstone_stream("order-2")
        async with store:
            await store.open()  # opening twice is harmless
            assert await versions(store, "order-1") == [0, 1, 2]
            assert await store.last_position() == 4
            with pytest.raises(StreamDeleted):
                await store.stream_version("order-2")
            result = await store.append("order-1", [new()], expected_version=2)
            assert result.last_position == 5

    # == read-only =============================================================================

    async def test_lifecycle_readonly_open_of_a_store_never_written_raises_not_found(
        self, tmp_path: Path
    ) -> None:
        """Inspecting a store that is not there is an error, not an empty store."""
        store = self.make_store(tmp_path, readonly=True)
        with pytest.raises(StoreNotFound, match="no such store"):
            await store.open()
        assert not store.is_open

    async def test_lifecycle_readonly_store_reads_and_refuses_every_write(
        self, tmp_path: Path
    ) -> None:
        store = self.make_store(tmp_path)
        async with store:
            await store.append("order-1", numbered(2))
        store.readonly = True
        async with store:
            assert await versions(store, "order-1") == [0, 1]
            assert await store.last_position() == 2
            writes = [
                store.append("order-1", [new()]),
                store.append_many([Append("order-2", [new()])]),
                store.delete_stream("order-1"),
                store.tombstone_stream("order-1"),
                store.set_stream_metadata("order-1", StreamMetadata(max_count=1)),
                store.save_snapshot(Snapshot("order-1", 1, 1, {})),
            ]
            for write in writes:
                with pytest.raises(StoreError, match="read-only"):
                    await write
            assert await versions(store, "order-1") == [0, 1]
            assert await store.get_stream_metadata("order-1") == StreamMetadata()
            assert await store.load_snapshot("order-1", 1) is None
            assert await store.last_position() == 2
