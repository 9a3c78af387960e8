"""Conformance of consumer groups (persistent subscriptions) on a backend.

Subclass ``GroupConformance`` and say how to make a store, as for the event store suite::

    from eskit.testing import GroupConformance

    class TestMyStoreGroups(GroupConformance):
        def make_store(self, tmp_path, **options):
            return MyStore(tmp_path / "events", **options)

The store must offer a database for the groups' state (``read_model_database``).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

import eskit
from eskit.store.base import EventStore
from eskit.store.filters import EventFilter
from eskit.subscriptions import (
    END,
    GroupExists,
    GroupNotFound,
    Groups,
    Settings,
    Source,
    steps,
)

FAST = Settings(message_timeout=0.3, max_retries=2, max_in_flight=100, retry_backoff=0.0)
"""Settings that let a test see timeouts and retries quickly."""


async def _append(store: EventStore, stream: str, count: int, kind: str = "Happened") -> None:
    await store.append(stream, [eskit.NewEvent(kind, {"n": n}) for n in range(count)])


class GroupConformance:
    """Groups: create/update/delete/list, hand-out, ack, nack, timeouts, parking, replay,
    the checkpoint, strategies."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.anyio]

    @abc.abstractmethod
    def make_store(self, tmp_path: Path, **options: Any) -> EventStore:
        """A new, empty, unopened store."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[EventStore]:
        async with self.make_store(tmp_path) as store:
            yield store

    @pytest.fixture
    def groups(self, store: EventStore) -> Groups:
        return Groups(store)

    # == groups ===============================================================================

    async def test_group_create_list_update_delete(self, groups: Groups) -> None:
        created = await groups.create("mail", Source.category("invoice"), settings=FAST)
        assert (created.name, created.source, created.settings) == (
            "mail",
            Source("category", "invoice"),
            FAST,
        )
        await groups.create("audit", Source.all())
        assert [g.name for g in await groups.list()] == ["audit", "mail"]
        with pytest.raises(GroupExists):
            await groups.create("mail", Source.all())
        slower = Settings(message_timeout=60, max_retries=1, max_in_flight=5, strategy="pinned")
        assert (await groups.update("mail", slower)).settings == slower
        await groups.delete("mail")
        assert [g.name for g in await groups.list()] == ["audit"]
        with pytest.raises(GroupNotFound):
            await groups.get("mail")
        with pytest.raises(GroupNotFound):
            await groups.consumer("mail").fetch()

    async def test_group_sources_and_start_points(self, store: EventStore, groups: Groups) -> None:
        await _append(store, "invoice-1", 2)
        await _append(store, "order-1", 1)
        await groups.create("end", Source.all(), start=END)
        await groups.create("pos", Source.all(), start=2)
        await groups.create("stream", Source.stream("invoice-1"))
        await groups.create("cat", Source.category("order"))
        await _append(store, "invoice-1", 1)
        await _append(store, "invoice-10", 1)

        async def positions(name: str) -> list[int]:
            return [d.event.position for d in await groups.consumer(name).fetch()]

        assert await positions("end") == [4, 5]
        assert await positions("pos") == [3, 4, 5]
        assert await positions("stream") == [1, 2, 4]
        assert await positions("cat") == [3]

    async def test_group_filter_hands_out_only_its_events_and_skips_the_rest(
        self, store: EventStore, groups: Groups
    ) -> None:
        """A source's filter (stream name or event type; prefixes, a regex) is stored with
        the group; events it leaves out are never handed out, and the checkpoint moves past
        them in bounded pages (more of them than a page holds)."""
        await store.append("order-1", [eskit.NewEvent("Noise", {}) for _ in range(1200)])
        await _append(store, "invoice-1", 1, "PaidLate")
        await _append(store, "invoice-22", 1, "Other")
        await _append(store, "order-7", 1, "Paid")
        by_type = Source.all(EventFilter("type", ("Paid",)))
        by_stream = Source.all(EventFilter("stream", regex=r"^(invoice|order)-\d$"))
        await groups.create("types", by_type, settings=FAST)
        await groups.create("streams", Source.category("invoice").filtered(by_stream.filter))
        assert (await groups.get("types")).source == by_type
        assert str(by_type.filter) == "event type prefix 'Paid'"

        async def take(name: str) -> list[tuple[str, str]]:
            consumer = groups.consumer(name)
            taken: list[tuple[str, str]] = []
            for _ in range(20):  # each fetch reads one bounded page of the log
                deliveries = await consumer.fetch()
                for delivery in deliveries:
                    taken.append((delivery.event.stream, delivery.event.type))
                    await delivery.ack()
            return taken

        assert await take("types") == [("invoice-1", "PaidLate"), ("order-7", "Paid")]
        assert await take("streams") == [("invoice-1", "PaidLate")]
        head = await store.last_position()
        assert (await groups.get("types")).checkpoint == head
        assert (await groups.get("streams")).checkpoint == head
        with pytest.raises(ValueError, match="not valid"):
            EventFilter("stream", regex="a((")

    # == delivery =============================================================================

    async def test_group_hands_each_event_to_one_consumer(
        self, store: EventStore, groups: Groups
    ) -> None:
        await _append(store, "invoice-1", 10)
        await groups.create("mail", Source.category("invoice"), settings=FAST)
        a, b = groups.consumer("mail", "a"), groups.consumer("mail", "b")
        first, second = await a.fetch(6), await b.fetch(6)
        assert [d.event.position for d in first] == [1, 2, 3, 4, 5, 6]
        assert [d.event.position for d in second] == [7, 8, 9, 10]
        assert await a.fetch() == []
        assert await b.fetch() == []
        await a.ack(first)
        await b.ack(second)
        assert await a.fetch() == []
        group = await groups.get("mail")
        assert (group.checkpoint, group.in_flight, group.waiting) == (10, 0, 0)

    async def test_group_max_in_flight_bounds_each_consumer(
        self, store: EventStore, groups: Groups
    ) -> None:
        await _append(store, "invoice-1", 10)
        await groups.create("mail", Source.all(), settings=Settings(max_in_flight=3))
        consumer = groups.consumer("mail", "a")
        held = await consumer.fetch(10)
        assert len(held) == 3
        assert await consumer.fetch(10) == []
        await held[0].ack()
        assert len(await consumer.fetch(10)) == 1

    async def test_group_timed_out_event_goes_to_another_consumer(
        self, store: EventStore, groups: Groups
    ) -> None:
        await _append(store, "invoice-1", 2)
        await groups.create("mail", Source.all(), settings=FAST)
        lost = await groups.consumer("mail", "lost").fetch()
        other = groups.consumer("mail", "other")
        assert await other.fetch() == []  # held, not yet timed out
        await asyncio.sleep(FAST.message_timeout + 0.1)
        again = await other.fetch()
        assert [d.event.id for d in again] == [d.event.id for d in lost]
        assert [d.attempt for d in again] == [2, 2]
        await other.ack(again)
        await lost[0].nack("retry", "late")  # no longer its own: left alone
        assert await other.fetch() == []
        assert (await groups.get("mail")).checkpoint == 2

    async def test_group_consumer_that_closes_hands_back_what_it_holds(
        self, store: EventStore, groups: Groups
    ) -> None:
        await _append(store, "invoice-1", 2)
        await groups.create("mail", Source.all(), settings=Settings(message_timeout=60))
        async with groups.consumer("mail", "leaving") as leaving:
            assert len(await leaving.fetch()) == 2
        again = await groups.consumer("mail", "staying").fetch()
        assert [(d.event.position, d.attempt) for d in again] == [(1, 1), (2, 1)]
        assert (await groups.get("mail")).consumers == ("staying",)

    async def test_group_timed_out_event_skips_its_slow_consumer_while_another_lives(
        self, store: EventStore, groups: Groups
    ) -> None:
        await _append(store, "invoice-1", 1)
        settings = Settings(message_timeout=1.0, retry_backoff=0.0)
        await groups.create("mail", Source.all(), settings=settings)
        slow, other = groups.consumer("mail", "slow"), groups.consumer("mail", "other")
        assert len(await slow.fetch()) == 1
        await asyncio.sleep(0.6)
        assert await other.fetch() == []  # still held; "other" is seen alive
        await asyncio.sleep(0.6)  # the event timed out; "other" was seen 0.6 s ago
        assert await slow.fetch() == []
        (again,) = await other.fetch()
        assert again.attempt == 2

    async def test_group_late_ack_still_counts(self, store: EventStore, groups: Groups) -> None:
        """An ack after the timeout, before anyone took the event again: not handed out again."""
        await _append(store, "invoice-1", 1)
        await groups.create("mail", Source.all(), settings=FAST)
        (slow,) = await groups.consumer("mail", "slow").fetch()
        await asyncio.sleep(FAST.message_timeout + 0.1)
        await slow.ack()
        assert await groups.consumer("mail", "other").fetch() == []

    async def test_group_nack_retry_then_parked_after_max_retries(
        self, store: EventStore, groups: Groups
    ) -> None:
        await _append(store, "invoice-1", 1)
        await groups.create("mail", Source.all(), settings=FAST)
        consumer = groups.consumer("mail", "a")
        attempts = []
        for _ in range(FAST.max_retries + 1):
            (delivery,) = await consumer.fetch()
            attempts.append(delivery.attempt)
            await delivery.nack("retry", "provider down")
        assert attempts == [1, 2, 3]
        assert await consumer.fetch() == []
        (parked,) = await groups.parked("mail")
        assert (parked.position, parked.reason, parked.attempts, parked.event_type) == (
            1,
            "provider down",
            3,
            "Happened",
        )
        group = await groups.get("mail")
        assert (group.parked, group.retried_total, group.checkpoint) == (1, 2, 1)

    async def test_group_nack_park_and_skip(self, store: EventStore, groups: Groups) -> None:
        await _append(store, "invoice-1", 3)
        await groups.create("mail", Source.all(), settings=FAST)
        consumer = groups.consumer("mail", "a")
        first, second, third = await consumer.fetch()
        await first.nack("park", ValueError("no address"))
        await second.nack("skip", "not for us")
        assert [(p.position, p.reason) for p in await groups.parked("mail")] == [
            (1, "ValueError: no address")
        ]
        assert (await groups.get("mail")).checkpoint == 2  # third still in flight
        await third.ack()
        assert (await groups.get("mail")).checkpoint == 3
        with pytest.raises(ValueError):
            await third.nack("drop")  # type: ignore[arg-type]

    async def test_group_checkpoint_waits_for_the_first_event_not_done(
        self, store: EventStore, groups: Groups
    ) -> None:
        await _append(store, "invoice-1", 4)
        await groups.create("mail", Source.all(), settings=FAST)
        deliveries = await groups.consumer("mail", "a").fetch()
        await deliveries[1].ack()
        await deliveries[3].ack()
        assert (await groups.get("mail")).checkpoint == 0
        await deliveries[0].ack()
        assert (await groups.get("mail")).checkpoint == 2
        await deliveries[2].nack("retry", "again")
        assert (await groups.get("mail")).checkpoint == 2

    # == parked events and replays ==============================================================

    async def test_group_replay_hands_parked_events_out_again_without_moving_the_checkpoint(
        self, store: EventStore, groups: Groups
    ) -> None:
        await _append(store, "invoice-1", 5)
        await groups.create("mail", Source.all(), settings=FAST)
        consumer = groups.consumer("mail", "a")
        for delivery in await consumer.fetch():
            if delivery.event.position in (2, 4):
                await delivery.nack("park", "poison")
            else:
                await delivery.ack()
        assert (await groups.get("mail")).checkpoint == 5
        seen: list[tuple[int, int]] = []
        record = await groups.replay(
            "mail", requested_by="alice", page=1, progress=lambda d, t: seen.append((d, t))
        )
        assert (record.requested_by, record.replayed, record.up_to) == ("alice", 2, 2)
        assert record.finished_at is not None
        assert seen[-1] == (2, 2)
        again = await consumer.fetch()
        assert [(d.event.position, d.replayed, d.attempt) for d in again] == [
            (2, True, 1),
            (4, True, 1),
        ]
        assert (await groups.get("mail")).checkpoint == 5
        await again[0].ack()
        await again[1].nack("park", "still poison")  # parks again during the replay
        (parked,) = await groups.parked("mail")
        assert (parked.position, parked.reason, parked.seq) == (4, "still poison", 3)
        assert [r.requested_by for r in await groups.replays("mail")] == ["alice"]
        group = await groups.get("mail")
        assert (group.checkpoint, group.parked, group.replayed_total, group.parked_total) == (
            5,
            1,
            2,
            3,
        )

    async def test_group_replay_up_to_a_parked_position(
        self, store: EventStore, groups: Groups
    ) -> None:
        await _append(store, "invoice-1", 4)
        await groups.create("mail", Source.all(), settings=FAST)
        consumer = groups.consumer("mail", "a")
        await consumer.nack(await consumer.fetch(), "park", "later")
        assert [p.seq for p in await groups.parked("mail", after=1, limit=2)] == [2, 3]
        record = await groups.replay("mail", requested_by="bob", up_to=2)
        assert record.replayed == 2
        assert [p.position for p in await groups.parked("mail")] == [3, 4]
        assert [d.event.position for d in await consumer.fetch()] == [1, 2]

    # == running a handler ======================================================================

    async def test_group_run_parks_a_poison_event_after_max_retries_then_replays_it_after_a_fix(
        self, store: EventStore, groups: Groups
    ) -> None:
        await _append(store, "invoice-1", 3)
        await groups.create("mail", Source.all(), settings=FAST)
        handled: list[int] = []
        fixed = False

        def handler(event: eskit.RecordedEvent) -> None:
            if event.position == 2 and not fixed:
                raise RuntimeError("template missing")
            handled.append(event.position)

        consumer = groups.consumer("mail", "a")
        while (await groups.get("mail")).parked == 0:
            await consumer.run(handler, until_idle=True)
        assert handled == [1, 3]
        (parked,) = await groups.parked("mail")
        assert (parked.position, parked.attempts) == (2, FAST.max_retries + 1)
        assert parked.reason == "RuntimeError: template missing"
        fixed = True
        await groups.replay("mail", requested_by="ops")
        assert await consumer.run(handler, until_idle=True) == 1
        assert handled == [1, 3, 2]
        group = await groups.get("mail")
        assert (group.parked, group.in_flight, group.waiting, group.checkpoint) == (0, 0, 0, 3)

    async def test_group_pinned_keeps_each_stream_on_one_consumer_in_order(
        self, store: EventStore, groups: Groups
    ) -> None:
        for n in range(20):
            await store.append(f"invoice-{n % 4}", [eskit.NewEvent("Happened", {"n": n})])
        pinned = Settings(message_timeout=5, strategy="pinned", max_in_flight=3)
        await groups.create("mail", Source.all(), settings=pinned)
        seen: dict[str, list[tuple[str, int]]] = {}

        async def consume(name: str) -> None:
            consumer = groups.consumer("mail", name)

            async def handler(event: eskit.RecordedEvent) -> None:
                seen.setdefault(event.stream, []).append((name, event.version))
                await asyncio.sleep(0)

            for _ in range(20):
                await consumer.run(handler, until_idle=True)

        await asyncio.gather(*(consume(f"c{n}") for n in range(3)))
        assert sorted(seen) == [f"invoice-{n}" for n in range(4)]
        for deliveries in seen.values():
            assert len({name for name, _ in deliveries}) == 1
            assert [version for _, version in deliveries] == list(range(5))

    # == idle consumers =========================================================================

    async def test_group_idle_consumer_wakes_when_an_event_is_appended(
        self, store: EventStore, groups: Groups
    ) -> None:
        await groups.create("mail", Source.all(), settings=FAST)
        consumer = groups.consumer("mail", "a", poll=5.0)
        handled = asyncio.Event()
        running = asyncio.ensure_future(consumer.run(lambda event: handled.set()))
        try:
            await asyncio.sleep(0.3)  # it found nothing: idle
            await _append(store, "invoice-1", 1)
            async with asyncio.timeout(1.0):  # polling alone would take 5 s
                await handled.wait()
        finally:
            await _cancel(running)

    async def test_group_idle_iterating_consumer_wakes_when_an_event_is_appended(
        self, store: EventStore, groups: Groups
    ) -> None:
        await groups.create("mail", Source.all(), settings=FAST)

        async def first() -> eskit.RecordedEvent:
            async with groups.consumer("mail", "a", poll=5.0) as consumer:
                async for delivery in consumer:
                    await delivery.ack()
                    return delivery.event
            raise AssertionError("the consumer stopped")

        receiving = asyncio.ensure_future(first())
        try:
            await asyncio.sleep(0.3)
            await _append(store, "invoice-1", 1)
            async with asyncio.timeout(1.0):
                assert (await receiving).stream == "invoice-1"
        finally:
            await _cancel(receiving)

    async def test_group_idle_consumer_does_not_busy_loop(self, store: EventStore) -> None:
        class CountingGroups(Groups):
            writes = 0

            async def perform(self, effect: Any, handler: Any = None) -> Any:
                self.writes += isinstance(effect, steps.Write)  # an idle fetch: one claim
                return await super().perform(effect, handler)

        groups = CountingGroups(store)
        await groups.create("mail", Source.all(), settings=FAST)
        running = asyncio.ensure_future(
            groups.consumer("mail", "a", poll=0.2).run(lambda event: None)
        )
        await asyncio.sleep(0.5)
        await _cancel(running)
        assert 1 <= groups.writes <= 5

    async def test_group_idle_consumer_still_gets_a_retry_when_its_backoff_is_over(
        self, store: EventStore, groups: Groups
    ) -> None:
        await _append(store, "invoice-1", 1)
        await groups.create("mail", Source.all(), settings=Settings(retry_backoff=0.3))
        attempts: list[int] = []
        async with asyncio.timeout(3.0):
            async with groups.consumer("mail", "a", poll=0.2) as consumer:
                async for delivery in consumer:
                    attempts.append(delivery.attempt)
                    if delivery.attempt == 1:
                        await delivery.nack("retry", "later")
                    else:
                        await delivery.ack()
                        break
        assert attempts == [1, 2]


async def _cancel(task: asyncio.Future[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
