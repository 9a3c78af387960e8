"""Partitioned workers in processes of their own: one is SIGKILLed and the other takes its
partitions within the lease; one is SIGSTOPped past its lease in the middle of a batch, and
when it is continued its late batch is refused. Counts stay exact while events flow."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import eskit
from eskit.projections import database_for
from eskit.projections.leases import partition_of
from tests.projections.models import store_url
from tests.projections.partition_child import PARTITIONS
from tests.projections.partitioning import all_at, eventually, ordered_counts

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LEASE = 1.0
ROOT = Path(__file__).resolve().parents[2]


class Child:
    """A worker process and the last status line it printed."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.status: dict[str, Any] = {"held": [], "applied": 0, "rejected": 0}
        self.output: list[str] = []
        self.reading = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode().strip()
            self.output.append(line)
            if line.startswith("{"):
                self.status = json.loads(line)

    @property
    def held(self) -> list[int]:
        return list(self.status["held"])

    def signal(self, number: int) -> None:
        os.kill(self.process.pid, number)


@contextlib.asynccontextmanager
async def workers(url: str, marker: Path, strict: bool, count: int) -> AsyncIterator[list[Child]]:
    children = []
    for _ in range(count):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.projections.partition_child",
            url,
            str(LEASE),
            str(marker),
            "strict" if strict else "lax",
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        children.append(Child(process))
    try:
        yield children
    finally:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.signal(signal.SIGCONT)
                child.signal(signal.SIGTERM)
        for child in children:
            try:
                await asyncio.wait_for(child.process.wait(), 15)
            except TimeoutError:
                child.process.kill()
                await child.process.wait()
            await child.reading


@contextlib.asynccontextmanager
async def appending(store: eskit.EventStore) -> AsyncIterator[itertools.count[int]]:
    """Appends to 20 streams until the block ends; yields the counter of events written."""
    written = itertools.count()
    stop = asyncio.Event()

    async def feed() -> None:
        while not stop.is_set():
            n = next(written)
            await store.append(f"f-{n % 20}", [eskit.NewEvent("Added", {})])
            await asyncio.sleep(0.003)

    task = asyncio.create_task(feed())
    try:
        yield written
    finally:
        stop.set()
        await task


def expected(total: int) -> dict[str, int]:
    want: dict[str, int] = {}
    for n in range(total):
        want[f"f-{n % 20}"] = want.get(f"f-{n % 20}", 0) + 1
    return want


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(request.param, tmp_path)


async def test_a_killed_worker_s_partitions_are_taken_over_within_the_lease(
    url: str, tmp_path: Path
) -> None:
    async with eskit.open_store(url) as store:
        db = database_for(store)
        async with workers(url, tmp_path / "marker", strict=True, count=2) as (a, b):
            await eventually(lambda: len(a.held) == len(b.held) == PARTITIONS // 2, 20)
            async with appending(store) as written:
                await asyncio.sleep(0.5)
                a.signal(signal.SIGKILL)
                killed = time.monotonic()
                await eventually(lambda: len(b.held) == PARTITIONS, 10)
                took = time.monotonic() - killed
                await asyncio.sleep(0.3)
            print(f"take-over of a killed worker's partitions: {took:.2f} s (lease {LEASE} s)")
            assert took < LEASE + LEASE / 3 + 0.5, f"take-over took {took:.2f} s"
            last = await store.last_position()
            await all_at(db, "ordered", last)
            assert await ordered_counts(db) == expected(next(written))
        await db.close()


async def test_a_worker_stopped_past_its_lease_cannot_commit_its_late_batch(
    url: str, tmp_path: Path
) -> None:
    """The stopped worker counts blindly (no order check), so only the lease check can
    keep its late batch from counting events twice."""
    marker = tmp_path / "marker"
    async with eskit.open_store(url) as store:
        db = database_for(store)
        async with workers(url, marker, strict=False, count=2) as (a, b):
            await eventually(lambda: len(a.held) == len(b.held) == PARTITIONS // 2, 20)
            async with appending(store) as written:
                stream = next(
                    f"pause-{n}"
                    for n in itertools.count()
                    if partition_of(f"pause-{n}", PARTITIONS) in a.held
                )
                await store.append(stream, [eskit.NewEvent("Pause", {})])
                await eventually(marker.exists, 10)
                a.signal(signal.SIGSTOP)  # in the middle of the batch, in its transaction
                if url.startswith("postgresql"):
                    await eventually(lambda: len(b.held) == PARTITIONS, 10)
                else:  # the stopped worker holds SQLite's write lock: no one can write
                    await asyncio.sleep(LEASE * 1.5)
                a.signal(signal.SIGCONT)
                await eventually(lambda: a.status["rejected"] > 0, 10)
            last = await store.last_position()
            await all_at(db, "ordered", last)
            assert await ordered_counts(db) == expected(next(written))
        await db.close()
