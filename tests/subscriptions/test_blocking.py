"""The blocking face (``eskit.sync.Groups``): the same groups, from threads, no event loop."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import eskit
import eskit.sync
from eskit.subscriptions import GroupNotFound, Settings, Source


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> eskit.sync.SyncStore:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/events.db"
    return eskit.sync.open_store(url)


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
