"""Conformance: reading a stream and the log (paging, filters, positions)."""

from __future__ import annotations

import uuid

import pytest

from eskit.store.base import EventStore
from eskit.testing.conformance.helpers import (
    SMALL_PAGE,
    ConformanceBase,
    collect,
    log_of,
    new,
    numbered,
    positions,
    versions,
)


async def _append_interleaved(store: EventStore) -> None:
    """Versions 0-49 of "order-1", with another stream's events between every ten of them
    (so a page of the stream is not a page of the log)."""
    for start in range(0, 50, 10):
        await store.append("order-1", numbered(10, start=start))
        await store.append("other-1", numbered(3))


class ReadConformance(ConformanceBase):
    """read_stream, read_all, last_position and stream_version."""

    # == find_event =========================================================================

    async def test_find_event_returns_the_event_with_that_id(self, store: EventStore) -> None:
        await store.append("order-1", numbered(3))
        wanted = (await collect(store.read_stream("order-1")))[1]
        assert await store.find_event(wanted.id) == wanted

    async def test_find_event_of_an_unknown_id_is_none(self, store: EventStore) -> None:
        await store.append("order-1", numbered(1))
        assert await store.find_event(uuid.uuid4()) is None

    async def test_find_event_still_finds_events_hidden_from_their_stream(
        self, store: EventStore
    ) -> None:
        await store.append("order-1", numbered(2))
        first = (await collect(store.read_stream("order-1")))[0]
        await store.delete_stream("order-1")
        assert await store.find_event(first.id) == first

    async def test_find_event_refuses_what_is_not_a_uuid(self, store: EventStore) -> None:
        with pytest.raises(TypeError):
            await store.find_event(str(uuid.uuid4()))  # type: ignore[arg-type]

    # == read_stream ========================================================================

    async def test_read_stream_forwards_gives_all_in_version_order(self, store: EventStore) -> None:
        await store.append("order-1", numbered(5))
        read = await collect(store.read_stream("order-1"))
        assert [e.version for e in read] == [0, 1, 2, 3, 4]
        assert [e.data["n"] for e in read] == [0, 1, 2, 3, 4]

    async def test_read_stream_only_yields_its_own_stream(self, store: EventStore) -> None:
        """Streams that share a prefix or category are still separate streams."""
        for stream in ("order-1", "order-10", "order-1-a", "order", "order-2"):
            await store.append(stream, [new(stream=stream)])
        read = await collect(store.read_stream("order-1"))
        assert [e.data["stream"] for e in read] == ["order-1"]

    async def test_read_stream_from_version(self, store: EventStore) -> None:
        await store.append("order-1", numbered(5))
        assert await versions(store, "order-1", from_version=2) == [2, 3, 4]
        assert await versions(store, "order-1", from_version=4) == [4]
        assert await versions(store, "order-1", from_version=0) == [0, 1, 2, 3, 4]

    async def test_read_stream_from_version_beyond_the_end_is_empty(
        self, store: EventStore
    ) -> None:
        await store.append("order-1", numbered(5))
        assert await versions(store, "order-1", from_version=5) == []
        assert await versions(store, "order-1", from_version=1000) == []

    async def test_read_stream_backwards_starts_at_the_last(self, store: EventStore) -> None:
        await store.append("order-1", numbered(5))
        assert await versions(store, "order-1", backwards=True) == [4, 3, 2, 1, 0]

    async def test_read_stream_backwards_from_version(self, store: EventStore) -> None:
        await store.append("order-1", numbered(5))
        assert await versions(store, "order-1", from_version=2, backwards=True) == [2, 1, 0]
        assert await versions(store, "order-1", from_version=0, backwards=True) == [0]

    async def test_read_stream_backwards_from_beyond_the_end_starts_at_the_last(
        self, store: EventStore
    ) -> None:
        await store.append("order-1", numbered(3))
        assert await versions(store, "order-1", from_version=99, backwards=True) == [2, 1, 0]

    async def test_read_stream_limit(self, store: EventStore) -> None:
        await store.append("order-1", numbered(5))
        assert await versions(store, "order-1", limit=2) == [0, 1]
        assert await versions(store, "order-1", limit=2, backwards=True) == [4, 3]
        assert await versions(store, "order-1", from_version=3, limit=5) == [3, 4]
        assert await versions(store, "order-1", from_version=3, limit=2, backwards=True) == [3, 2]
        assert await versions(store, "order-1", limit=99) == [0, 1, 2, 3, 4]

    async def test_read_stream_limit_zero_is_empty(self, store: EventStore) -> None:
        await store.append("order-1", numbered(5))
        assert await versions(store, "order-1", limit=0) == []
        assert await versions(store, "order-1", limit=0, backwards=True) == []

    async def test_read_stream_of_absent_stream_is_empty(self, store: EventStore) -> None:
        await store.append("order-1", numbered(2))
        assert await versions(store, "order-2") == []
        assert await versions(store, "order-2", backwards=True) == []
        assert await versions(store, "order-2", from_version=3) == []

    async def test_read_stream_pages_forwards(self, store: EventStore) -> None:
        """Longer than a page: every event once, in order, also from the middle."""
        store.page_size = SMALL_PAGE
        await _append_interleaved(store)
        read = await collect(store.read_stream("order-1"))
        assert [e.version for e in read] == list(range(50))
        assert [e.data["n"] for e in read] == list(range(50))
        assert await versions(store, "order-1", from_version=13) == list(range(13, 50))
        assert await versions(store, "order-1", from_version=6, limit=15) == list(range(6, 21))
        assert await versions(store, "order-1", limit=SMALL_PAGE) == list(range(SMALL_PAGE))
        assert await versions(store, "order-1", limit=2 * SMALL_PAGE) == list(range(2 * SMALL_PAGE))

    async def test_read_stream_pages_backwards(self, store: EventStore) -> None:
        store.page_size = SMALL_PAGE
        await _append_interleaved(store)
        assert await versions(store, "order-1", backwards=True) == list(range(49, -1, -1))
        assert await versions(store, "order-1", from_version=30, backwards=True) == list(
            range(30, -1, -1)
        )
        assert await versions(store, "order-1", from_version=40, limit=16, backwards=True) == (
            list(range(40, 24, -1))
        )
        assert await versions(store, "order-1", limit=2 * SMALL_PAGE, backwards=True) == list(
            range(49, 49 - 2 * SMALL_PAGE, -1)
        )

    async def test_read_stream_with_page_boundary_at_the_start(self, store: EventStore) -> None:
        """Backwards paging must stop cleanly when a page ends exactly at version 0."""
        store.page_size = SMALL_PAGE
        await store.append("order-1", numbered(2 * SMALL_PAGE))
        assert await versions(store, "order-1", backwards=True) == list(
            range(2 * SMALL_PAGE - 1, -1, -1)
        )
        assert await versions(store, "order-1") == list(range(2 * SMALL_PAGE))

    async def test_read_stream_very_large_from_version(self, store: EventStore) -> None:
        """Versions are Python ints: a from_version past 64 bits reads like any past the end."""
        await store.append("order-1", numbered(3))
        assert await versions(store, "order-1", from_version=2**64) == []
        assert await versions(store, "order-1", from_version=2**64, backwards=True) == [2, 1, 0]

    # == read_all and positions ===============================================================

    async def test_read_all_in_position_order(self, store: EventStore) -> None:
        await store.append("order-1", numbered(2))
        await store.append("user-1", numbered(2))
        await store.append("order-1", numbered(1))
        log = await log_of(store)
        assert [e.position for e in log] == [1, 2, 3, 4, 5]
        assert [e.stream for e in log] == ["order-1", "order-1", "user-1", "user-1", "order-1"]

    async def test_read_all_of_empty_store_is_empty(self, store: EventStore) -> None:
        assert await log_of(store) == []
        assert await store.last_position() == 0

    async def test_read_all_after(self, store: EventStore) -> None:
        await store.append("order-1", numbered(5))
        assert await positions(store, after=0) == [1, 2, 3, 4, 5]
        assert await positions(store, after=3) == [4, 5]
        assert await positions(store, after=5) == []
        assert await positions(store, after=50) == []
        assert await positions(store, after=2**64) == []

    async def test_read_all_limit(self, store: EventStore) -> None:
        await store.append("order-1", numbered(5))
        assert await positions(store, limit=2) == [1, 2]
        assert await positions(store, after=2, limit=2) == [3, 4]
        assert await positions(store, limit=0) == []
        assert await positions(store, limit=10) == [1, 2, 3, 4, 5]

    async def test_read_all_types_filter(self, store: EventStore) -> None:
        await store.append("order-1", [new("A"), new("B"), new("C"), new("A")])
        assert await positions(store, types=["A"]) == [1, 4]
        assert await positions(store, types=["A", "C"]) == [1, 3, 4]
        assert await positions(store, types=("B",)) == [2]
        assert await positions(store, types={"C"}) == [3]
        assert await positions(store, types=(t for t in ["B", "C"])) == [2, 3]
        assert await positions(store, types=["Z"]) == []
        assert await positions(store, types=[]) == []

    async def test_read_all_types_match_exactly(self, store: EventStore) -> None:
        """No prefix, case or pattern matching on type names."""
        await store.append("order-1", [new("Paid"), new("paid"), new("PaidLate"), new("P%")])
        assert await positions(store, types=["Paid"]) == [1]
        assert await positions(store, types=["P%"]) == [4]
        assert await positions(store, types=["P_id"]) == []

    async def test_read_all_category_filter(self, store: EventStore) -> None:
        """The category is everything before the first '-', matched exactly."""
        for stream in ("order-1", "orders-1", "order", "order-a-b", "xorder-1", "Order-1"):
            await store.append(stream, [new(stream=stream)])
        read = await collect(store.read_all(category="order"))
        assert [e.stream for e in read] == ["order-1", "order", "order-a-b"]
        assert all(e.category == "order" for e in read)
        assert await positions(store, category="orders") == [2]
        assert await positions(store, category="nothing") == []

    async def test_read_all_category_is_not_a_pattern(self, store: EventStore) -> None:
        for stream in ("a%-1", "ab-1", "a_-1", "aXb-1", "a-1"):
            await store.append(stream, [new()])
        assert await positions(store, category="a%") == [1]
        assert await positions(store, category="a_") == [3]
        assert await positions(store, category="a") == [5]

    async def test_read_all_types_and_category_combined(self, store: EventStore) -> None:
        await store.append("order-1", [new("A"), new("B")])
        await store.append("user-1", [new("A"), new("B")])
        await store.append("order-2", [new("A")])
        assert await positions(store, types=["A"], category="order") == [1, 5]
        assert await positions(store, types=["B"], category="user") == [4]
        assert await positions(store, types=["A"], category="order", after=1) == [5]
        assert await positions(store, types=["A", "B"], category="order", limit=2) == [1, 2]

    async def test_read_all_pages_through_the_whole_log(self, store: EventStore) -> None:
        store.page_size = SMALL_PAGE
        for i in range(10):
            await store.append(f"order-{i % 3}", numbered(5, start=5 * i))
        assert await positions(store) == list(range(1, 51))
        assert await positions(store, after=13) == list(range(14, 51))
        assert await positions(store, after=6, limit=15) == list(range(7, 22))
        assert await positions(store, limit=SMALL_PAGE) == list(range(1, SMALL_PAGE + 1))

    async def test_read_all_pages_with_sparse_matches(self, store: EventStore) -> None:
        """Filters that match one event in ten still find every match across pages."""
        store.page_size = SMALL_PAGE
        for i in range(100):
            stream = "rare-1" if i % 10 == 3 else f"common-{i % 4}"
            await store.append(stream, [new("Rare" if i % 10 == 3 else "Common", i=i)])
        rare = [i + 1 for i in range(100) if i % 10 == 3]
        assert await positions(store, types=["Rare"]) == rare
        assert await positions(store, category="rare") == rare
        assert await positions(store, types=["Rare"], category="rare") == rare
        assert await positions(store, types=["Rare"], after=50) == [p for p in rare if p > 50]
        assert await positions(store, types=["Rare"], limit=3) == rare[:3]
        assert await positions(store, category="rare", after=14, limit=4) == rare[2:6]
        assert (
            await positions(store, category="common", limit=20)
            == [p for p in range(1, 101) if p not in rare][:20]
        )

    async def test_last_position_follows_appends(self, store: EventStore) -> None:
        assert await store.last_position() == 0
        await store.append("order-1", numbered(3))
        assert await store.last_position() == 3
        await store.append("order-2", numbered(2))
        assert await store.last_position() == 5

    async def test_stream_version(self, store: EventStore) -> None:
        assert await store.stream_version("order-1") is None
        await store.append("order-1", numbered(3))
        assert await store.stream_version("order-1") == 2
        await store.append("order-1", numbered(1))
        assert await store.stream_version("order-1") == 3
        assert await store.stream_version("order-2") is None

    # == read_all backwards ===================================================================

    async def test_read_all_backwards_yields_the_log_newest_first(self, store: EventStore) -> None:
        await store.append("order-1", numbered(3))
        await store.append("user-1", numbered(2))
        assert await positions(store, backwards=True) == [5, 4, 3, 2, 1]
        assert await positions(store, backwards=True, limit=2) == [5, 4]
        assert await positions(store, backwards=True, limit=0) == []

    async def test_read_all_backwards_of_empty_store_is_empty(self, store: EventStore) -> None:
        assert await positions(store, backwards=True) == []
        assert await positions(store, backwards=True, before=10) == []

    async def test_read_all_backwards_before_is_exclusive(self, store: EventStore) -> None:
        """``before`` is the position just above the first event yielded: pass the last
        position seen to read the next page."""
        await store.append("order-1", numbered(5))
        assert await positions(store, backwards=True, before=4) == [3, 2, 1]
        assert await positions(store, backwards=True, before=4, limit=2) == [3, 2]
        assert await positions(store, backwards=True, before=2, limit=2) == [1]
        assert await positions(store, backwards=True, before=1) == []
        assert await positions(store, backwards=True, before=0) == []
        assert await positions(store, backwards=True, before=6) == [5, 4, 3, 2, 1]
        assert await positions(store, backwards=True, before=2**64) == [5, 4, 3, 2, 1]

    async def test_read_all_backwards_keeps_after_as_the_lower_bound(
        self, store: EventStore
    ) -> None:
        await store.append("order-1", numbered(5))
        assert await positions(store, backwards=True, after=2) == [5, 4, 3]
        assert await positions(store, backwards=True, after=2, before=5) == [4, 3]
        assert await positions(store, backwards=True, after=3, before=4) == []
        assert await positions(store, backwards=True, after=2**64) == []

    async def test_read_all_backwards_pages_with_filters(self, store: EventStore) -> None:
        """Every match is found, newest first, across pages and with sparse matches."""
        store.page_size = SMALL_PAGE
        for i in range(100):
            stream = "rare-1" if i % 10 == 3 else f"common-{i % 4}"
            await store.append(stream, [new("Rare" if i % 10 == 3 else "Common", i=i)])
        rare = [i + 1 for i in range(100) if i % 10 == 3][::-1]
        assert await positions(store, backwards=True) == list(range(100, 0, -1))
        assert await positions(store, backwards=True, types=["Rare"]) == rare
        assert await positions(store, backwards=True, category="rare") == rare
        assert await positions(store, backwards=True, category="rare", types=["Rare"]) == rare
        assert await positions(store, backwards=True, types=["Rare"], before=50) == [
            p for p in rare if p < 50
        ]
        assert await positions(store, backwards=True, category="rare", limit=3) == rare[:3]
        assert await positions(store, backwards=True, types=["Nothing"]) == []
        common = [p for p in range(100, 0, -1) if p not in rare]
        assert await positions(store, backwards=True, category="common", limit=20) == common[:20]

    async def test_read_all_backwards_yields_what_a_forward_read_yields(
        self, store: EventStore
    ) -> None:
        await store.append("order-1", [new("A", n=1), new("B", n=2)])
        forwards = await collect(store.read_all())
        backwards = await collect(store.read_all(backwards=True))
        assert backwards == forwards[::-1]

    async def test_read_all_before_needs_backwards(self, store: EventStore) -> None:
        await store.append("order-1", numbered(2))
        with pytest.raises(ValueError, match="backwards"):
            await collect(store.read_all(before=2))
        with pytest.raises(TypeError, match="backwards"):
            await collect(store.read_all(backwards="yes"))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="before"):
            await collect(store.read_all(backwards=True, before="2"))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="before"):
            await collect(store.read_all(backwards=True, before=-1))
