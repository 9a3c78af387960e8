"""The blocking runner (``eskit.sync.ProjectionRunner``) over a blocking store: it catches
up, follows live, gets stuck on a poison event and goes on after a skip, rebuilds, waits
for a position, and resumes from its checkpoints after a restart, on memory and on a
SQLite file (its read models in the store's own file)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import eskit
import eskit.sync
from eskit.projections import Projection, ReadModelConnection, SQLProjection, handles
from eskit.projections import state as st
from eskit.projections.database import BlockingDatabase
from eskit.sync import ProjectionRunner, SyncStore
from tests.projections.models import COUNTED, Counter, Doubled, fold, sql

RETRIES = 2


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SyncStore]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/events.db"
    with eskit.sync.open_store(url) as opened:
        yield opened


class Fragile(SQLProjection):
    """Records the events it handles; ``Poison`` always fails."""

    name = "fragile"
    tables = ("handled",)
    schema = ("CREATE TABLE {handled} (position INTEGER PRIMARY KEY, type TEXT NOT NULL)",)

    def __init__(self) -> None:
        self.poison_calls = 0

    @handles("Added")
    def added(self, event: eskit.RecordedEvent, db: ReadModelConnection) -> None:
        db.execute(sql(db, "INSERT INTO {handled} VALUES (?, ?)"), (event.position, event.type))

    @handles("Poison")
    def poison(self, event: eskit.RecordedEvent, db: ReadModelConnection) -> None:
        self.poison_calls += 1
        raise RuntimeError("cannot digest poison")


class Seen(Projection):
    """A plain projection (async handlers, as in the async API): the positions it saw."""

    name = "seen"

    def __init__(self) -> None:
        self.positions: list[int] = []

    @handles(*COUNTED)
    async def saw(self, event: eskit.RecordedEvent) -> None:
        self.positions.append(event.position)


def append(store: SyncStore, stream: str, *types: str) -> int:
    events = [eskit.NewEvent(t, {"amount": 1}) for t in types]
    return store.append(stream, events).last_position


def counts(database: BlockingDatabase) -> dict[tuple[str, str], int]:
    rows = database.read(lambda c: c.execute("SELECT stream, type, n FROM counts").fetchall())
    return {(stream, type_): n for stream, type_, n in rows}


def quick(
    store: SyncStore,
    *projections: SQLProjection | Projection,
    database: BlockingDatabase | None = None,
) -> ProjectionRunner:
    return ProjectionRunner(
        store, projections, database=database, retries=RETRIES, backoff=0.001, stuck_poll=0.02
    )


def test_catches_up_in_the_callers_thread(store: SyncStore) -> None:
    append(store, "cart-1", "Added", "Added", "Other")
    append(store, "cart-2", "Removed")
    runner = quick(store, Counter())
    try:
        runner.run_until_caught_up()
        [status] = runner.status()
        assert counts(runner.database) == fold(
            [("cart-1", "Added"), ("cart-1", "Added"), ("cart-2", "Removed")]
        )
        assert (status.status, status.position, status.lag) == ("stopped", 4, 0)
        assert runner.worker("counter").thread is None  # nothing ran in the background
    finally:
        runner.stop()


def test_follows_live_and_wait_until_reads_your_own_writes(store: SyncStore) -> None:
    seen = Seen()
    with quick(store, Counter(), seen) as runner:
        last = append(store, "cart-1", "Added")
        runner.wait_until(last, timeout=10)
        assert counts(runner.database) == {("cart-1", "Added"): 1}
        last = append(store, "cart-1", "Removed")
        runner.wait_until(last, name="seen", timeout=10)
        statuses = {s.name: s.status for s in runner.status()}
    assert seen.positions == [1, 2]
    assert statuses == {"counter": "running", "seen": "running"}


def test_wait_until_on_a_runner_not_started_catches_up_to_the_position(store: SyncStore) -> None:
    runner = quick(store, Counter())
    try:
        last = append(store, "cart-1", "Added", "Added")
        runner.wait_until(last)
        assert counts(runner.database) == {("cart-1", "Added"): 2}
        with pytest.raises(TimeoutError):
            runner.wait_until(last + 1, timeout=0.05)  # never appended
    finally:
        runner.stop()


def test_a_poison_event_gets_it_stuck_and_a_skip_moves_it_on(store: SyncStore) -> None:
    append(store, "cart-1", "Added")
    poison = append(store, "cart-1", "Poison")
    last = append(store, "cart-1", "Added")
    fragile = Fragile()
    with quick(store, fragile) as runner:
        with pytest.raises(eskit.ProjectionError) as raised:
            runner.wait_until(last, timeout=10)
        [stuck] = runner.status()
        record = runner.skip("fragile", "bad data, ticket 12")
        runner.wait_until(last, timeout=10)
        [status] = runner.status()
        rows = runner.database.read(lambda c: c.execute("SELECT * FROM handled").fetchall())
        skips = runner.database.read(lambda c: st.skips(c, "fragile"))

    assert (raised.value.position, raised.value.event_type) == (poison, "Poison")
    assert fragile.poison_calls == 1 + RETRIES + 1  # in the batch, then alone with retries
    assert (stuck.status, stuck.position, stuck.error_position) == ("stuck", poison - 1, poison)
    assert (stuck.error_type, stuck.error) == ("Poison", "RuntimeError: cannot digest poison")
    assert (record.position, record.reason) == (poison, "bad data, ticket 12")
    assert skips == [record]
    assert rows == [(poison - 1, "Added"), (last, "Added")]
    assert (status.status, status.position) == ("running", last)


def test_a_skip_from_elsewhere_reaches_the_stuck_thread(store: SyncStore) -> None:
    append(store, "cart-1", "Poison")
    last = append(store, "cart-1", "Added")
    with quick(store, Fragile()) as runner:
        with pytest.raises(eskit.ProjectionError):
            runner.wait_until(last, timeout=10)
        # e.g. another process's runner, not started (over the memory store's database)
        other = quick(store, Fragile(), database=runner.database)
        other.skip("fragile", "from elsewhere")
        deadline = time.monotonic() + 10
        while runner.worker("fragile").failure is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        runner.wait_until(last, timeout=10)
        other.stop()


def test_a_rebuild_switches_to_the_new_version(store: SyncStore) -> None:
    append(store, "cart-1", "Added", "Removed")
    runner = quick(store, Counter())
    runner.run_until_caught_up()
    runner.stop()

    progress: list[tuple[int, int]] = []
    rebuilt = quick(store, Doubled())
    try:
        rebuilt.rebuild("counter", progress=lambda at, head: progress.append((at, head)))
        assert counts(rebuilt.database) == {("cart-1", "Added"): 2, ("cart-1", "Removed"): 2}
        [status] = rebuilt.status()
        assert (status.version, status.position) == (2, 2)
        assert progress[-1] == (2, 2)
    finally:
        rebuilt.stop()


def test_checkpoints_survive_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    with eskit.sync.open_store(url) as store:
        append(store, "cart-1", "Added", "Added")
        first = Counter()
        with quick(store, first) as runner:
            runner.wait_until(2, timeout=10)
    with eskit.sync.open_store(url) as store:
        last = append(store, "cart-1", "Removed")
        again = Counter()
        runner = quick(store, again)
        try:
            runner.run_until_caught_up()
            assert counts(runner.database) == {("cart-1", "Added"): 2, ("cart-1", "Removed"): 1}
        finally:
            runner.stop()
    assert (first.applied, again.applied) == (2, 1)  # nothing applied twice
    assert last == 3


def test_stop_while_live_returns_promptly(store: SyncStore) -> None:
    runner = quick(store, Counter())
    runner.start()
    runner.wait_until(0, timeout=10)
    started = time.monotonic()
    runner.stop()
    assert time.monotonic() - started < 2
    assert not any(t.name.startswith("eskit-projection:") for t in threading.enumerate())


def test_threads_appending_while_it_follows_lose_nothing(store: SyncStore) -> None:
    with quick(store, Counter()) as runner:

        def write(stream: str) -> None:
            for _ in range(20):
                append(store, stream, "Added")

        writers = [threading.Thread(target=write, args=(f"cart-{n}",)) for n in range(8)]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
        runner.wait_until(store.last_position(), timeout=30)
        found = counts(runner.database)
    assert found == {(f"cart-{n}", "Added"): 20 for n in range(8)}


@pytest.mark.anyio
async def test_a_plain_projection_caught_up_from_a_thread_running_a_loop(store: SyncStore) -> None:
    """Blocking calls from async code (a notebook cell, an async view) still run the
    plain projection's coroutine handlers, in a loop of their own."""
    seen = Seen()
    last = append(store, "cart-1", "Added", "Removed")
    runner = quick(store, seen)
    try:
        runner.run_until_caught_up()
    finally:
        runner.stop()
    assert seen.positions == [1, last]


def test_a_runner_started_again_follows_again(store: SyncStore) -> None:
    runner = quick(store, Counter())
    try:
        runner.start()
        runner.wait_until(append(store, "cart-1", "Added"), timeout=10)
        runner.stop()
        runner.start()
        runner.wait_until(append(store, "cart-1", "Added"), timeout=10)
        assert counts(runner.database) == {("cart-1", "Added"): 2}
    finally:
        runner.stop()
