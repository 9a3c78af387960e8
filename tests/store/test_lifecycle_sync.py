"""Scavenging, archives and restores from the blocking face (``eskit.sync``) on SQLite and
PostgreSQL: the same procedures as the async face's, run in the caller's thread, with the
same results."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import eskit
import eskit.sync
from eskit.store.archive import check_archive
from tests.store.test_archive import DAY, fill
from tests.store.test_scavenge import Clock, build, event_positions, opened, removals, url

__all__ = ["url"]  # the fixture: SQLite and PostgreSQL


def test_a_blocking_scavenge_removes_what_the_async_one_does(url: str) -> None:
    clock = Clock()

    async def built() -> None:
        async with opened(url, clock) as store:
            await build(store, clock)

    asyncio.run(built())
    kept = event_positions(url)
    steps: list[tuple[int, int, int]] = []
    with eskit.sync.open_store(url, clock=clock) as store:
        seen = [e.version for e in store.read_stream("capped-1")]

        report = eskit.sync.scavenge(store, batch_size=3, progress=lambda *p: steps.append(p))

        assert report.removed == {
            "deleted": 4,
            "tombstoned": 3,
            "truncate_before": 3,
            "max_count": 4,
            "max_age": 3,
        }
        assert steps[-1] == (report.streams, report.streams, report.total)
        assert [e.version for e in store.read_stream("capped-1")] == seen
        assert eskit.sync.scavenge(store).total == 0  # nothing left
    assert len(kept - event_positions(url)) == report.total == len(removals(url))


def test_a_blocking_archive_reads_through_and_restores_exactly(url: str, tmp_path: Path) -> None:
    clock, folder = Clock(), tmp_path / "2025"

    async def filled() -> None:
        async with opened(url, clock) as store:
            await fill(store, clock)

    asyncio.run(filled())
    with eskit.sync.open_store(url, clock=clock) as store:
        log = list(store.read_all())
        order_1 = list(store.read_stream("order-1"))
        written: list[int] = []

        report = eskit.sync.archive(
            store, folder, category="order", older_than=365 * DAY, progress=written.append
        )

        assert (report.streams, report.events, report.removed, report.kept) == (5, 16, 16, [])
        assert written[-1] == 16
        assert check_archive(folder).files[0].streams == [f"order-{n}" for n in range(1, 6)]
        assert list(store.read_stream("order-1")) == []
        assert list(eskit.sync.read_stream_through(store, "order-1", folder)) == order_1
        store.append("order-1", [eskit.NewEvent("Returned", {})])
        through = list(eskit.sync.read_stream_through(store, "order-1", folder))
        assert [e.version for e in through] == [0, 1, 2, 3, 4]
        later = eskit.sync.read_stream_through(store, "order-1", folder, from_version=3)
        assert [e.version for e in later] == [3, 4]
        with pytest.raises(ValueError, match="from_version must be an int >= 0"):
            list(eskit.sync.read_stream_through(store, "order-1", folder, from_version=-1))

        restored = eskit.sync.restore(store, folder)

        assert (restored.files, restored.events, restored.present) == (1, 16, 0)
        assert [e.id for e in store.read_all()][: len(log)] == [e.id for e in log]
        assert list(store.read_stream("order-1"))[:4] == order_1


def test_the_blocking_face_refuses_as_the_async_one_does(url: str, tmp_path: Path) -> None:
    with eskit.sync.open_store(url) as store:
        with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
            eskit.sync.scavenge(store, batch_size=0)
        with pytest.raises(ValueError, match="a category has no '-'"):
            eskit.sync.archive(store, tmp_path, category="a-b", older_than=DAY)
    with (
        eskit.sync.open_store(url, readonly=True) as store,
        pytest.raises(ValueError, match="open read-only"),
    ):
        eskit.sync.scavenge(store)
    with (
        eskit.sync.open_store("memory://") as store,
        pytest.raises(ValueError, match="nothing to scavenge"),
    ):
        eskit.sync.scavenge(store)
    with pytest.raises(eskit.StoreClosed):
        eskit.sync.scavenge(eskit.sync.open_store(url))
