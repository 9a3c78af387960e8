"""Conformance: snapshots kept by the store (save, load, retention, deletes), and the
snapshot read together with the events after it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from eskit.errors import StreamDeleted
from eskit.store.base import EventStore
from eskit.store.model import Snapshot, StreamMetadata
from eskit.store.rules import MAX_NESTING, SNAPSHOTS_KEPT
from eskit.testing.conformance.helpers import (
    INVALID_NAMES,
    NOT_JSON,
    PAYLOADS,
    T0,
    ConformanceBase,
    ManualClock,
    log_of,
    nested,
    numbered,
    same_json,
    versions,
)


def snap(
    version: int, snapshot_version: int = 1, stream: str = "order-1", **state: Any
) -> Snapshot:
    """A snapshot whose state says which version it folds (``{"at": version}`` by default)."""
    return Snapshot(stream, version, snapshot_version, state or {"at": version})


async def loaded_versions(store: EventStore, stream: str, snapshot_version: int) -> list[int]:
    """The versions a load finds at each max_version from 0 to 20 (None: nothing)."""
    found = []
    for bound in range(21):
        loaded = await store.load_snapshot(stream, snapshot_version, max_version=bound)
        if loaded is not None:
            found.append(loaded.version)
    return sorted(set(found))


class SnapshotConformance(ConformanceBase):
    """save_snapshot / load_snapshot: the newest matching snapshot, kept apart from events."""

    # == save and load ========================================================================

    @pytest.mark.parametrize("name", ["nested", "unicode", "floats", "big_ints", "empty"])
    async def test_snapshot_round_trips_exactly(self, tmp_path: Path, name: str) -> None:
        async with self.make_store(tmp_path, clock=ManualClock()) as store:
            await store.append("order-1", numbered(4))
            await store.save_snapshot(Snapshot("order-1", 3, 2, PAYLOADS[name]))
            loaded = await store.load_snapshot("order-1", 2)
            assert loaded is not None
            assert (loaded.stream, loaded.version, loaded.snapshot_version) == ("order-1", 3, 2)
            assert same_json(loaded.state, PAYLOADS[name]), loaded.state
            assert loaded.recorded_at == T0

    async def test_snapshot_recorded_at_comes_from_the_store_clock(self, tmp_path: Path) -> None:
        """A recorded_at given by the caller is replaced by the time of the save."""
        clock = ManualClock()
        async with self.make_store(tmp_path, clock=clock) as store:
            clock.advance(30)
            given = Snapshot("order-1", 0, 1, {}, recorded_at=T0 - dt.timedelta(days=9))
            await store.save_snapshot(given)
            loaded = await store.load_snapshot("order-1", 1)
            assert loaded is not None
            assert loaded.recorded_at == T0 + dt.timedelta(seconds=30)
            assert loaded.recorded_at.utcoffset() == dt.timedelta(0)

    async def test_snapshot_none_when_there_is_none(self, store: EventStore) -> None:
        assert await store.load_snapshot("order-1", 1) is None
        await store.append("order-1", numbered(3))
        assert await store.load_snapshot("order-1", 1) is None
        await store.save_snapshot(snap(2, stream="order-2"))
        assert await store.load_snapshot("order-1", 1) is None
        assert await store.load_snapshot("order-10", 1) is None

    async def test_snapshot_newest_up_to_max_version_wins(self, store: EventStore) -> None:
        for version in (5, 2, 9):  # saved out of order: newest means highest version
            await store.save_snapshot(snap(version))
        newest = await store.load_snapshot("order-1", 1)
        assert newest is not None
        assert (newest.version, newest.state) == (9, {"at": 9})
        for bound, expected in [(100, 9), (9, 9), (8, 5), (5, 5), (4, 2), (2, 2)]:
            loaded = await store.load_snapshot("order-1", 1, max_version=bound)
            assert loaded is not None
            assert loaded.version == expected, bound
        assert await store.load_snapshot("order-1", 1, max_version=1) is None
        assert await store.load_snapshot("order-1", 1, max_version=0) is None
        assert await store.load_snapshot("order-1", 1, max_version=2**70) == newest

    async def test_snapshot_other_snapshot_version_is_ignored(self, store: EventStore) -> None:
        """Code asking for schema 2 never gets a schema 1 state, however newer it is."""
        await store.save_snapshot(snap(9, snapshot_version=1))
        await store.save_snapshot(snap(4, snapshot_version=2))
        await store.save_snapshot(snap(6, snapshot_version=0))
        for snapshot_version, version in [(0, 6), (1, 9), (2, 4)]:
            loaded = await store.load_snapshot("order-1", snapshot_version)
            assert loaded is not None
            assert (loaded.snapshot_version, loaded.version) == (snapshot_version, version)
        assert await store.load_snapshot("order-1", 3) is None
        assert await store.load_snapshot("order-1", 2, max_version=3) is None

    async def test_snapshot_saved_again_replaces_it(self, tmp_path: Path) -> None:
        clock = ManualClock()
        async with self.make_store(tmp_path, clock=clock) as store:
            await store.save_snapshot(snap(5, total=1))
            clock.advance(10)
            await store.save_snapshot(snap(5, total=2))
            loaded = await store.load_snapshot("order-1", 1)
            assert loaded is not None
            assert (loaded.state, loaded.recorded_at) == (
                {"total": 2},
                T0 + dt.timedelta(seconds=10),
            )
            assert await loaded_versions(store, "order-1", 1) == [5]

    async def test_snapshot_is_a_copy_both_ways(self, store: EventStore) -> None:
        """Changing the dict saved, or a dict loaded, changes nothing stored."""
        state: dict[str, Any] = {"lines": [1, 2]}
        await store.save_snapshot(Snapshot("order-1", 0, 1, state))
        state["lines"].append(3)
        loaded = await store.load_snapshot("order-1", 1)
        assert loaded is not None
        assert loaded.state == {"lines": [1, 2]}
        loaded.state["lines"].append(4)
        again = await store.load_snapshot("order-1", 1)
        assert again is not None
        assert again.state == {"lines": [1, 2]}

    async def test_snapshot_is_not_an_event(self, store: EventStore) -> None:
        await store.append("order-1", numbered(3))
        log = await log_of(store)
        await store.save_snapshot(snap(2))
        assert await log_of(store) == log
        assert await versions(store, "order-1") == [0, 1, 2]
        assert await store.stream_version("order-1") == 2

    async def test_snapshot_survives_reopening(self, tmp_path: Path) -> None:
        store = self.make_store(tmp_path)
        async with store:
            await store.save_snapshot(snap(3, total=12))
        async with store:
            loaded = await store.load_snapshot("order-1", 1)
            assert loaded is not None
            assert (loaded.version, loaded.state) == (3, {"total": 12})

    # == retention ============================================================================

    async def test_snapshot_retention_keeps_the_newest_five(self, store: EventStore) -> None:
        assert SNAPSHOTS_KEPT == 5
        for version in range(8):
            await store.save_snapshot(snap(version))
        assert await loaded_versions(store, "order-1", 1) == [3, 4, 5, 6, 7]
        await store.save_snapshot(snap(1))  # older than all kept: dropped at once
        assert await loaded_versions(store, "order-1", 1) == [3, 4, 5, 6, 7]
        await store.save_snapshot(snap(12))
        assert await loaded_versions(store, "order-1", 1) == [4, 5, 6, 7, 12]

    async def test_snapshot_retention_is_per_stream_and_snapshot_version(
        self, store: EventStore
    ) -> None:
        for version in range(3):
            await store.save_snapshot(snap(version, snapshot_version=2))
            await store.save_snapshot(snap(version, stream="order-2"))
        for version in range(3, 10):
            await store.save_snapshot(snap(version))
        assert await loaded_versions(store, "order-1", 1) == [5, 6, 7, 8, 9]
        assert await loaded_versions(store, "order-1", 2) == [0, 1, 2]
        assert await loaded_versions(store, "order-2", 1) == [0, 1, 2]

    # == read_from_snapshot: the snapshot and the events after it, together =================

    async def test_read_from_snapshot_gives_the_events_after_it(self, store: EventStore) -> None:
        store.page_size = 3  # the events after it span pages
        await store.append("order-1", numbered(12))
        await store.save_snapshot(snap(4))
        snapshot, events = await store.read_from_snapshot("order-1", 1)
        assert snapshot == await store.load_snapshot("order-1", 1)
        assert [e.version async for e in events] == list(range(5, 12))
        snapshot, events = await store.read_from_snapshot("order-1", 1, max_version=3)
        assert snapshot is None  # none at or below version 3: the events up to it
        assert [e.version async for e in events] == [0, 1, 2, 3]
        snapshot, events = await store.read_from_snapshot("order-1", 1, max_version=9)
        assert snapshot is not None
        assert snapshot.version == 4
        assert [e.version async for e in events] == [5, 6, 7, 8, 9]  # across pages
        snapshot, events = await store.read_from_snapshot("order-1", 1, max_version=4)
        assert snapshot is not None
        assert [e async for e in events] == []  # the snapshot is all there is to it

    async def test_read_from_snapshot_without_one_reads_the_whole_stream(
        self, store: EventStore
    ) -> None:
        await store.append("order-1", numbered(3))
        await store.save_snapshot(snap(1, snapshot_version=2))  # another schema: not this one
        snapshot, events = await store.read_from_snapshot("order-1", 1)
        assert snapshot is None
        assert [e async for e in events] == [e async for e in store.read_stream("order-1")]
        snapshot, events = await store.read_from_snapshot("order-404", 1)
        assert snapshot is None
        assert [e async for e in events] == []

    async def test_read_from_snapshot_at_the_last_event_reads_nothing_more(
        self, store: EventStore
    ) -> None:
        await store.append("order-1", numbered(3))
        await store.save_snapshot(snap(2))
        snapshot, events = await store.read_from_snapshot("order-1", 1)
        assert snapshot is not None
        assert snapshot.version == 2
        assert [e async for e in events] == []

    async def test_read_from_snapshot_follows_the_delete_rules(self, store: EventStore) -> None:
        await store.append("order-1", numbered(3))
        await store.save_snapshot(snap(2))
        await store.delete_stream("order-1")
        await store.append("order-1", numbered(2))  # versions 3 and 4
        snapshot, events = await store.read_from_snapshot("order-1", 1)
        assert snapshot is None  # taken before the soft delete: hidden
        assert [e.version async for e in events] == [3, 4]
        await store.tombstone_stream("order-1")
        with pytest.raises(StreamDeleted):
            await store.read_from_snapshot("order-1", 1)

    async def test_read_from_snapshot_refuses_bad_arguments(self, store: EventStore) -> None:
        for bad in ({"stream": ""}, {"snapshot_version": -1}, {"max_version": -1}):
            arguments: dict[str, Any] = {"stream": "order-1", "snapshot_version": 1, **bad}
            with pytest.raises(ValueError):
                await store.read_from_snapshot(**arguments)

    # == deletes ==============================================================================

    async def test_snapshot_of_tombstoned_stream_raises(self, store: EventStore) -> None:
        await store.append("order-1", numbered(3))
        await store.save_snapshot(snap(2))
        await store.tombstone_stream("order-1")
        with pytest.raises(StreamDeleted) as raised:
            await store.load_snapshot("order-1", 1)
        assert raised.value.stream == "order-1"
        with pytest.raises(StreamDeleted):
            await store.save_snapshot(snap(2))
        with pytest.raises(StreamDeleted):
            await store.load_snapshot("order-1", 2, max_version=0)

    async def test_snapshot_of_stream_tombstoned_before_it_existed_raises(
        self, store: EventStore
    ) -> None:
        await store.tombstone_stream("order-1")
        with pytest.raises(StreamDeleted):
            await store.save_snapshot(snap(0))
        await store.save_snapshot(snap(0, stream="order-2"))  # others are unaffected
        assert await store.load_snapshot("order-2", 1) is not None

    async def test_snapshot_taken_before_a_soft_delete_is_hidden(self, store: EventStore) -> None:
        """Its state folds in deleted events: loading it would bring them back."""
        await store.append("order-1", numbered(3))
        await store.save_snapshot(snap(2))
        await store.delete_stream("order-1")
        assert await store.load_snapshot("order-1", 1) is None
        await store.append("order-1", numbered(2))  # versions 3 and 4
        assert await store.load_snapshot("order-1", 1) is None
        await store.save_snapshot(snap(4))
        loaded = await store.load_snapshot("order-1", 1)
        assert loaded is not None
        assert loaded.version == 4
        assert await store.load_snapshot("order-1", 1, max_version=3) is None

    async def test_snapshot_below_truncate_before_is_hidden(self, store: EventStore) -> None:
        """The same rule for truncate_before set by hand: a snapshot at version v stays
        visible while event v is, so truncating up to a snapshot keeps it usable."""
        await store.append("order-1", numbered(10))
        for version in (3, 6, 9):
            await store.save_snapshot(snap(version))
        await store.set_stream_metadata("order-1", StreamMetadata(truncate_before=6))
        assert await loaded_versions(store, "order-1", 1) == [6, 9]
        await store.set_stream_metadata("order-1", StreamMetadata())
        assert await loaded_versions(store, "order-1", 1) == [3, 6, 9]

    # == invalid input ========================================================================

    @pytest.mark.parametrize(
        ("snapshot", "error"),
        [
            pytest.param(
                {"stream": "order-1", "version": 0, "snapshot_version": 1, "state": {}},
                TypeError,
                id="plain_dict",
            ),
            pytest.param(Snapshot("order-1", -1, 1, {}), ValueError, id="version_negative"),
            pytest.param(Snapshot("order-1", True, 1, {}), TypeError, id="version_bool"),
            pytest.param(Snapshot("order-1", 1.5, 1, {}), TypeError, id="version_float"),  # type: ignore[arg-type]
            pytest.param(Snapshot("order-1", 2**64, 1, {}), ValueError, id="version_huge"),
            pytest.param(
                Snapshot("order-1", 0, -1, {}), ValueError, id="snapshot_version_negative"
            ),
            pytest.param(Snapshot("order-1", 0, "1", {}), TypeError, id="snapshot_version_str"),  # type: ignore[arg-type]
            pytest.param(Snapshot("order-1", 0, None, {}), TypeError, id="snapshot_version_none"),  # type: ignore[arg-type]
            pytest.param(Snapshot("order-1", 0, 1, [1, 2]), ValueError, id="state_list"),  # type: ignore[arg-type]
            pytest.param(Snapshot("order-1", 0, 1, None), ValueError, id="state_none"),  # type: ignore[arg-type]
            *(
                pytest.param(
                    Snapshot("order-1", 0, 1, NOT_JSON[kind]), ValueError, id=f"state_{kind}"
                )
                for kind in ("set", "nan", "int_key")
            ),
            pytest.param(
                Snapshot("order-1", 0, 1, nested(MAX_NESTING + 1)), ValueError, id="state_too_deep"
            ),
            pytest.param(
                Snapshot("order-1", 0, 1, nested(10_000)), ValueError, id="state_10000_deep"
            ),
            *(
                pytest.param(
                    Snapshot(INVALID_NAMES[kind], 0, 1, {}), ValueError, id=f"stream_{kind}"
                )
                for kind in ("empty", "dollar")
            ),
            pytest.param(Snapshot(INVALID_NAMES["int"], 0, 1, {}), TypeError, id="stream_int"),
        ],
    )
    async def test_snapshot_invalid_is_refused(
        self, store: EventStore, snapshot: Any, error: type[Exception]
    ) -> None:
        """A wrong type is a TypeError, a wrong value a ValueError; nothing is saved."""
        await store.save_snapshot(snap(0))
        with pytest.raises(error):
            await store.save_snapshot(snapshot)
        assert await loaded_versions(store, "order-1", 1) == [0]
        assert await loaded_versions(store, "order-1", 0) == []

    async def test_snapshot_over_max_event_size_is_value_error(self, tmp_path: Path) -> None:
        async with self.make_store(tmp_path, max_event_size=1000) as store:
            await store.save_snapshot(snap(0, blob="x" * 900))
            with pytest.raises(ValueError, match="1000"):
                await store.save_snapshot(snap(1, blob="x" * 1001))
            assert await loaded_versions(store, "order-1", 1) == [0]

    @pytest.mark.parametrize(
        ("load", "error"),
        [
            pytest.param({"stream": "", "snapshot_version": 1}, ValueError, id="stream_empty"),
            pytest.param({"stream": "$all", "snapshot_version": 1}, ValueError, id="stream_dollar"),
            pytest.param({"stream": None, "snapshot_version": 1}, TypeError, id="stream_none"),
            pytest.param(
                {"stream": "order-1", "snapshot_version": -1},
                ValueError,
                id="snapshot_version_negative",
            ),
            pytest.param(
                {"stream": "order-1", "snapshot_version": True},
                TypeError,
                id="snapshot_version_bool",
            ),
            pytest.param(
                {"stream": "order-1", "snapshot_version": None},
                TypeError,
                id="snapshot_version_none",
            ),
            pytest.param(
                {"stream": "order-1", "snapshot_version": 1, "max_version": -1},
                ValueError,
                id="max_version_negative",
            ),
            pytest.param(
                {"stream": "order-1", "snapshot_version": 1, "max_version": 1.0},
                TypeError,
                id="max_version_float",
            ),
            pytest.param(
                {"stream": "order-1", "snapshot_version": 1, "max_version": False},
                TypeError,
                id="max_version_bool",
            ),
        ],
    )
    async def test_snapshot_invalid_load_is_refused(
        self, store: EventStore, load: dict[str, Any], error: type[Exception]
    ) -> None:
        with pytest.raises(error):
            await store.load_snapshot(**load)
