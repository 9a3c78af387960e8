"""Event ids: valid UUIDv7s carrying the time, unique across threads, in order."""

from __future__ import annotations

import threading
import time
import uuid

from eskit.store.ids import new_event_ids


def test_ids_are_uuid7_with_the_current_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    ids = [uuid.UUID(bytes=b) for b in new_event_ids(5)]
    after = time.time_ns() // 1_000_000
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert all(before <= i.int >> 80 <= after for i in ids)


def test_ids_of_one_thread_are_unique_and_in_order() -> None:
    ids = [b for _ in range(2_000) for b in new_event_ids(3)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert new_event_ids(0) == []


def test_ids_of_many_threads_are_unique() -> None:
    drawn: list[list[bytes]] = [[] for _ in range(4)]

    def draw(into: list[bytes]) -> None:
        for _ in range(2_000):
            into.extend(new_event_ids(2))

    threads = [threading.Thread(target=draw, args=(into,)) for into in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [b for ids in drawn for b in ids]
    assert len(set(every)) == len(every) == 16_000
