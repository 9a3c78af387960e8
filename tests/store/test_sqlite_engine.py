"""The SQLite engine called directly, blocking, from many threads (``SQLiteEngine``): group
commit led by the callers' own threads, reads in the callers' threads, and closing while
appends are in flight. The async face over it is tested by the conformance suite and
test_sqlite.py."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import eskit
import eskit.sync
from eskit.errors import StoreClosed
from eskit.store import rules
from eskit.store.model import AppendResult
from eskit.store.rules import PreparedAppend
from eskit.store.sqlite_engine import LOOP_EVENTS, SQLiteEngine

TIMEOUT = 30.0


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@contextlib.contextmanager
def opened(path: Path, **options: float) -> Iterator[SQLiteEngine]:
    engine = SQLiteEngine(path, clock=now, **options)  # type: ignore[arg-type]
    engine.open()
    try:
        yield engine
    finally:
        engine.close()


def one(stream: str, n: int, expected: eskit.ExpectedVersion = eskit.ANY) -> list[PreparedAppend]:
    event = eskit.NewEvent("Happened", {"n": n})
    return [rules.prepare_append(stream, [event], expected, rules.DEFAULT_MAX_EVENT_SIZE)]


def run_threads(count: int, target: object) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]  # type: ignore[arg-type]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive()


def test_sixteen_threads_append_in_shared_groups(tmp_path: Path) -> None:
    """Every append is answered only once it is committed (another connection sees it),
    positions are contiguous, and callers arriving during a commit share the next one."""
    per_thread = 100
    commits = 0
    errors: list[BaseException] = []
    results: list[tuple[int, int, AppendResult]] = []
    with opened(tmp_path / "events.db") as engine:

        def before_commit() -> None:
            nonlocal commits
            commits += 1

        engine.writer.before_commit = before_commit
        outside = sqlite3.connect(
            tmp_path / "events.db", isolation_level=None, check_same_thread=False
        )

        def append(thread: int) -> None:
            try:
                for n in range(per_thread):
                    expected = n - 1 if n else eskit.NO_STREAM
                    (result,) = engine.append_many(one(f"t-{thread}", n, expected))
                    seen = outside_count(result.last_position)
                    assert seen == 1, f"answered before COMMIT: {result}"
                    results.append((thread, n, result))
            except BaseException as error:
                errors.append(error)

        lock = threading.Lock()

        def outside_count(position: int) -> int:
            with lock:
                found: int = outside.execute(
                    "SELECT count(*) FROM events WHERE position = ?", (position,)
                ).fetchone()[0]
            return found

        run_threads(16, append)
        outside.close()
        assert errors == []
        positions = sorted(r.last_position for _, _, r in results)
        assert positions == list(range(1, 16 * per_thread + 1))
        for _, n, result in results:
            assert result.last_version == n
        assert engine.last_position() == 16 * per_thread
    print(f"16 threads x {per_thread} appends: {commits} commits")
    assert 1 < commits < 16 * per_thread, "no append shared a commit"


def test_an_uncontended_append_runs_in_the_callers_thread(tmp_path: Path) -> None:
    """No hand-off: every statement on the write connection runs in the thread that called
    (the idle checkpoint is kept out of the way; it runs in the group's committer thread)."""
    with opened(tmp_path / "events.db", idle_checkpoint=3600) as engine:
        threads: set[int] = set()
        engine.writer.conn.set_trace_callback(lambda _: threads.add(threading.get_ident()))
        for n in range(5):
            engine.append_many(one("solo", n))
        engine.set_metadata("solo", eskit.StreamMetadata(max_count=3))
        engine.write(lambda conn: conn.execute("SELECT 1").fetchone())
        engine.writer.conn.set_trace_callback(None)
        assert threads == {threading.get_ident()}
        assert engine.stream_version("solo") == 4


def test_reads_run_in_the_callers_thread_on_a_bounded_pool(tmp_path: Path) -> None:
    """Each read checks a connection out in the caller's thread; at most ``readers``
    connections exist, and a caller that finds them all busy waits for one."""
    with opened(tmp_path / "events.db", readers=2) as engine:
        engine.append_many(one("r", 0))
        inside = 0
        most = 0
        connections: set[int] = set()
        lock = threading.Lock()
        ran_in: dict[int, int] = {}

        def read(conn: sqlite3.Connection) -> int:
            nonlocal inside, most
            with lock:
                inside += 1
                most = max(most, inside)
                connections.add(id(conn))
            try:
                found: int = conn.execute("SELECT max(position) FROM events").fetchone()[0]
                threading.Event().wait(0.01)  # hold the connection: others must wait
                return found
            finally:
                with lock:
                    inside -= 1

        def reader(i: int) -> None:
            ran_in[i] = threading.get_ident()
            for _ in range(5):
                assert engine.read(read) == 1
            assert engine.read_stream_page("r", None, False, 10)[0].data == {"n": 0}

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        assert {i: t.ident for i, t in enumerate(threads)} == ran_in
        assert most == 2
        assert len(connections) == 2


@pytest.mark.anyio
async def test_async_appends_from_a_loop_are_grouped(tmp_path: Path) -> None:
    """Appends from an event loop are queued without blocking it and share commits."""
    commits = 0
    with opened(tmp_path / "events.db") as engine:

        def before_commit() -> None:
            nonlocal commits
            commits += 1

        engine.writer.before_commit = before_commit
        async with asyncio.timeout(TIMEOUT):
            results = await asyncio.gather(
                *(engine.append_many_async(one(f"a-{i}", 0)) for i in range(200))
            )
        positions = sorted(r.last_position for (r,) in results)
        assert positions == list(range(1, 201))
    print(f"200 concurrent async appends: {commits} commits")
    assert commits < 200


def test_close_with_appends_in_flight_loses_no_answered_append(tmp_path: Path) -> None:
    """Appends racing a close either commit (and are answered) or raise StoreClosed;
    every one answered is in the file afterwards."""
    path = tmp_path / "events.db"
    engine = SQLiteEngine(path, clock=now)
    engine.open()
    answered: list[tuple[str, int]] = []
    refused: list[BaseException] = []
    started = threading.Barrier(9)

    def append(thread: int) -> None:
        started.wait(TIMEOUT)
        for n in range(10_000):
            try:
                (result,) = engine.append_many(
                    one(f"c-{thread}", n, n - 1 if n else eskit.NO_STREAM)
                )
            except StoreClosed as error:
                refused.append(error)
                return
            answered.append((f"c-{thread}", result.last_version))

    threads = [threading.Thread(target=append, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    started.wait(TIMEOUT)
    while len(answered) < 200:
        threading.Event().wait(0.001)
    engine.close()
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    assert len(refused) == 8  # every thread was stopped by the close, none hung
    assert not Path(f"{path}-wal").exists(), "the writer closed last and removed the WAL"
    with opened(path) as again:
        for stream, version in answered:
            assert (again.stream_version(stream) or 0) >= version
        total = sum((again.stream_version(f"c-{i}") or -1) + 1 for i in range(8))
        assert total == len(answered) == again.last_position()


def test_inline_hooks_start_between_two_transactions(tmp_path: Path) -> None:
    """``add_inline`` runs its first step and installs the hook in one transaction: every
    append committed after it is seen by the hook, none before is."""
    with opened(tmp_path / "events.db") as engine:
        seen: list[int] = []
        engine.append_many(one("before", 0))
        caught_up: list[int] = []

        def first(conn: sqlite3.Connection) -> None:
            caught_up.append(conn.execute("SELECT count(*) FROM events").fetchone()[0])

        def hook(conn: sqlite3.Connection, events: list[eskit.RecordedEvent]) -> None:
            seen.extend(e.position for e in events)

        def append(i: int) -> None:
            for n in range(20):
                engine.append_many(one(f"h-{i}-{n}", n))

        adder = threading.Thread(target=engine.add_inline, args=(hook, first))
        appenders = [threading.Thread(target=append, args=(i,)) for i in range(4)]
        for thread in [*appenders[:2], adder, *appenders[2:]]:
            thread.start()
        for thread in [adder, *appenders]:
            thread.join(TIMEOUT)
        (count,) = caught_up
        assert seen == list(range(count + 1, engine.last_position() + 1))
        engine.remove_inline(hook)
        engine.append_many(one("after", 0))
        assert seen[-1] < engine.last_position()


def test_a_missing_file_is_not_created_when_readonly(tmp_path: Path) -> None:
    engine = SQLiteEngine(tmp_path / "none.db", clock=now, readonly=True)
    with pytest.raises(eskit.StoreNotFound):
        engine.open()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(eskit.StoreError, match="read-only"):
        engine.append_many(one("x", 0))


def test_eskit_sync_appends_and_reads_in_the_callers_thread(tmp_path: Path) -> None:
    """The blocking face on SQLite: no hand-off, every statement of an uncontended append
    and of a read runs in the thread that called."""
    url = f"sqlite:///{tmp_path / 'events.db'}?synchronous=FULL"
    with eskit.sync.open_store(url, idle_checkpoint=3600) as store:
        engine = store.engine
        assert isinstance(engine, SQLiteEngine)
        threads: set[int] = set()
        engine.writer.conn.set_trace_callback(lambda _: threads.add(threading.get_ident()))
        store.append("s", [eskit.NewEvent("Happened", {})])
        engine.writer.conn.set_trace_callback(None)
        readers: list[int] = []
        engine.read(lambda conn: readers.append(threading.get_ident()))
        assert [e.data for e in store.read_stream("s")] == [{}]
        assert threads == {threading.get_ident()}
        assert readers == [threading.get_ident()]
        assert [t.name for t in threading.enumerate() if "loop" in t.name] == []


@pytest.mark.anyio
async def test_short_reads_on_the_loop_when_a_reader_is_free(tmp_path: Path) -> None:
    """``short_reads_on_loop`` (measured by benchmarks/loop.py, off by default): a short
    read runs in the loop's thread, yields to the loop once, and falls back to a worker
    thread rather than wait when every reader is busy. Other reads always hand off."""
    with opened(tmp_path / "events.db", readers=1) as engine:
        engine.append_many(one("s", 0))
        engine.short_reads_on_loop = True
        ran_in: list[int] = []
        traced = threading.Event()

        def trace(reader_conn: sqlite3.Connection) -> None:
            reader_conn.set_trace_callback(lambda _: ran_in.append(threading.get_ident()))

        engine.read(trace)  # the pool's one reader now reports where it runs
        assert await engine.call_async(engine.stream_version, "s") == 0
        assert set(ran_in) == {threading.get_ident()}
        ran_in.clear()
        await engine.call_async(engine.read_all_page, 0, 10, None, None)  # not short
        assert threading.get_ident() not in ran_in

        ran_in.clear()
        release = threading.Event()

        def hold(_: sqlite3.Connection) -> None:  # keeps the pool's only reader busy
            traced.set()
            release.wait(TIMEOUT)

        holder = threading.Thread(target=engine.read, args=(hold,))
        holder.start()
        assert await asyncio.to_thread(traced.wait, TIMEOUT)
        reading = asyncio.ensure_future(engine.call_async(engine.stream_version, "s"))
        await asyncio.sleep(0.05)
        assert not reading.done()  # the loop did not wait: a worker thread does
        release.set()
        assert await reading == 0
        holder.join(TIMEOUT)
        assert threading.get_ident() not in ran_in


def test_events_after_reads_the_events_in_order_only_for_a_stream_that_never_hid_one(
    tmp_path: Path,
) -> None:
    """``events_after`` reads a stream's events and its row in ``streams`` in one
    statement: events in version order, None once the stream has a row (read rules, a
    delete) or more than ``count`` follow, ``StreamDeleted`` once tombstoned."""
    with opened(tmp_path / "s.db") as engine:
        for n in range(5):
            engine.append_many(one("plain-1", n))
        assert engine.events_after("plain-1", 4, 10) == []
        assert engine.events_after("missing-1", -1, 10) == []
        after = engine.events_after("plain-1", 1, 3)
        assert after is not None
        assert [(e.version, e.data["n"]) for e in after] == [(2, 2), (3, 3), (4, 4)]
        assert engine.events_after("plain-1", 1, 2) is None
        engine.append_many(one("ruled-1", 0))
        engine.set_metadata("ruled-1", eskit.StreamMetadata(max_count=10))
        assert engine.events_after("ruled-1", 0, 10) is None
        assert engine.events_after("ruled-1", -1, 10) is None
        engine.append_many(one("gone-1", 0))
        engine.delete("gone-1", eskit.ANY, hard=True)
        with pytest.raises(eskit.StreamDeleted):
            engine.events_after("gone-1", 0, 10)


@pytest.mark.anyio
async def test_a_small_append_from_an_idle_loop_commits_on_the_loop(tmp_path: Path) -> None:
    """Up to ``LOOP_EVENTS`` events, from a loop with nothing else to run, commit on the loop
    (no hand-off); a larger append, or any with ``loop_commits`` off, in the committer
    thread. Either way the caller is answered after COMMIT."""
    committed_in: list[int] = []
    with opened(tmp_path / "events.db") as engine:
        engine.writer.before_commit = lambda: committed_in.append(threading.get_ident())
        many = [eskit.NewEvent("Happened", {"n": n}) for n in range(LOOP_EVENTS + 1)]
        big = [rules.prepare_append("big", many, eskit.ANY, rules.DEFAULT_MAX_EVENT_SIZE)]
        async with asyncio.timeout(TIMEOUT):
            (small,) = await engine.append_many_async(one("small", 0))
            await engine.append_many_async(big)
            engine.loop_commits = False
            await engine.append_many_async(one("off", 0))
        assert small.last_position == 1
        assert engine.stream_version("off") == 0
    here = threading.get_ident()
    assert committed_in[0] == here
    assert committed_in[1] != here
    assert committed_in[2] != here


@pytest.mark.anyio
async def test_appends_with_an_inline_projection_never_commit_on_the_loop(tmp_path: Path) -> None:
    """An inline projection's handlers run in the committing thread: never the loop's."""
    ran_in: list[int] = []
    with opened(tmp_path / "events.db") as engine:
        engine.writer.inline.append(lambda conn, events: ran_in.append(threading.get_ident()))
        async with asyncio.timeout(TIMEOUT):
            for n in range(3):
                await engine.append_many_async(one("inline", n))
    assert len(ran_in) == 3
    assert threading.get_ident() not in ran_in
