"""A replay of 100,000 parked events streams in pages: its memory does not grow with them."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

import eskit
import eskit.sync
from eskit.subscriptions import Settings, Source

PARKED = 100_000
BOUND = 4 * 1024 * 1024
"""Bytes of Python memory a replay may hold at its peak, whatever the number parked (a page
of 500 takes a small part of it; measured: ~140 KiB)."""


def park_all(groups: eskit.sync.Groups, store: eskit.sync.SyncStore, total: int) -> None:
    for start in range(0, total, 1000):
        store.append_many(
            [
                eskit.Append(f"invoice-{n}", [eskit.NewEvent("Due", {"n": n})])
                for n in range(start, start + 1000)
            ]
        )
    groups.create("mail", Source.all(), settings=Settings(max_in_flight=1000))
    consumer = groups.consumer("mail", "parker")
    while batch := consumer.fetch(1000):
        consumer.nack(batch, "park", "poison")


@pytest.mark.slow
def test_replay_of_100000_parked_events_stays_under_the_memory_bound(tmp_path: Path) -> None:
    with eskit.sync.open_store(f"sqlite:///{tmp_path}/events.db") as store:
        groups = eskit.sync.Groups(store)
        park_all(groups, store, PARKED)
        assert groups.get("mail").parked == PARKED
        tracemalloc.start()
        try:
            record = groups.replay("mail", requested_by="test", page=500)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert record.replayed == PARKED
        group = groups.get("mail")
        assert (group.parked, group.waiting, group.checkpoint) == (0, PARKED, PARKED)
        assert peak < BOUND, f"replay peaked at {peak} bytes"
        print(f"replay of {PARKED} parked events: peak {peak / 1024:.0f} KiB")
