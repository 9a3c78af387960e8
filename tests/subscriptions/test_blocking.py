"""The blocking face (``eskit.sync.Groups``): the same groups, from threads, no event loop."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import eskit
import eskit.sync
from eskit.subscriptions import GroupNotFound, Settings, Source, steps
from tests import postgres


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> eskit.sync.SyncStore:
    urls = {
        "memory": lambda: "memory://",
        "sqlite": lambda: f"sqlite:///{tmp_path}/events.db",
        "postgres": postgres.store_url,
    }
    return eskit.sync.open_store(urls[request.param]())


def test_blocking_iterator_ack_nack_and_replay(store: eskit.sync.SyncStore) -> None:
    with store:
        store.append("invoice-1", [eskit.NewEvent("Due", {"n": n}) for n in range(4)])
        groups = eskit.sync.Groups(store)
        groups.create("mail", Source.category("invoice"), settings=Settings(max_in_flight=10))
        with groups.consumer("mail", "a") as consumer:
            for delivery in consumer:
                if delivery.event.version == 1:
                    delivery.nack("park", "poison")
                else:
                    delivery.ack()
                if delivery.event.version == 3:
                    break
        assert [p.position for p in groups.parked("mail")] == [2]
        assert [p.position for p in groups.iter_parked("mail", page=1)] == [2]
        assert groups.replay("mail", requested_by="ops").replayed == 1
        assert [r.requested_by for r in groups.replays("mail")] == ["ops"]
        assert groups.get("mail").checkpoint == 4
        assert groups.ack("mail", [str(d.event.id) for d in groups.consumer("mail").fetch()]) == 1
        group = groups.get("mail")
        assert (group.parked, group.waiting, group.in_flight) == (0, 0, 0)
        groups.delete("mail")
        assert groups.list() == []
        with pytest.raises(GroupNotFound):
            groups.get("mail")


def test_blocking_consumers_in_threads_share_the_events(store: eskit.sync.SyncStore) -> None:
    with store:
        for n in range(200):
            store.append(f"invoice-{n}", [eskit.NewEvent("Due", {"n": n})])
        groups = eskit.sync.Groups(store)
        groups.create("mail", Source.all(), settings=Settings(max_in_flight=7))
        seen: list[int] = []
        lock = threading.Lock()

        def handler(event: eskit.RecordedEvent) -> None:
            with lock:
                seen.append(event.position)

        def consume(name: str) -> None:
            consumer = groups.consumer("mail", name)
            while groups.get("mail").checkpoint < 200:
                consumer.run(handler, until_idle=True)

        threads = [threading.Thread(target=consume, args=(f"t{n}",)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(seen) == list(range(1, 201))


def test_blocking_idle_consumer_wakes_when_an_event_is_appended(
    store: eskit.sync.SyncStore,
) -> None:
    with store:
        groups = eskit.sync.Groups(store)
        groups.create("mail", Source.all())
        received: list[str] = []

        def consume() -> None:
            with groups.consumer("mail", "a", poll=5.0) as consumer:
                for delivery in consumer:
                    delivery.ack()
                    received.append(delivery.event.stream)
                    break

        thread = threading.Thread(target=consume)
        thread.start()
        time.sleep(0.3)  # it found nothing: idle
        store.append("invoice-1", [eskit.NewEvent("Due", {})])
        thread.join(1.0)  # polling alone would take 5 s
        assert received == ["invoice-1"]
        thread.join()


def test_blocking_idle_consumer_does_not_busy_loop(store: eskit.sync.SyncStore) -> None:
    class CountingGroups(eskit.sync.Groups):
        writes = 0

        def perform(self, effect: Any, handler: Any = None) -> Any:
            self.writes += isinstance(effect, steps.Write)  # an idle fetch: one claim
            return super().perform(effect, handler)

    with store:
        groups = CountingGroups(store)
        groups.create("mail", Source.all())
        stop = threading.Event()
        consumer = groups.consumer("mail", "a", poll=0.2)
        thread = threading.Thread(
            target=consumer.run, args=(lambda event: None,), kwargs={"stop": stop}
        )
        thread.start()
        time.sleep(0.5)
        stop.set()
        thread.join()
        assert 1 <= groups.writes <= 5


def test_blocking_idle_consumer_still_gets_a_retry_when_its_backoff_is_over(
    store: eskit.sync.SyncStore,
) -> None:
    with store:
        store.append("invoice-1", [eskit.NewEvent("Due", {})])
        groups = eskit.sync.Groups(store)
        groups.create("mail", Source.all(), settings=Settings(retry_backoff=0.3))
        attempts: list[int] = []
        started = time.monotonic()
        with groups.consumer("mail", "a", poll=0.2) as consumer:
            for delivery in consumer:
                attempts.append(delivery.attempt)
                if delivery.attempt == 1:
                    delivery.nack("retry", "later")
                else:
                    delivery.ack()
                    break
        assert attempts == [1, 2]
        assert time.monotonic() - started < 3.0
