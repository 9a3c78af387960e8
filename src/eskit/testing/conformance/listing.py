"""Conformance: listing streams (what an operator's ``eskit streams list`` shows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from eskit.store.base import EventStore
from eskit.store.model import StreamInfo, StreamMetadata
from eskit.testing.conformance.helpers import T0, ConformanceBase, ManualClock, new, numbered


async def _names(store: EventStore, **options: Any) -> list[str]:
    return [info.stream for info in await store.list_streams(**options)]


class ListingConformance(ConformanceBase):
    """list_streams: name order, paging, category filter, deleted streams flagged."""

    async def test_list_streams_of_an_empty_store_is_empty(self, store: EventStore) -> None:
        assert await store.list_streams() == []

    async def test_list_streams_shows_each_streams_last_event(self, tmp_path: Path) -> None:
        clock = ManualClock()
        async with self.make_store(tmp_path, clock=clock) as store:
            await store.append("order-2", numbered(3))
            clock.advance(60)
            await store.append("order-1", [new("Placed")])
            await store.append("order-2", [new("Shipped")])
            assert await store.list_streams() == [
                StreamInfo("order-1", 0, 4, "Placed", clock.now, "live"),
                StreamInfo("order-2", 3, 5, "Shipped", clock.now, "live"),
            ]
            order_2 = (await store.list_streams())[1]
            assert (order_2.event_count, order_2.category) == (4, "order")
            assert order_2.last_recorded_at > T0

    async def test_list_streams_pages_by_name(self, store: EventStore) -> None:
        names = [f"s{i:02d}-x" for i in range(25)]
        for name in reversed(names):
            await store.append(name, [new()])
        assert await _names(store) == names
        assert await _names(store, limit=10) == names[:10]
        assert await _names(store, after=names[9], limit=10) == names[10:20]
        assert await _names(store, after=names[19], limit=10) == names[20:]
        assert await _names(store, after=names[-1]) == []
        assert await _names(store, after="s05") == names[5:]  # any string, not only a name

    async def test_list_streams_long_streams_count_once(self, store: EventStore) -> None:
        await store.append("a-1", numbered(50))
        await store.append("b-1", numbered(1))
        listed = await store.list_streams(limit=1)
        assert [(i.stream, i.last_version) for i in listed] == [("a-1", 49)]

    async def test_list_streams_of_a_category(self, store: EventStore) -> None:
        for name in ["order", "order-1", "order-1-a", "order!x", "orders-1", "order.x", "orde-1"]:
            await store.append(name, [new()])
        assert await _names(store, category="order") == ["order", "order-1", "order-1-a"]
        assert await _names(store, category="order", limit=2) == ["order", "order-1"]
        assert await _names(store, category="order", after="order") == ["order-1", "order-1-a"]
        assert await _names(store, category="order", after="a") == [
            "order",
            "order-1",
            "order-1-a",
        ]
        assert await _names(store, category="order", after="order-1-a") == []
        assert await _names(store, category="orders") == ["orders-1"]
        assert await _names(store, category="order-1") == []  # no category holds a "-"
        assert await _names(store, category="missing") == []

    async def test_list_streams_flags_deleted_and_tombstoned_streams(
        self, store: EventStore
    ) -> None:
        for name in ["a-1", "b-1", "c-1", "d-1"]:
            await store.append(name, numbered(2))
        await store.delete_stream("b-1")
        await store.tombstone_stream("c-1")
        await store.delete_stream("d-1")
        await store.append("d-1", [new("Again")])
        listed = {i.stream: (i.status, i.last_version) for i in await store.list_streams()}
        assert listed == {
            "a-1": ("live", 1),
            "b-1": ("deleted", 1),
            "c-1": ("tombstoned", 1),
            "d-1": ("live", 2),
        }

    async def test_list_streams_leaves_out_streams_without_events(self, store: EventStore) -> None:
        await store.set_stream_metadata("meta-1", StreamMetadata(max_count=1))
        await store.tombstone_stream("gone-1")
        await store.append("real-1", [new()])
        assert await _names(store) == ["real-1"]

    @pytest.mark.parametrize(
        ("options", "error"),
        [
            ({"limit": 0}, ValueError),
            ({"limit": -1}, ValueError),
            ({"limit": True}, TypeError),
            ({"limit": None}, TypeError),
            ({"limit": 1.5}, TypeError),
            ({"after": 3}, TypeError),
            ({"after": b"a"}, TypeError),
            ({"category": ""}, ValueError),
            ({"category": "$system"}, ValueError),
            ({"category": 7}, TypeError),
        ],
        ids=repr,
    )
    async def test_list_streams_invalid_arguments(
        self, store: EventStore, options: dict[str, Any], error: type[Exception]
    ) -> None:
        """A wrong type is a TypeError, a wrong value a ValueError."""
        with pytest.raises(error):
            await store.list_streams(**options)
