"""Conformance: subscriptions (catch-up, live, filters, close)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from eskit.store.base import EventStore
from eskit.store.model import RecordedEvent
from eskit.testing.conformance.helpers import (
    SMALL_PAGE,
    TIMEOUT,
    ConformanceBase,
    new,
    numbered,
    subscription,
    take,
)


class SubscriptionConformance(ConformanceBase):
    """subscribe: history then live events, checkpoints, filters, many subscribers."""

    # == subscriptions =======================================================================

    async def test_subscribe_catches_up_then_goes_live(self, store: EventStore) -> None:
        """History first, then each new event arrives without polling (commit wakes it)."""
        store.poll_interval = 60.0  # a missed wake-up hangs until TIMEOUT and fails
        await store.append("order-1", numbered(5))
        received: asyncio.Queue[RecordedEvent] = asyncio.Queue()

        async def follow() -> None:
            async for event in store.subscribe():
                received.put_nowait(event)

        task = asyncio.create_task(follow())
        try:
            async with asyncio.timeout(TIMEOUT):
                history = [await received.get() for _ in range(5)]
                assert [e.position for e in history] == [1, 2, 3, 4, 5]
                for n in range(5, 15):
                    await store.append(f"order-{n % 2}", [new("Live", n=n)])
                    live = await received.get()
                    assert (live.position, live.data) == (n + 1, {"n": n})
            assert received.empty()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def test_subscribe_to_empty_store_gets_the_first_event(self, store: EventStore) -> None:
        """Subscribed before anything exists (possibly already waiting): no poll needed."""
        store.poll_interval = 60.0
        async with subscription(store) as events:
            pending = asyncio.ensure_future(take(events, 1))
            await store.append("order-1", [new("First")])
            (first,) = await pending
            assert (first.position, first.type) == (1, "First")

    async def test_subscribe_resumes_from_checkpoint(self, store: EventStore) -> None:
        """A subscriber restarted with after=p gets exactly the events past p."""
        await store.append("order-1", numbered(10))
        async with subscription(store, after=4) as events:
            assert [e.position for e in await take(events, 6)] == [5, 6, 7, 8, 9, 10]
            await store.append("order-1", [new()])
            assert [e.position for e in await take(events, 1)] == [11]

    async def test_subscribe_from_the_head_gets_only_new_events(self, store: EventStore) -> None:
        await store.append("order-1", numbered(3))
        head = await store.last_position()
        async with subscription(store, after=head) as events:
            await store.append("order-1", [new("New")])
            (event,) = await take(events, 1)
            assert (event.position, event.type) == (4, "New")

    async def test_subscribe_pages_through_long_history(self, store: EventStore) -> None:
        store.page_size = SMALL_PAGE
        await store.append("order-1", numbered(50))
        async with subscription(store) as events:
            received = await take(events, 50)
            assert [e.position for e in received] == list(range(1, 51))
            await store.append("order-1", numbered(SMALL_PAGE + 1, start=50))
            more = await take(events, SMALL_PAGE + 1)
            assert [e.data["n"] for e in more] == list(range(50, 50 + SMALL_PAGE + 1))

    async def test_subscribe_stopped_during_catch_up_then_closed_reports_nothing(
        self, tmp_path: Path
    ) -> None:
        """A subscriber that stops in the middle of a long history: the page read ahead
        for it is cancelled, and closing the store reports no failed read."""
        problems: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: problems.append(context))
        try:
            async with self.make_store(tmp_path) as store:
                store.page_size = SMALL_PAGE
                await store.append("order-1", numbered(50))
                seen = [e.position async for e in _until(store.subscribe(), position=5)]
                assert seen == [1, 2, 3, 4, 5]
                for _ in range(5):
                    await asyncio.sleep(0)
            gc.collect()
            await asyncio.sleep(0.01)
        finally:
            loop.set_exception_handler(None)
        assert problems == []

    async def test_subscribe_many_subscribers_each_get_everything_once_in_order(
        self, store: EventStore
    ) -> None:
        """Ten subscribers, some started before and some during concurrent appends."""
        store.page_size = SMALL_PAGE
        total = 120

        async def subscriber() -> list[int]:
            async with subscription(store) as events:
                return [e.position for e in await take(events, total)]

        early = [asyncio.create_task(subscriber()) for _ in range(5)]
        writes = [store.append(f"order-{i % 4}", numbered(3, start=3 * i)) for i in range(20)]
        await asyncio.gather(*writes[:10])
        late = [asyncio.create_task(subscriber()) for _ in range(5)]
        await asyncio.gather(*writes[10:])
        await store.append("order-9", numbered(total - 60))
        for received in await asyncio.gather(*early, *late):
            assert received == list(range(1, total + 1))

    async def test_subscribe_during_concurrent_appends_sees_no_gaps(
        self, store: EventStore
    ) -> None:
        """Positions a subscriber sees only grow and none is skipped, under 10 writers."""
        store.page_size = SMALL_PAGE

        async def writer(w: int) -> None:
            for i in range(10):
                await store.append(f"order-{w}", numbered(3, start=3 * i))

        async with subscription(store) as events:
            received, _ = await asyncio.gather(
                take(events, 300), asyncio.gather(*(writer(w) for w in range(10)))
            )
        assert [e.position for e in received] == list(range(1, 301))
        for w in range(10):
            mine = [e for e in received if e.stream == f"order-{w}"]
            assert [e.version for e in mine] == list(range(30))

    async def test_subscribe_filtered_by_types(self, store: EventStore) -> None:
        store.page_size = SMALL_PAGE
        for i in range(40):
            await store.append("order-1", [new("Wanted" if i % 8 == 0 else "Other", i=i)])
        async with subscription(store, types=["Wanted"]) as events:
            history = await take(events, 5)
            assert [e.data["i"] for e in history] == [0, 8, 16, 24, 32]
            await store.append("order-1", [new("Other", i=40), new("Other", i=41)])
            await store.append("order-1", [new("Wanted", i=42)])
            (live,) = await take(events, 1)
            assert live.data == {"i": 42}

    async def test_subscribe_filtered_by_category(self, store: EventStore) -> None:
        store.page_size = SMALL_PAGE
        for i in range(40):
            await store.append("order-1" if i % 8 == 0 else f"user-{i}", [new(i=i)])
        async with subscription(store, category="order") as events:
            history = await take(events, 5)
            assert [e.data["i"] for e in history] == [0, 8, 16, 24, 32]
            await store.append("orders-1", [new(i=40)])
            await store.append("user-1", [new(i=41)])
            await store.append("order-7", [new(i=42)])
            (live,) = await take(events, 1)
            assert (live.stream, live.data) == ("order-7", {"i": 42})

    async def test_subscribe_filtered_by_types_and_category(self, store: EventStore) -> None:
        await store.append("order-1", [new("A", i=0), new("B", i=1)])
        await store.append("user-1", [new("A", i=2)])
        async with subscription(store, types=["A"], category="order") as events:
            assert [e.data["i"] for e in await take(events, 1)] == [0]
            await store.append("user-1", [new("A", i=3)])
            await store.append("order-1", [new("B", i=4), new("A", i=5)])
            assert [e.data["i"] for e in await take(events, 1)] == [5]

    async def test_subscribe_from_checkpoint_with_filter(self, store: EventStore) -> None:
        await store.append("order-1", [new("A", i=i) for i in range(10)])
        async with subscription(store, after=6, types=["A"]) as events:
            assert [e.position for e in await take(events, 4)] == [7, 8, 9, 10]

    async def test_subscribe_ends_when_store_closes(self, store: EventStore) -> None:
        """Closing the store finishes every `async for` over a subscription, waiting or not."""
        store.poll_interval = 60.0  # only the close can end the wait in time
        await store.append("order-1", numbered(3))
        caught_up = asyncio.Event()
        received: list[int] = []

        async def follow() -> None:
            async for event in store.subscribe():
                received.append(event.position)
                if len(received) == 3:
                    caught_up.set()

        async def idle() -> None:
            async for _ in store.subscribe(after=3):
                raise AssertionError("no event past position 3 was written")

        following = asyncio.create_task(follow())
        idling = asyncio.create_task(idle())
        async with asyncio.timeout(TIMEOUT):
            await caught_up.wait()
            await store.close()
            await asyncio.gather(following, idling)
        assert received == [1, 2, 3]

    async def test_wait_for_events_ends_when_cancelled_as_it_is_woken(
        self, store: EventStore
    ) -> None:
        """A wait woken without a new event (as a commit that wrote none wakes it) in the
        very turn it is cancelled still ends with the cancellation: the cancellation is how
        a ``timeout`` ends the wait (Python 3.11's ``asyncio.wait_for`` swallowed it, and a
        process manager's timed wait then lasted until the next event)."""
        await store.append("wake-1", [new()])
        head = await store.last_position()
        waiting = asyncio.ensure_future(store.wait_for_events(head, timeout=TIMEOUT))
        await asyncio.sleep(0.05)  # it waits now
        store._notify_waiters()  # woken in this turn...
        waiting.cancel()  # ...and cancelled in the same one
        await asyncio.wait({waiting}, timeout=2.0)
        assert waiting.cancelled()


async def _until(
    events: AsyncIterator[RecordedEvent], position: int
) -> AsyncIterator[RecordedEvent]:
    """The events up to ``position``; then the subscription is closed, as a caller's
    ``break`` would have it closed."""
    async with contextlib.aclosing(events) as closing:  # type: ignore[type-var]
        async for event in closing:
            yield event
            if event.position >= position:
                return
