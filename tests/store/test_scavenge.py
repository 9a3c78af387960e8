"""Scavenging (``eskit.store.scavenge``, ``eskit scavenge``) on SQLite and PostgreSQL.

Each test builds a real store, reads everything a reader can see, scavenges, and reads
again: streams read exactly as before, only events no read showed are gone from the log,
each recorded in the removals table with its id, reason and link, and everything that
depends on history (versions, idempotent retries, ``eskit verify`` with saved anchors,
consumers' checkpoints, positions) goes on as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from examples.invoicing.app import invoicing
from examples.invoicing.commands import AddInvoiceLine, CreateInvoice

import eskit
from eskit.application.commands import command_event_id
from eskit.errors import IdempotencyConflict, StoreError
from eskit.projections.projection import Projection
from eskit.projections.runner import ProjectionRunner
from eskit.store.audit import verify
from eskit.store.scavenge import scavenge
from tests import postgres
from tests.cli.conftest import invoke
from tests.processes import ROOT

pytestmark = pytest.mark.anyio

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


class Clock:
    """The store's clock, moved by the test (``max_age`` hides by recording time)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/events.db"
    return postgres.store_url()


@contextlib.contextmanager
def raw(url: str) -> Iterator[Any]:
    """A plain driver connection to the store's database (its schema first on the path)."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            yield conn
        finally:
            conn.close()
        return
    base, schema = url.split("?schema=")
    with psycopg.connect(base, autocommit=True) as pg:
        pg.execute(f'SET search_path TO "{schema}"'.encode())
        yield pg


def table(url: str, name: str) -> str:
    return name if url.startswith("sqlite") else f"eskit_{name}"


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with raw(url) as conn:
        query = sql if url.startswith("sqlite") else sql.encode()
        return [tuple(r) for r in conn.execute(query)]


def event_positions(url: str) -> set[int]:
    return {r[0] for r in rows(url, f"SELECT position FROM {table(url, 'events')}")}


def removals(url: str) -> dict[int, tuple[Any, ...]]:
    found = rows(
        url, f"SELECT position, stream, version, reason, id, link FROM {table(url, 'removals')}"
    )
    return {r[0]: r[1:] for r in found}


@contextlib.asynccontextmanager
async def opened(url: str, clock: Clock | None = None) -> AsyncIterator[eskit.EventStore]:
    async with eskit.open_store(url, clock=clock or Clock()) as store:
        yield store


async def build(store: eskit.EventStore, clock: Clock) -> dict[str, list[uuid.UUID]]:
    """Streams of every kind, their events interleaved in the log; the ids of gone-1's."""
    gone_ids = [uuid.uuid4() for _ in range(4)]
    new = eskit.NewEvent
    await store.append("live-1", [new("Added", {"n": n}) for n in range(3)])
    await store.append("gone-1", [new("Added", {"n": n}, id=i) for n, i in enumerate(gone_ids)])
    await store.append("dead-1", [new("Added", {"n": n}) for n in range(3)])
    await store.append("capped-1", [new("Added", {"n": n}) for n in range(6)])
    await store.append("old-1", [new("Added", {"n": n}) for n in range(3)])
    await store.append("cut-1", [new("Added", {"n": n}) for n in range(5)])
    await store.save_snapshot(eskit.Snapshot("cut-1", 1, 1, {"s": 1}))
    await store.save_snapshot(eskit.Snapshot("cut-1", 4, 1, {"s": 4}))
    clock.now = T0 + 3 * HOUR
    await store.append("old-1", [new("Added", {"n": n}) for n in range(3, 5)])
    await store.append("live-1", [new("Added", {"n": n}) for n in range(3, 5)])
    await store.delete_stream("gone-1")
    await store.tombstone_stream("dead-1")
    await store.set_stream_metadata("capped-1", eskit.StreamMetadata(max_count=2))
    await store.set_stream_metadata("old-1", eskit.StreamMetadata(max_age=3600))
    await store.set_stream_metadata("cut-1", eskit.StreamMetadata(truncate_before=3))
    await store.set_stream_metadata("live-1", eskit.StreamMetadata(max_count=100))
    clock.now = T0 + 3 * HOUR + dt.timedelta(minutes=10)
    return {"gone-1": gone_ids}


STREAMS = ("live-1", "gone-1", "dead-1", "capped-1", "old-1", "cut-1", "never-1")


def shown(events: Sequence[eskit.RecordedEvent]) -> list[bytes]:
    return [msgspec.json.encode(msgspec.structs.asdict(e)) for e in events]


async def view(store: eskit.EventStore) -> dict[str, Any]:
    """Everything a reader sees, read_all apart."""
    seen: dict[str, Any] = {"last_position": await store.last_position()}
    for stream in STREAMS:
        try:
            seen[stream] = (
                shown([e async for e in store.read_stream(stream)]),
                shown([e async for e in store.read_stream(stream, backwards=True)]),
                shown([e async for e in store.read_stream(stream, from_version=4, limit=2)]),
                await store.stream_version(stream),
                await store.get_stream_metadata(stream),
                await store.load_snapshot(stream, 1),
            )
        except eskit.StreamDeleted:
            seen[stream] = "tombstoned"
    return seen


async def test_a_scavenge_removes_only_what_no_read_shows_and_readers_see_the_same(
    url: str,
) -> None:
    clock = Clock()
    async with opened(url, clock) as store:
        ids = await build(store, clock)
        before = await view(store)
        log = [e async for e in store.read_all()]
        visible = {
            msgspec.json.decode(shown_event)["position"]
            for stream in STREAMS
            if before[stream] != "tombstoned"
            for shown_event in before[stream][0]
        }
        anchors = (await verify(store)).anchors()
        report = await scavenge(store, batch_size=3)

        assert await view(store) == before
        hidden = {e.position for e in log} - visible
        assert report.total == len(hidden) == 17
        assert report.removed == {
            "deleted": 4,
            "tombstoned": 3,
            "truncate_before": 3,
            "max_count": 4,
            "max_age": 3,
        }
        assert [e.position async for e in store.read_all()] == [
            e.position for e in log if e.position not in hidden
        ]
        assert event_positions(url) == {e.position for e in log} - hidden
        recorded = removals(url)
        assert set(recorded) == hidden
        by_position = {e.position: e for e in log}
        for position, (stream, version, _reason, id_, link) in recorded.items():
            event = by_position[position]
            assert (stream, version) == (event.stream, event.version)
            assert (uuid.UUID(bytes=id_) if isinstance(id_, bytes) else id_) == event.id
            assert link is not None
        # the hidden snapshot went with the events it folded; the visible one stays
        assert rows(url, f"SELECT version FROM {table(url, 'snapshots')}") == [(4,)]

        # everything that depends on history goes on
        report_after = await verify(store, anchors=anchors)
        assert report_after.ok, report_after.problems
        assert report_after.removed == report.removed
        retried = await store.append(
            "gone-1",
            [eskit.NewEvent("Added", {"n": n}, id=i) for n, i in enumerate(ids["gone-1"])],
            expected_version=eskit.NO_STREAM,
        )
        gone_last = max(e.position for e in log if e.stream == "gone-1")
        assert (retried.last_version, retried.last_position) == (3, gone_last)
        with pytest.raises(IdempotencyConflict):
            await store.append("live-1", [eskit.NewEvent("Added", {}, id=ids["gone-1"][0])])
        revived = await store.append("gone-1", [eskit.NewEvent("Added", {"n": 4})])
        assert revived.last_version == 4  # a deleted stream continues its versions
        assert revived.last_position == before["last_position"] + 1  # no position reused
        assert [e.version async for e in store.read_stream("gone-1")] == [4]
        with pytest.raises(eskit.StreamDeleted):
            await store.append("dead-1", [eskit.NewEvent("Added", {})])
        assert (await verify(store, anchors=anchors)).ok

        again = await scavenge(store)  # nothing left to remove
        assert again.total == 0


async def test_a_command_whose_events_were_scavenged_is_recognised_and_not_run_again(
    url: str,
) -> None:
    async with opened(url) as store:
        bus = invoicing(store)
        await bus.send(CreateInvoice("44", "c-1", "EUR", dt.date(2024, 4, 1)))
        command_id = uuid.uuid4()
        line = AddInvoiceLine("44", "pen", 250, "EUR")
        first = await bus.send(line, command_id=command_id)
        await store.delete_stream("invoice-44")
        assert (await scavenge(store)).removed == {"deleted": 2}
        head = await store.last_position()

        again = await bus.send(line, command_id=command_id)

        assert again.replayed
        assert (again.version, again.position) == (first.version, first.position)
        assert await store.last_position() == head  # nothing appended
        gone = await store.find_removed(command_event_id(command_id, 0))
        assert gone is not None
        assert (gone.stream, gone.version, gone.reason) == ("invoice-44", 1, "deleted")
        assert await store.find_removed(uuid.uuid4()) is None


async def test_streams_a_scavenge_or_an_archive_removed_events_of_are_never_caught_up(
    url: str,
) -> None:
    """The command bus catches a kept state up (``Engine.events_after``) only on a stream
    without a row in the streams table: every stream a scavenge or an archive removes
    events of has one (read rules, a delete, the head it keeps, or the mark an archive of
    part of a stream leaves), so it is loaded."""
    async with opened(url) as store:
        engine, new = store.engine, eskit.NewEvent("Added", {})
        await store.append("ruled-1", [new, new, new])
        await store.set_stream_metadata("ruled-1", eskit.StreamMetadata(max_count=1))
        await store.append("gone-1", [new, new])
        await store.delete_stream("gone-1")
        await store.append("whole-1", [new, new])
        await store.append("part-1", [new, new, new])
        assert (await scavenge(store)).removed == {"max_count": 2, "deleted": 2}
        scavenger = store.scavenger()
        assert scavenger is not None
        try:
            assert await asyncio.to_thread(scavenger.remove_through, "whole-1", 1, T0, "t") == 2
            assert await asyncio.to_thread(scavenger.remove_through, "part-1", 0, T0, "t") == 1
        finally:
            scavenger.close()
        for stream in ("ruled-1", "gone-1", "whole-1", "part-1"):
            assert await engine.call_async(engine.events_after, stream, 0, 10) is None


async def test_a_scavenge_of_an_untouched_store_changes_nothing(url: str) -> None:
    async with opened(url) as store:
        await store.append("a-1", [eskit.NewEvent("Added", {"n": n}) for n in range(5)])
        await store.append("b-1", [eskit.NewEvent("Added", {})])
        await store.set_stream_metadata("a-1", eskit.StreamMetadata(max_count=5))
        dump = {
            name: sorted(rows(url, f"SELECT * FROM {table(url, name)}"))
            for name in ("events", "removals", "streams", "snapshots")
        }
        report = await scavenge(store)
        assert report.total == 0
        assert report.removed == {}
        assert {
            name: sorted(rows(url, f"SELECT * FROM {table(url, name)}")) for name in dump
        } == dump


class Seen(Projection):
    """A registered consumer that has seen events up to its checkpoint."""

    name = "seen"
    every_type = True

    async def handle_batch(self, events: Sequence[eskit.RecordedEvent]) -> None:
        pass


async def test_nothing_a_registered_consumer_has_not_passed_is_removed(url: str) -> None:
    async with opened(url) as store:
        await store.append("gone-1", [eskit.NewEvent("Added", {"n": n}) for n in range(3)])
        async with ProjectionRunner(store, [Seen()]) as runner:
            await asyncio.wait_for(runner.wait_until(3), 10)
        await store.append("gone-1", [eskit.NewEvent("Added", {"n": n}) for n in range(3, 6)])
        await store.delete_stream("gone-1")
        report = await scavenge(store)
        assert report.removed == {"deleted": 3}  # up to the checkpoint only
        assert event_positions(url) == {4, 5, 6}
        async with ProjectionRunner(store, [Seen()]) as runner:
            await asyncio.wait_for(runner.wait_until(6), 10)
        assert (await scavenge(store)).removed == {"deleted": 3}
        assert event_positions(url) == set()
        assert await store.stream_version("gone-1") is None  # deleted, as before
        revived = await store.append("gone-1", [eskit.NewEvent("Added", {})])
        assert (revived.last_version, revived.last_position) == (6, 7)


async def test_appends_and_readers_go_on_during_a_scavenge(url: str) -> None:
    async with opened(url) as store:
        for n in range(20):
            await store.append(f"gone-{n}", [eskit.NewEvent("Added", {"i": i}) for i in range(10)])
            await store.delete_stream(f"gone-{n}")
        for n in range(3):
            await store.set_stream_metadata(f"capped-{n}", eskit.StreamMetadata(max_count=3))
        written: dict[str, list[int]] = {f"capped-{n}": [] for n in range(3)}
        written["live-1"] = []
        positions: list[int] = []
        done = asyncio.Event()
        problems: list[str] = []

        async def append(stream: str) -> None:
            while not done.is_set():
                result = await store.append(stream, [eskit.NewEvent("Added", {})])
                written[stream].append(result.last_version)
                positions.append(result.last_position)
                await asyncio.sleep(0)

        async def read(stream: str, capped: bool) -> None:
            while not done.is_set():
                versions = [e.version async for e in store.read_stream(stream)]
                if versions and versions != list(range(versions[0], versions[-1] + 1)):
                    problems.append(f"{stream}: {versions}")
                # (how many a max_count stream shows is checked once appends stop: a read
                # takes the stream's last version and its events in two statements, so
                # appends between them show more, with or without a scavenge)
                if not capped and versions and versions[0] != 0:
                    problems.append(f"{stream} lost its first events: {versions[:3]}")
                await asyncio.sleep(0.001)

        workers = [asyncio.create_task(append(s)) for s in written]
        workers += [asyncio.create_task(read(s, "capped" in s)) for s in written]
        await asyncio.sleep(0.05)
        report = await scavenge(store, batch_size=7)
        done.set()
        await asyncio.gather(*workers)
        assert not problems, problems[:5]
        assert report.removed["deleted"] == 200
        assert len(set(positions)) == len(positions)  # no position given twice
        for stream, versions in written.items():
            assert versions == list(range(len(versions)))
            assert await store.stream_version(stream) == versions[-1]
        assert [e.version async for e in store.read_stream("live-1")] == written["live-1"]
        for n in range(3):
            shown_now = [e.version async for e in store.read_stream(f"capped-{n}")]
            assert shown_now == written[f"capped-{n}"][-3:]
        assert (await verify(store)).ok
        after = await scavenge(store)
        assert after.removed.get("deleted", 0) == 0


async def test_a_memory_store_has_nothing_to_scavenge() -> None:
    async with eskit.open_store("memory://") as store:
        with pytest.raises(ValueError, match="nothing to scavenge"):
            await scavenge(store)


async def test_the_command_scavenges_with_a_table(url: str) -> None:
    async with opened(url) as store:
        await store.append("gone-1", [eskit.NewEvent("Added", {}) for _ in range(3)])
        await store.delete_stream("gone-1")
    result = await asyncio.to_thread(invoke, ["scavenge", url, "--json"])
    assert result.exit_code == 0, result.output
    record = msgspec.json.decode(result.stdout.splitlines()[-1])
    assert (record["removed"], record["removed_deleted"]) == (3, 3)
    result = await asyncio.to_thread(invoke, ["verify", url])
    assert result.exit_code == 0, result.output
    assert "3 events were scavenged (3 deleted)" in result.output


def test_the_application_role_cannot_scavenge(anyio_backend: str) -> None:
    from tests.store.test_app_role import as_role, drop_role

    url = postgres.store_url()
    role = f"app_{uuid.uuid4().hex[:12]}"

    async def fill() -> None:
        async with opened(url) as store:
            await store.append("gone-1", [eskit.NewEvent("Added", {})])
            await store.delete_stream("gone-1")

    async def scavenge_as_app() -> None:
        async with eskit.open_store(as_role(url, role)) as store:
            await scavenge(store)

    try:
        asyncio.run(fill())
        assert invoke(["migrate", url, "--app-role", role, "--login"]).exit_code == 0
        with pytest.raises(StoreError, match="needs the owner's rights"):
            asyncio.run(scavenge_as_app())
        assert len(event_positions(url)) == 1
        assert removals(url) == {}
    finally:
        drop_role(role)


@pytest.mark.slow
async def test_a_scavenge_killed_midway_leaves_whole_batches_and_a_rerun_finishes(
    url: str,
) -> None:
    async with opened(url) as store:
        for n in range(40):
            batch = [eskit.NewEvent("Added", {"pad": "x" * 200, "i": i}) for i in range(25)]
            await store.append_many([eskit.Append(f"gone-{n}-{k}", batch) for k in range(5)])
        for n in range(40):
            for k in range(5):
                await store.delete_stream(f"gone-{n}-{k}")
        await store.append("live-1", [eskit.NewEvent("Added", {})])
        anchors = (await verify(store)).anchors()
    everything = event_positions(url)
    for round_ in range(3):
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "eskit.cli", "scavenge", url, "--batch-size", "20"),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while len(removals(url)) < 100 * (round_ + 1) and time.monotonic() < deadline:
            if child.returncode is not None:
                break
            await asyncio.sleep(0.005)
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGKILL)
        await child.wait()
        left, gone = event_positions(url), set(removals(url))
        assert not left & gone  # every recorded removal deleted, every deletion recorded
        assert left | gone == everything
    async with opened(url) as store:
        report = await scavenge(store)
        assert report.total + len(gone) == 5000
        assert event_positions(url) == {max(everything)}
        checked = await verify(store, anchors=anchors)
        assert checked.ok, checked.problems[:3]
        assert checked.removed == {"deleted": 5000}
        revived = await store.append("gone-0-0", [eskit.NewEvent("Added", {})])
        assert (revived.last_version, revived.last_position) == (25, max(everything) + 1)


async def test_a_persistent_subscription_group_holds_back_a_scavenge(url: str) -> None:
    from eskit.subscriptions import Groups, Source

    async with opened(url) as store:
        await store.append("gone-1", [eskit.NewEvent("Added", {"n": n}) for n in range(3)])
        groups = Groups(store)
        await groups.create("mailer", Source.category("gone"), start=2)  # passed 1 and 2
        await store.delete_stream("gone-1")
        assert (await scavenge(store)).removed == {"deleted": 2}
        assert event_positions(url) == {3}
        await groups.delete("mailer")
        assert (await scavenge(store)).removed == {"deleted": 1}


async def test_a_read_only_store_is_not_scavenged(url: str) -> None:
    async with opened(url) as store:
        await store.append("gone-1", [eskit.NewEvent("Added", {})])
        await store.delete_stream("gone-1")
    async with eskit.open_store(url, readonly=True) as store:
        with pytest.raises(ValueError, match="read-only"):
            await scavenge(store)
    assert len(event_positions(url)) == 1
