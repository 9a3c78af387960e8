"""The PostgreSQL engine used directly, blocking, with no event loop: group commit from any
thread (leader/follower), an uncontended caller committing in its own thread, and processes
appending at once (each numbering from the head it locked)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

import eskit
from eskit.store import rules
from eskit.store.audit import verify
from eskit.store.postgres import PostgresStore
from eskit.store.postgres_engine import PostgresEngine
from eskit.store.postgres_writer import Request, Writer
from tests import postgres

CHILD = Path(__file__).with_name("postgres_engine_child.py")


class Recorded:
    """What each commit of the writer saw: the batch's size and the committing thread."""

    def __init__(self) -> None:
        self.groups: list[tuple[int, int]] = []


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Recorded:
    seen = Recorded()
    commit = Writer.commit

    def recording(self: Writer, batch: Sequence[Request]) -> Any:
        seen.groups.append((len(batch), threading.get_ident()))
        return commit(self, batch)

    monkeypatch.setattr(Writer, "commit", recording)
    return seen


@pytest.fixture
def url() -> str:
    return postgres.store_url()


@pytest.fixture
def engine(url: str, recorded: Recorded) -> Iterator[PostgresEngine]:
    store = eskit.open_store(url)
    assert isinstance(store, PostgresStore)
    engine = store.engine
    engine.open()
    try:
        yield engine
    finally:
        engine.close()


def one(stream: str, n: int, expected: eskit.ExpectedVersion = eskit.ANY) -> rules.PreparedAppend:
    events = [eskit.NewEvent("Counted", {"n": n})]
    return rules.prepare_append(stream, events, expected, rules.DEFAULT_MAX_EVENT_SIZE)


def count_events(url: str, stream: str) -> int:
    """Seen from a connection of its own: what is committed."""
    conninfo, schema = url.split("?schema=")
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            f'SELECT count(*) FROM "{schema}".eskit_events WHERE stream = %s', (stream,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_an_uncontended_append_commits_in_the_callers_thread(
    engine: PostgresEngine, recorded: Recorded, url: str
) -> None:
    (result,) = engine.append_many([one("solo-1", 0, eskit.NO_STREAM)])
    assert (result.last_version, result.last_position) == (0, 1)
    assert recorded.groups == [(1, threading.get_ident())]
    assert count_events(url, "solo-1") == 1  # committed before the answer
    assert engine.read_stream_page("solo-1", None, False, 10)[0].data == {"n": 0}


def test_threads_appending_at_once_share_groups_and_are_answered_after_commit(
    engine: PostgresEngine, recorded: Recorded, url: str
) -> None:
    threads, each = 16, 25
    positions: list[int] = []
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        stream = f"thread-{worker}"
        expected: eskit.ExpectedVersion = eskit.NO_STREAM
        try:
            for n in range(each):
                (result,) = engine.append_many([one(stream, n, expected)])
                expected = result.last_version
                positions.append(result.last_position)
                assert count_events(url, stream) == n + 1  # answered after its COMMIT
        except BaseException as error:  # reported below
            errors.append(error)

    workers = [threading.Thread(target=write, args=(w,)) for w in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert sorted(positions) == list(range(1, threads * each + 1))
    assert max(size for size, _ in recorded.groups) > 1  # followers were committed together
    assert sum(size for size, _ in recorded.groups) == threads * each
    page, _ = engine.read_all_page(0, threads * each + 1, None, None)
    assert [e.position for e in page] == list(range(1, threads * each + 1))
    for n in range(threads):
        versions = [e.version for e in engine.read_stream_page(f"thread-{n}", None, False, 99)]
        assert versions == list(range(each))


def test_processes_appending_at_once_number_from_the_locked_head(url: str) -> None:
    """Four processes, an engine each, append to their own streams at once: the head each
    remembers is stale almost every time, so it locks the head before numbering. The log
    is gap-free, each event where its append said, and its chain verifies."""
    processes, each = 4, 40
    store = eskit.open_store(url)
    assert isinstance(store, PostgresStore)
    store.engine.open()  # the schema exists before the children race to open it
    store.engine.close()
    children = [
        subprocess.Popen(
            [sys.executable, str(CHILD), url, str(n), str(each)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        reports = [json.loads(child.communicate(timeout=60)[0]) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    assert all(child.returncode == 0 for child in children)
    placed = sorted(p for report in reports for p in report["positions"])
    assert placed == list(range(1, processes * each + 1))
    assert sum(report["locked"] for report in reports) > 0

    async def check() -> None:
        async with eskit.open_store(url) as store:
            log = [(e.stream, e.version, e.position) async for e in store.read_all()]
            report = await verify(store)
        assert [position for _, _, position in log] == placed
        for n, report_n in enumerate(reports):
            mine = [(v, p) for s, v, p in log if s == f"proc-{n}"]
            assert mine == list(zip(range(each), report_n["positions"], strict=True))
        assert report.ok, report.problems

    anyio.run(check)


def listening(url: str) -> int:
    conninfo, schema = url.split("?schema=")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = %s",
            (f'LISTEN "eskit_{schema}"',),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_blocking_wait_wakes_when_another_process_commits(
    engine: PostgresEngine, url: str
) -> None:
    """Only ``LISTEN`` can wake it: the waiting engine never commits itself."""
    other = eskit.open_store(url)
    assert isinstance(other, PostgresStore)
    other.engine.open()
    try:
        engine.wait_for_commit(engine.commit_count(), 0.01)  # a wait starts the listener
        deadline = time.monotonic() + 10
        while listening(url) < 1:
            assert time.monotonic() < deadline, "the engine never listened"
            time.sleep(0.02)
        seen = engine.commit_count()
        writer = threading.Timer(0.1, other.engine.append_many, ([one("elsewhere-1", 0)],))
        started = time.monotonic()
        writer.start()
        engine.wait_for_commit(seen, 10.0)
        waited = time.monotonic() - started
        writer.join()
    finally:
        other.engine.close()
    assert engine.commit_count() != seen
    assert waited < 2.0, waited
    assert engine.last_position() == 1


def test_functions_of_a_connection_write_in_a_group_and_read_on_a_reader(
    engine: PostgresEngine,
) -> None:
    """``write`` runs in the next group's transaction, in a savepoint of its own (a failure
    fails alone), blocking or from a loop; ``read`` on a reader connection."""
    engine.write(lambda conn: conn.execute("CREATE TABLE notes (n INTEGER)"))
    engine.write(lambda conn: conn.execute("INSERT INTO notes VALUES (1)"))
    with pytest.raises(psycopg.errors.UndefinedTable):
        engine.write(lambda conn: conn.execute("INSERT INTO missing VALUES (1)"))

    def insert(n: int, conn: psycopg.Connection[Any]) -> int:
        conn.execute("INSERT INTO notes VALUES (%s)", (n,))
        return n

    assert anyio.run(engine.write_async, insert, 2) == 2
    rows = engine.read(lambda conn: conn.execute("SELECT n FROM notes ORDER BY n").fetchall())
    assert rows == [(1,), (2,)]
