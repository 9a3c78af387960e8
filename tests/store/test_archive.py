"""Archives (``eskit.store.archive``, ``eskit archive`` / ``eskit restore``) on SQLite and
PostgreSQL: whole streams go to compressed files and out of the store through the audited
removal path, read through when asked, and come back exactly, at their positions."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest

import eskit
from eskit.projections.projection import Projection
from eskit.projections.runner import ProjectionRunner
from eskit.store.archive import archive as archive_streams
from eskit.store.archive import (
    archived_events,
    check_archive,
    load_manifest,
    read_stream_through,
    restore,
)
from eskit.store.audit import verify
from tests.cli.conftest import invoke
from tests.processes import ROOT
from tests.store.test_scavenge import Clock, Seen, event_positions, opened, removals, shown, url

pytestmark = pytest.mark.anyio
__all__ = ["url"]  # the fixture: SQLite and PostgreSQL

DAY = dt.timedelta(days=1)


async def fill(store: eskit.EventStore, clock: Clock) -> None:
    """Old orders 1-5, a recent order 6, customers in between (not archived)."""
    for n in range(1, 6):
        await store.append(
            f"order-{n}", [eskit.NewEvent("Placed", {"n": n, "i": i}) for i in range(3)]
        )
        await store.append(f"customer-{n}", [eskit.NewEvent("Registered", {"n": n})])
    await store.append("order-1", [eskit.NewEvent("Shipped", {"to": "Zoë ✓"}, {"by": "b"})])
    clock.now += 400 * DAY
    await store.append("order-6", [eskit.NewEvent("Placed", {"n": 6})])


class Counting(Projection):
    name = "orders_seen"
    every_type = True

    def __init__(self) -> None:
        self.orders = 0

    async def handle_batch(self, events: Sequence[eskit.RecordedEvent]) -> None:
        self.orders += sum(e.stream.startswith("order-") for e in events)


async def test_an_archive_round_trips_exactly(url: str, tmp_path: Path) -> None:
    clock = Clock()
    folder = tmp_path / "2025"
    async with opened(url, clock) as store:
        await fill(store, clock)
        log = shown([e async for e in store.read_all()])
        orders = {s: shown([e async for e in store.read_stream(s)]) for s in ("order-1", "order-3")}
        anchors = (await verify(store)).anchors()

        report = await archive_streams(store, folder, category="order", older_than=365 * DAY)

        assert (report.streams, report.events, report.removed, report.kept) == (5, 16, 16, [])
        manifest = check_archive(folder)
        assert [f.streams for f in manifest.files] == [[f"order-{n}" for n in range(1, 6)]]
        assert {r[2] for r in removals(url).values()} == {"archived"}
        assert len(event_positions(url)) == 6  # five customers and order-6
        assert [e async for e in store.read_stream("order-1")] == []
        assert await store.stream_version("order-1") == 3  # the head stays
        through = [e async for e in read_stream_through(store, "order-1", folder)]
        assert shown(through) == orders["order-1"]  # read through to the archive
        checked = await verify(store, anchors=anchors)
        assert checked.ok, checked.problems
        assert checked.removed == {"archived": 16}

        head = await store.last_position()
        seen: list[int] = []

        async def follow() -> None:
            async for event in store.subscribe(after=head):
                seen.append(event.position)
                return

        following = asyncio.create_task(follow())
        await asyncio.sleep(0.1)
        restored = await restore(store, folder)
        assert (restored.events, restored.present) == (16, 0)
        await store.append("customer-9", [eskit.NewEvent("Registered", {})])
        await asyncio.wait_for(following, 10)
        assert seen == [head + 1]  # a live subscriber is not sent the restored events

        assert shown([e async for e in store.read_all()])[: len(log)] == log  # exactly
        for stream, events in orders.items():
            assert shown([e async for e in store.read_stream(stream)]) == events
        checked = await verify(store, anchors=anchors)
        assert checked.ok, checked.problems
        assert checked.removed == {}
        rebuilt = Counting()  # a projection built from the start sees the restored events
        async with ProjectionRunner(store, [rebuilt]) as runner:
            await asyncio.wait_for(runner.wait_until(await store.last_position()), 10)
        assert rebuilt.orders == 16 + 1
        again = await restore(store, folder)
        assert (again.events, again.present) == (0, 16)
        next_one = await store.append("order-1", [eskit.NewEvent("Returned", {})])
        assert next_one.last_version == 4


async def test_a_changed_archive_file_is_refused_before_anything_is_restored(
    url: str, tmp_path: Path
) -> None:
    clock = Clock()
    async with opened(url, clock) as store:
        await fill(store, clock)
        await archive_streams(store, tmp_path / "a", category="order", older_than=DAY)
        (file,) = load_manifest(tmp_path / "a").files
        path = tmp_path / "a" / file.name
        path.write_bytes(path.read_bytes()[:-1] + b"\0")
        with pytest.raises(ValueError, match="does not match its SHA-256"):
            await restore(store, tmp_path / "a")
        assert len(event_positions(url)) == 6
        with pytest.raises(ValueError, match="is not empty"):
            await archive_streams(store, tmp_path / "a", category="order", older_than=DAY)


async def test_the_commands_archive_and_restore(url: str, tmp_path: Path) -> None:
    clock = Clock()
    async with opened(url, clock) as store:
        await fill(store, clock)
    folder = str(tmp_path / "cold")
    result = await asyncio.to_thread(
        invoke, ["archive", url, folder, "--category", "order", "--older-than", "1d", "--json"]
    )
    assert result.exit_code == 0, result.output
    record = msgspec.json.decode(result.stdout.splitlines()[-1])
    assert (record["streams"], record["removed"]) == (5, 16)
    result = await asyncio.to_thread(invoke, ["restore", url, folder, "--json"])
    assert result.exit_code == 0, result.output
    assert msgspec.json.decode(result.stdout.splitlines()[-1])["events"] == 16
    result = await asyncio.to_thread(
        invoke, ["archive", url, str(tmp_path / "x"), "--category", "order", "--older-than", "1y"]
    )
    assert result.exit_code == 1
    assert "an age is a positive whole number" in result.output


async def test_a_stream_a_consumer_has_not_passed_is_archived_but_kept(
    url: str, tmp_path: Path
) -> None:
    clock = Clock()
    async with opened(url, clock) as store:
        await store.append("order-1", [eskit.NewEvent("Placed", {})])
        async with ProjectionRunner(store, [Seen()]) as runner:
            await asyncio.wait_for(runner.wait_until(1), 10)
        await store.append("order-2", [eskit.NewEvent("Placed", {})])
        clock.now += 2 * DAY
        report = await archive_streams(store, tmp_path / "a", category="order", older_than=DAY)
        assert (report.streams, report.removed, report.kept) == (2, 1, ["order-2"])
        assert event_positions(url) == {2}
        assert load_manifest(tmp_path / "a").files[0].streams == ["order-1", "order-2"]


def archived_positions(folder: Path) -> set[int]:
    """The positions of the events in the files the manifest lists."""
    try:
        manifest = check_archive(folder)
    except ValueError:  # killed before the first file was listed
        return set()
    return {e.position for e in archived_events(folder, manifest)}


@pytest.mark.slow
async def test_an_archive_killed_midway_loses_nothing(url: str, tmp_path: Path) -> None:
    clock = Clock()
    async with opened(url, clock) as store:
        for n in range(60):
            batch = [eskit.NewEvent("Placed", {"pad": "x" * 100, "i": i}) for i in range(20)]
            await store.append(f"order-{n}", batch)
        log = shown([e async for e in store.read_all()])
        anchors = (await verify(store)).anchors()
    everything = event_positions(url)
    folder = tmp_path / "cold"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "eskit.cli", "archive", url, str(folder), "--category", "order"),
        *("--older-than", "1s", "--events-per-file", "40"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while len(removals(url)) < 400 and time.monotonic() < deadline:
        if child.returncode is not None:
            break
        await asyncio.sleep(0.005)
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signal.SIGKILL)
    await child.wait()

    gone, kept, archived = set(removals(url)), event_positions(url), archived_positions(folder)
    assert gone  # it was killed while removing
    assert not gone & kept
    assert gone | kept == everything
    assert gone <= archived  # nothing removed that a listed file does not hold
    async with opened(url, clock) as store:
        restored = await restore(store, folder)
        assert restored.events == len(gone)
        assert shown([e async for e in store.read_all()]) == log
        checked = await verify(store, anchors=anchors)
        assert checked.ok, checked.problems[:3]


async def test_streams_show_reads_through_to_an_archive(url: str, tmp_path: Path) -> None:
    clock, folder = Clock(), tmp_path / "cold"
    async with opened(url, clock) as store:
        await fill(store, clock)
        order_1 = [msgspec.to_builtins(e) for e in [e async for e in store.read_stream("order-1")]]
        await archive_streams(store, folder, category="order", older_than=DAY)
        await store.append("order-1", [eskit.NewEvent("Returned", {})])

    def show(*more: str) -> list[dict[str, object]]:
        result = invoke(["streams", "show", url, "order-1", "--archive", str(folder), *more])
        assert result.exit_code == 0, result.output
        return [msgspec.json.decode(line) for line in result.stdout.splitlines()]

    through = await asyncio.to_thread(show, "--json")
    assert through[:4] == order_1
    assert [(e["version"], e["type"]) for e in through[3:]] == [(3, "Shipped"), (4, "Returned")]
    page = await asyncio.to_thread(show, "--json", "--from-version", "2", "--limit", "2")
    assert [e["version"] for e in page] == [2, 3]
    table = await asyncio.to_thread(
        invoke, ["streams", "show", url, "order-1", "--archive", str(folder)]
    )
    assert "order-1 · v0 · Placed" in table.output
    assert "order-1 · v4 · Returned" in table.output
    alone = await asyncio.to_thread(invoke, ["streams", "show", url, "order-1", "--json"])
    assert [msgspec.json.decode(line)["version"] for line in alone.stdout.splitlines()] == [4]

    backwards = await asyncio.to_thread(
        invoke, ["streams", "show", url, "order-1", "--archive", str(folder), "--backwards"]
    )
    assert backwards.exit_code == 1
    assert "--backwards reads the store only" in backwards.output
    missing = await asyncio.to_thread(
        invoke, ["streams", "show", url, "order-1", "--archive", str(tmp_path)]
    )
    assert missing.exit_code == 1
    assert f"{tmp_path} is no eskit archive" in missing.output
