"""What only the SQLite backend promises, on real files (the shared contract lives in the
conformance suite): group commit that isolates a failing append and fails a whole group on a
failed COMMIT, an event loop that never waits on SQLite, other processes reading and writing
the same file, positions never reused, WAL checkpoints, durability settings and URLs.

The crash-safety loop is in test_sqlite_crash.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import sqlite3
import statistics
import struct
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

import eskit
from eskit.store.audit import verify
from eskit.store.sqlite import SQLiteStore

T = TypeVar("T")

TIMEOUT = 30.0
"""Upper bound for any awaited step, so a broken backend fails a test instead of hanging."""
CHILD = Path(__file__).with_name("sqlite_child.py")
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
"""The backend's PRAGMA journal_size_limit."""
SMALL_WAL = 4 * 1024 * 1024 + 1000 * 24 + 32
"""About the WAL SQLite keeps on its own (1000-page auto-checkpoint): what "small" means."""


def event(type_: str = "Happened", **data: Any) -> eskit.NewEvent:
    return eskit.NewEvent(type_, data)


async def collect(events: AsyncIterator[T]) -> list[T]:
    return [e async for e in events]


def writer_of(store: SQLiteStore) -> Any:
    """The store's writer (holds the ``before_commit`` fault-injection hook)."""
    return store.engine.writer


def queued(store: SQLiteStore) -> int:
    """How many requests wait for the next group commit."""
    group = store.engine._group
    assert group is not None, "the store is not open for writing"
    return len(group._pending)


async def wait_until_queued(store: SQLiteStore, count: int) -> None:
    """Let the event loop run until ``count`` operations wait for the writer."""
    while queued(store) < count:  # noqa: ASYNC110 - a thread's queue has no event to await
        await asyncio.sleep(0)  # yields to the appending tasks; no timing involved


def integrity(path: Path) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute("PRAGMA integrity_check").fetchall()


def wal_size(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


def wal_frames(path: Path) -> int:
    """Frames in use in the WAL (mxFrame of the wal-index header in the -shm file, native
    byte order; https://sqlite.org/walformat.html). Reading it changes nothing."""
    header = Path(f"{path}-shm").read_bytes()[:48]
    frames: int = struct.unpack_from("=I", header, 16)[0]
    return frames


# -- group commit ---------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("grouping", ["one-group", "natural"])
async def test_wrong_expected_version_fails_alone_in_its_group(
    tmp_path: Path, grouping: str
) -> None:
    """T2.2: 200 concurrent appends, 20 with a wrong expected version. "one-group" holds the
    writer until all 200 are queued, so they provably share one transaction; "natural" lets
    the writer group them as they come."""
    async with SQLiteStore(tmp_path / "events.db", max_batch=256) as store:
        streams = [f"iso-{i}" for i in range(200)]
        await asyncio.gather(*(store.append(s, [event(n=0)], eskit.NO_STREAM) for s in streams))
        head = await store.last_position()
        wrong = set(range(5, 200, 10))
        sizes = [1 + i % 4 for i in range(200)]

        commits = 0
        entered, gate = threading.Event(), threading.Event()

        def before_commit() -> None:  # runs in the thread leading the group
            nonlocal commits
            commits += 1
            if grouping == "one-group" and commits == 1:
                entered.set()
                gate.wait(TIMEOUT)

        writer_of(store).before_commit = before_commit
        store.engine.loop_commits = False  # the gate holds the committer thread, not the loop

        def attempt(i: int) -> Awaitable[eskit.AppendResult]:
            batch = [event(n=1 + k, i=i) for k in range(sizes[i])]
            return store.append(streams[i], batch, 7 if i in wrong else 0)

        try:
            async with asyncio.timeout(TIMEOUT):
                if grouping == "one-group":
                    opener = asyncio.ensure_future(store.append("iso-opener", [event()]))
                    assert await asyncio.to_thread(entered.wait, TIMEOUT)
                    outcome = asyncio.gather(
                        *(attempt(i) for i in range(200)), return_exceptions=True
                    )
                    await wait_until_queued(store, 200)
                    gate.set()
                    await opener
                else:
                    outcome = asyncio.gather(
                        *(attempt(i) for i in range(200)), return_exceptions=True
                    )
                results = await outcome
        finally:
            gate.set()  # never leave the writer waiting

        if grouping == "one-group":
            assert commits == 2, "the 200 appends should have been one transaction"
        else:
            assert commits <= 50, f"200 concurrent appends took {commits} commits: no grouping"

        failed = {i for i, r in enumerate(results) if isinstance(r, BaseException)}
        assert failed == wrong, [results[i] for i in sorted(failed - wrong)]
        for i in wrong:
            error = results[i]
            assert isinstance(error, eskit.WrongExpectedVersion)
            assert (error.stream, error.expected, error.actual) == (streams[i], 7, 0)
            assert await store.stream_version(streams[i]) == 0

        positions: list[int] = []
        for i, result in enumerate(results):
            if i in wrong:
                continue
            assert isinstance(result, eskit.AppendResult)
            assert (result.last_version, result.count) == (sizes[i], sizes[i])
            own = list(range(result.first_position, result.last_position + 1))
            written = await collect(store.read_stream(streams[i], from_version=1))
            assert [(e.version, e.position, e.data["n"]) for e in written] == [
                (1 + k, p, 1 + k) for k, p in enumerate(own)
            ]
            positions.extend(own)
        assert len(positions) == len(set(positions)) == sum(sizes) - sum(sizes[i] for i in wrong)
        new = await collect(store.read_all(after=head))
        assert sorted(positions) == [e.position for e in new if e.stream != "iso-opener"]


@pytest.mark.anyio
async def test_append_many_in_a_group_is_checked_whole_against_the_group(tmp_path: Path) -> None:
    """Appends to several streams share a transaction with single appends: each is checked
    against the heads as earlier requests of the group left them, and a refused one leaves
    no row and no moved head behind for the requests after it."""
    async with SQLiteStore(tmp_path / "events.db") as store:
        await store.append("gone-1", [event()])
        await store.tombstone_stream("gone-1")
        retried = [eskit.NewEvent("R", {}, id=uuid.uuid4()), eskit.NewEvent("R", {})]
        entered, gate = threading.Event(), threading.Event()
        commits = 0

        def before_commit() -> None:  # the first group waits until all the rest is queued
            nonlocal commits
            commits += 1
            if commits == 1:
                entered.set()
                gate.wait(TIMEOUT)

        writer_of(store).before_commit = before_commit
        store.engine.loop_commits = False  # the gate holds the committer thread, not the loop
        calls: list[Awaitable[Any]] = [
            store.append("g-1", [event(i=0)], eskit.NO_STREAM),
            store.append_many(  # sees g-1 as the append before left it
                [
                    eskit.Append("g-2", [event(i=1)], eskit.NO_STREAM),
                    eskit.Append("g-1", [event(i=2)], 0),
                ]
            ),
            store.append_many(  # refused by its last part: g-3 must stay untouched
                [
                    eskit.Append("g-3", [event(i=3)], eskit.NO_STREAM),
                    eskit.Append("g-1", [event(i=4)], 0),
                ]
            ),
            store.append("g-3", [event(i=5)], eskit.NO_STREAM),
            store.append_many(
                [eskit.Append("g-4", retried[:1]), eskit.Append("gone-1", [event(i=6)])]
            ),
            store.append_many([eskit.Append("g-4", retried[:1]), eskit.Append("g-5", retried[1:])]),
            store.append_many(
                [eskit.Append("g-6", [event(i=7)]), eskit.Append("g-4", retried[:1])]
            ),
        ]
        try:
            async with asyncio.timeout(TIMEOUT):
                opener = asyncio.ensure_future(store.append("opener", [event()]))
                assert await asyncio.to_thread(entered.wait, TIMEOUT)
                outcome = asyncio.gather(*calls, return_exceptions=True)
                await wait_until_queued(store, len(calls))
                gate.set()
                await opener
                results = await outcome
        finally:
            gate.set()  # never leave the writer waiting
        assert commits == 2, "the requests should have shared one transaction"

        head = 2  # gone-1's event and the opener's come before the group
        ok = eskit.AppendResult
        assert results[0] == ok(0, head + 1)
        assert results[1] == [ok(0, head + 2), ok(1, head + 3)]
        assert isinstance(results[2], eskit.WrongExpectedVersion)
        assert (results[2].stream, results[2].actual) == ("g-1", 1)
        assert results[3] == ok(0, head + 4)
        assert isinstance(results[4], eskit.StreamDeleted)
        assert results[5] == [ok(0, head + 5), ok(0, head + 6)]
        assert results[6] == [ok(0, head + 7), ok(0, head + 5)]  # g-4 is a retry: as before
        log = await collect(store.read_all(after=head))
        assert [(e.position, e.stream, e.version) for e in log] == [
            (head + 1, "g-1", 0),
            (head + 2, "g-2", 0),
            (head + 3, "g-1", 1),
            (head + 4, "g-3", 0),
            (head + 5, "g-4", 0),
            (head + 6, "g-5", 0),
            (head + 7, "g-6", 0),
        ]
        assert [e.data for e in log if "i" in e.data] == [{"i": i} for i in (0, 1, 2, 5, 7)]
    assert integrity(tmp_path / "events.db") == [("ok",)]


@pytest.mark.anyio
async def test_appends_after_a_delete_in_the_same_group_see_what_it_changed(
    tmp_path: Path,
) -> None:
    """Deletes are operations run inside the group's transaction: the appends queued after
    one are planned against the stream as it left it (soft-deleted: revived after its last
    version; tombstoned: refused), in one transaction."""
    async with SQLiteStore(tmp_path / "events.db") as store:
        entered, gate = threading.Event(), threading.Event()
        commits = 0

        def before_commit() -> None:  # the first group waits until all the rest is queued
            nonlocal commits
            commits += 1
            if commits == 1:
                entered.set()
                gate.wait(TIMEOUT)

        writer_of(store).before_commit = before_commit
        store.engine.loop_commits = False  # the gate holds the committer thread, not the loop
        calls: list[Awaitable[Any]] = [
            store.append("d-1", [event(i=0)], eskit.NO_STREAM),
            store.append("d-2", [event(i=1)], eskit.NO_STREAM),
            store.delete_stream("d-1", 0),
            store.tombstone_stream("d-2", 0),
            store.append("d-1", [event(i=2)], eskit.NO_STREAM),  # soft-deleted: counts as new
            store.append("d-2", [event(i=3)]),
            store.append("d-1", [event(i=4)], 1),
        ]
        try:
            async with asyncio.timeout(TIMEOUT):
                opener = asyncio.ensure_future(store.append("opener", [event()]))
                assert await asyncio.to_thread(entered.wait, TIMEOUT)
                outcome = asyncio.gather(*calls, return_exceptions=True)
                await wait_until_queued(store, len(calls))
                gate.set()
                await opener
                results = await outcome
        finally:
            gate.set()  # never leave the writer waiting
        assert commits == 2, "the requests should have shared one transaction"

        ok = eskit.AppendResult
        assert results[:4] == [ok(0, 2), ok(0, 3), None, None]
        assert results[4] == ok(1, 4)
        assert isinstance(results[5], eskit.StreamDeleted)
        assert results[6] == ok(2, 5)
        assert [(e.version, e.data) for e in await collect(store.read_stream("d-1"))] == [
            (1, {"i": 2}),
            (2, {"i": 4}),
        ]
        assert [e.position for e in await collect(store.read_all())] == [1, 2, 3, 4, 5]
        report = await verify(store)
        assert report.ok, report.problems
    assert integrity(tmp_path / "events.db") == [("ok",)]


@pytest.mark.anyio
async def test_failed_commit_fails_every_append_of_the_group(tmp_path: Path) -> None:
    """T2.3: COMMIT fails -> every append waiting in that group raises StoreError, readers
    see nothing of it, and the store works again afterwards."""
    async with SQLiteStore(tmp_path / "events.db") as store:
        await store.append("fail-0", [event(n=0)], eskit.NO_STREAM)
        commits = 0
        entered, gate = threading.Event(), threading.Event()

        def before_commit() -> None:  # group 1 waits at the gate, group 2 fails
            nonlocal commits
            commits += 1
            if commits == 1:
                entered.set()
                gate.wait(TIMEOUT)
            elif commits == 2:
                raise OSError("injected: disk full")

        writer_of(store).before_commit = before_commit
        store.engine.loop_commits = False  # the gate holds the committer thread, not the loop
        attempts = [("fail-0", 0)] + [(f"fail-{i}", eskit.NO_STREAM) for i in range(1, 30)]

        def attempt(stream: str, expected: eskit.ExpectedVersion) -> Awaitable[Any]:
            return store.append(stream, [event(n=1), event(n=2)], expected)

        try:
            async with asyncio.timeout(TIMEOUT):
                opener = asyncio.ensure_future(store.append("opener", [event()]))
                assert await asyncio.to_thread(entered.wait, TIMEOUT)
                outcome = asyncio.gather(*(attempt(*a) for a in attempts), return_exceptions=True)
                await wait_until_queued(store, len(attempts))
                gate.set()
                opened = await opener
                results = await outcome
        finally:
            gate.set()  # never leave the writer waiting
        assert commits == 2

        for result in results:
            assert isinstance(result, eskit.StoreError), result
            assert not isinstance(result, eskit.WrongExpectedVersion)
            assert "injected: disk full" in str(result)
        assert await store.last_position() == opened.last_position
        assert await collect(store.read_all(after=opened.last_position)) == []
        assert await store.stream_version("fail-0") == 0
        for stream, _ in attempts[1:]:
            assert await store.stream_version(stream) is None
            assert await collect(store.read_stream(stream)) == []

        writer_of(store).before_commit = None
        async with asyncio.timeout(TIMEOUT):
            again = await asyncio.gather(*(attempt(*a) for a in attempts))
        assert all(r.count == 2 for r in again)
        assert min(r.first_position for r in again) > opened.last_position
        assert await store.stream_version("fail-0") == 2
        new = await collect(store.read_all(after=opened.last_position))
        assert len(new) == 2 * len(attempts)
    assert integrity(tmp_path / "events.db") == [("ok",)]


# -- the event loop -------------------------------------------------------------------------


@pytest.mark.parametrize("loop_commits", [False, True])
def test_the_event_loop_runs_sqlite_only_to_commit_a_lone_append(
    tmp_path: Path, loop_commits: bool
) -> None:
    """The async face runs no read of SQLite in the event loop's thread, and no write but
    the commit of a lone append on an idle loop (``loop_commits``; without it, nothing at
    all): 100 tasks appending and reading through every kind of read, then the reads and a
    lone append alone (a profile hook on the loop's thread records each C call into
    ``sqlite3``, and whether a commit on the loop made it). How long the loop then waits
    for its turn is measured, not asserted: ``benchmarks/loop.py`` prints the heartbeat."""
    calls: list[tuple[str, bool]] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "c_call" and isinstance(
            getattr(arg, "__self__", None), sqlite3.Connection | sqlite3.Cursor
        ):
            calls.append((arg.__qualname__, committing_on_the_loop(frame)))

    async def appender(store: SQLiteStore, task: int) -> None:
        for n in range(20):
            await store.append(f"loop-{task}", [event(n=n)], n - 1 if n else eskit.NO_STREAM)
            await store.stream_version(f"loop-{task}")
            await collect(store.read_stream(f"loop-{task}", backwards=True, limit=2))

    async def main() -> None:
        async with SQLiteStore(tmp_path / "events.db") as store:
            store.engine.loop_commits = loop_commits
            sys.setprofile(profile)  # this thread only: the loop's
            try:
                await asyncio.gather(*(appender(store, t) for t in range(100)))
                await store.save_snapshot(eskit.Snapshot("loop-1", 19, 1, {"n": 19}))
                await store.read_from_snapshot("loop-1", 1)
                await store.list_streams(limit=5)
                await collect(store.read_all(after=1_000))
                await store.last_position()
                await store.append("alone", [event()])
            finally:
                sys.setprofile(None)
            assert await store.last_position() == 2_001

    asyncio.run(main())
    if not loop_commits:
        assert calls == []
        return
    assert calls  # the lone append, at least, committed on the loop
    assert all(in_commit for _, in_commit in calls), calls


def committing_on_the_loop(frame: Any) -> bool:
    """Whether ``frame`` runs inside a commit made on the event loop (``GroupCommit``)."""
    while frame is not None:
        if frame.f_code.co_name == "_commit_here":
            return True
        frame = frame.f_back
    return False


# -- other processes ------------------------------------------------------------------------


async def spawn(*args: str, stdin: bool = False) -> asyncio.subprocess.Process:
    """Start sqlite_child.py; its stderr goes to stdout so a traceback shows up in a test."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        *args,
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def message(child: asyncio.subprocess.Process) -> dict[str, Any]:
    """The child's next JSON line; anything else (a traceback, EOF) fails the test."""
    assert child.stdout is not None
    line = await child.stdout.readline()
    try:
        decoded: dict[str, Any] = json.loads(line)
    except ValueError:
        rest = await child.stdout.read()
        code = await child.wait()
        raise AssertionError(f"child exited {code}: {(line + rest).decode()}") from None
    return decoded


async def stop(child: asyncio.subprocess.Process) -> None:
    if child.returncode is None:
        child.kill()
    await child.wait()


@pytest.mark.anyio
async def test_subscription_in_this_process_wakes_within_100_ms(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "events.db") as store:
        received: asyncio.Queue[tuple[float, eskit.RecordedEvent]] = asyncio.Queue()

        async def follow() -> None:
            async for e in store.subscribe():
                received.put_nowait((time.perf_counter(), e))

        follower = asyncio.create_task(follow())
        latencies = []
        try:
            async with asyncio.timeout(TIMEOUT):
                for n in range(20):
                    result = await store.append("live", [event(n=n)])
                    returned = time.perf_counter()
                    arrived, seen = await received.get()
                    assert (seen.position, seen.data) == (result.last_position, {"n": n})
                    latencies.append(arrived - returned)
                    await asyncio.sleep(random.uniform(0, 0.05))  # vary the phase, not sync
        finally:
            follower.cancel()
    print(f"same-process subscription latency: max {max(latencies) * 1e3:.2f} ms")
    assert max(latencies) < 0.1, latencies


@pytest.mark.anyio
async def test_another_process_sees_new_events_within_1_s(tmp_path: Path) -> None:
    """A second process subscribed to the same file gets each event within a second (it
    polls); the latency is measured in the child from a wall-clock time taken before the
    append started, so it also counts the append itself."""
    path = tmp_path / "events.db"
    count = 10
    async with SQLiteStore(path) as store:
        await store.append("before", [event()])
        child = await spawn("subscribe", str(path), str(count))
        try:
            async with asyncio.timeout(TIMEOUT):
                ready = await message(child)
                assert ready == {"ready": 1}
                child_latencies, parent_latencies = [], []
                for i in range(count):
                    await asyncio.sleep(random.uniform(0, 0.25))  # vary the poll phase
                    result = await store.append("xproc", [event(i=i, t=time.time())])
                    returned = time.perf_counter()
                    seen = await message(child)
                    parent_latencies.append(time.perf_counter() - returned)
                    assert (seen["i"], seen["position"]) == (i, result.last_position)
                    child_latencies.append(seen["latency"])
                assert await child.wait() == 0
        finally:
            await stop(child)
    figures = (
        f"cross-process latency (append start -> child has it): max {max(child_latencies):.3f} s,"
        f" mean {statistics.mean(child_latencies):.3f} s; append return -> ack read by parent:"
        f" max {max(parent_latencies):.3f} s"
    )
    print(figures)
    assert max(child_latencies) < 1.0, figures


@pytest.mark.anyio
async def test_two_processes_writing_one_file_stay_consistent(tmp_path: Path) -> None:
    """Two processes append 500 events each to one shared stream (retrying on
    WrongExpectedVersion) and 500 to their own streams, at the same time."""
    path = tmp_path / "events.db"
    count = 500
    children = [await spawn("write", str(path), name, str(count), stdin=True) for name in "ab"]
    acks: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(TIMEOUT * 4):
            for name, child in zip("ab", children, strict=True):
                assert await message(child) == {"ready": name}
            for child in children:  # both start together
                assert child.stdin is not None
                child.stdin.write(b"go\n")
                await child.stdin.drain()

            async def drain(child: asyncio.subprocess.Process) -> dict[str, Any]:
                while "done" not in (said := await message(child)):
                    acks.append(said)
                return said

            done = await asyncio.gather(*(drain(c) for c in children))
            assert [await c.wait() for c in children] == [0, 0]
    finally:
        for child in children:
            await stop(child)
    assert len(acks) == 4 * count

    assert integrity(path) == [("ok",)]
    async with asyncio.timeout(TIMEOUT), SQLiteStore(path) as store:
        log = await collect(store.read_all())
        shared = await collect(store.read_stream("shared-x"))
        own = {n: await collect(store.read_stream(f"own-{n}")) for n in "ab"}
    positions = [e.position for e in log]
    assert len(log) == 4 * count
    assert positions == sorted(set(positions)), "positions must be unique and increasing"
    assert [e.version for e in shared] == list(range(2 * count))
    assert [e.position for e in shared] == sorted(e.position for e in shared)
    turns = sum(x.data["writer"] != y.data["writer"] for x, y in itertools.pairwise(shared))
    retries = [d["retries"] for d in done]
    print(f"two writers: {turns} hand-overs in the shared stream, retries {retries}")
    assert turns > 50, "the two processes did not take turns writing the shared stream"
    for name in "ab":
        assert [e.data["i"] for e in shared if e.data["writer"] == name] == list(range(count))
        assert [(e.version, e.data["i"]) for e in own[name]] == [(i, i) for i in range(count)]
    where = {(e.stream, e.version): e.position for e in log}
    for a in acks:
        assert where[a["stream"], a["last_version"]] == a["last_position"], a


# -- positions ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_positions_are_never_reused_after_the_tail_is_purged(tmp_path: Path) -> None:
    """T2.6: AUTOINCREMENT, not rowid reuse: a subscriber at checkpoint 3 must not miss the
    next event because it got position 2 or 3 again."""
    path = tmp_path / "events.db"
    async with asyncio.timeout(TIMEOUT), SQLiteStore(path) as store:
        first = await store.append("purge-1", [event(n=n) for n in range(3)])
        assert first.last_position == 3
        with contextlib.closing(sqlite3.connect(path)) as conn, conn:  # commits, closes
            conn.execute(  # the audited removal path: recorded first, then deleted
                "INSERT INTO removals (position, stream, version, reason, removed_at, removed_by)"
                " SELECT position, stream, version, 'purge the tail', 0, 'test' FROM events"
                " WHERE position > 1"
            )
            conn.execute("DELETE FROM events WHERE position > 1")
        assert await store.last_position() == 3  # the newest given: it never moves back
        again = await store.append("purge-2", [event(n=9)])
        assert again.last_position == 4
        assert [e.position for e in await collect(store.read_all())] == [1, 4]
    async with asyncio.timeout(TIMEOUT), SQLiteStore(path) as store:  # and after reopening
        assert (await store.append("purge-3", [event()])).last_position == 5


# -- WAL and durability ---------------------------------------------------------------------


async def writer_pragma(store: SQLiteStore, name: str) -> Any:
    """A PRAGMA as the store's write connection sees it (synchronous is per connection)."""
    return await store.write_transaction(lambda conn: conn.execute(f"PRAGMA {name}").fetchone()[0])


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("query", "expected"), [("", 2), ("?synchronous=NORMAL", 1), ("?synchronous=full", 2)]
)
async def test_wal_mode_and_synchronous_setting(tmp_path: Path, query: str, expected: int) -> None:
    path = tmp_path / "events.db"
    async with asyncio.timeout(TIMEOUT), eskit.open_store(f"sqlite:///{path}{query}") as store:
        assert isinstance(store, SQLiteStore)
        await store.append("s", [event()])
        assert await writer_pragma(store, "synchronous") == expected  # 2 FULL, 1 NORMAL
        assert await writer_pragma(store, "journal_mode") == "wal"
        assert await writer_pragma(store, "journal_size_limit") == JOURNAL_SIZE_LIMIT
    with contextlib.closing(sqlite3.connect(path)) as conn:  # WAL is a property of the file
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.anyio
async def test_wal_is_bounded_under_read_tasks_and_reset_when_idle(tmp_path: Path) -> None:
    """~20,000 events while 4 tasks keep reading the whole log: the WAL stays bounded, and
    once the writer has idled past ``idle_checkpoint`` the WAL is reset: the next commit
    starts at its beginning."""
    path = tmp_path / "events.db"
    async with eskit.open_store(f"sqlite:///{path}", idle_checkpoint=0.1) as store:
        assert isinstance(store, SQLiteStore)
        writing = True
        largest = 0
        reads = [0] * 4

        async def reader(n: int) -> None:
            while writing:
                async for _ in store.read_all():
                    reads[n] += 1

        async def appender(task: int) -> None:
            nonlocal largest
            for n in range(200):
                batch = (
                    [event(n=n, pad="x" * 100)] if n % 4 else [event(n=n, k=k) for k in range(5)]
                )
                await store.append(f"wal-{task}", batch)
                largest = max(largest, wal_size(path))

        readers = [asyncio.create_task(reader(n)) for n in range(4)]
        async with asyncio.timeout(TIMEOUT * 4):
            await asyncio.gather(*(appender(t) for t in range(50)))
            writing = False
            await asyncio.gather(*readers)
        written = await store.last_position()
        assert written == 50 * (150 + 50 * 5)
        assert min(reads) > 0
        print(f"WAL during {written} events with 4 readers: at most {largest / 2**20:.1f} MiB")
        assert largest < JOURNAL_SIZE_LIMIT, f"WAL reached {largest / 2**20:.1f} MiB"

        await asyncio.sleep(0.5)  # idle for 5 x idle_checkpoint: that is what is tested
        async with asyncio.timeout(TIMEOUT):
            await store.append("after-idle", [event()])
        frames = wal_frames(path)
        assert frames < 16, f"the commit after idling went to frame {frames}: no WAL reset"


def overlapping_readers(path: Path, stop: threading.Event) -> int:
    """Read the file until ``stop`` with two connections whose read transactions overlap, so
    at every moment some reader holds a snapshot (as with a busy read side). Only a
    checkpoint that waits for the old readers to move on can then reset the WAL."""
    conns = [sqlite3.connect(path, isolation_level=None) for _ in range(2)]
    rounds = 0
    try:
        while not stop.is_set():
            old, new = conns[rounds % 2], conns[(rounds + 1) % 2]
            new.execute("BEGIN")
            new.execute("SELECT max(position) FROM events").fetchone()
            if old.in_transaction:
                old.execute("COMMIT")
            time.sleep(0.01)  # a reader thread's pace, not synchronisation
            rounds += 1
    finally:
        for conn in conns:
            conn.close()
    return rounds


@pytest.mark.anyio
async def test_wal_stays_bounded_while_readers_never_pause(tmp_path: Path) -> None:
    """T2.7: writes never pause (so the writer is never idle) and there is always a reader
    in the WAL: the WAL must still be checkpointed and stay under journal_size_limit."""
    path = tmp_path / "events.db"
    async with SQLiteStore(path) as store:
        await store.append("soak", [event()])  # the schema exists before readers start
        stop = threading.Event()
        reading = asyncio.ensure_future(asyncio.to_thread(overlapping_readers, path, stop))
        largest = 0

        async def appender(task: int) -> None:
            nonlocal largest
            for n in range(400):
                if largest >= JOURNAL_SIZE_LIMIT:
                    return  # failed already; do not fill the disk
                await store.append(f"soak-{task}", [event(n=n, pad="x" * 100)])
                largest = max(largest, wal_size(path))

        try:
            async with asyncio.timeout(TIMEOUT * 4):
                await asyncio.gather(*(appender(t) for t in range(100)))
        finally:
            stop.set()
            reads = await reading
        written = await store.last_position()
    figures = (
        f"WAL at most {largest / 2**20:.1f} MiB ({path.stat().st_size / 2**20:.1f} MiB database)"
        f" after {written} events with a reader always in the WAL ({reads} read transactions)"
    )
    print(figures)
    assert largest < JOURNAL_SIZE_LIMIT, figures


@pytest.mark.anyio
async def test_idle_checkpoint_leaves_a_small_wal_file(tmp_path: Path) -> None:
    """After a burst that grew the WAL (readers kept it from being reset), idling past
    ``idle_checkpoint`` gives the disk space back: from the first commit after the idle
    checkpoint on, the -wal file is small again."""
    path = tmp_path / "events.db"
    async with SQLiteStore(path, idle_checkpoint=0.1) as store:
        await store.append("burst", [event()])

        async def appender(task: int) -> None:
            for n in range(100):
                await store.append(f"burst-{task}", [event(n=n, pad="x" * 100)])

        stop = threading.Event()
        reading = asyncio.ensure_future(asyncio.to_thread(overlapping_readers, path, stop))
        try:
            async with asyncio.timeout(TIMEOUT * 4):
                await asyncio.gather(*(appender(t) for t in range(100)))
        finally:
            stop.set()
            await reading
        grown = wal_size(path)
        await asyncio.sleep(0.5)  # idle for 5 x idle_checkpoint: that is what is tested
        async with asyncio.timeout(TIMEOUT):
            await store.append("after-idle", [event()])
        frames, after = wal_frames(path), wal_size(path)
    figures = (
        f"-wal file {grown / 2**20:.1f} MiB after the burst, {after / 2**20:.1f} MiB after"
        f" idling and one commit (which went to WAL frame {frames})"
    )
    print(figures)
    assert after <= SMALL_WAL, figures


# -- URLs -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_relative_url_path_and_missing_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = eskit.open_store("sqlite:///data/deeper/events.db")
    assert isinstance(store, SQLiteStore)
    relative = Path("data/deeper/events.db")
    assert store.path in (relative, tmp_path / relative)  # kept relative, or made absolute
    assert not (tmp_path / "data").exists()  # nothing happens before open
    async with asyncio.timeout(TIMEOUT), store:
        await store.append("s", [event()])
    assert (tmp_path / "data" / "deeper" / "events.db").is_file()


@pytest.mark.anyio
async def test_absolute_url_path(tmp_path: Path) -> None:
    target = tmp_path / "abs dir" / "events.db"
    url = f"sqlite:///{target}"
    assert url.startswith("sqlite:////")
    async with asyncio.timeout(TIMEOUT), eskit.open_store(url) as store:
        assert isinstance(store, SQLiteStore)
        assert store.path == target
        await store.append("s", [event()])
    assert target.is_file()


def test_percent_encoded_url_paths_are_decoded(tmp_path: Path) -> None:
    store = eskit.open_store(f"sqlite:///{tmp_path}/my%20dir/events%231.db")
    assert isinstance(store, SQLiteStore)
    assert store.path == tmp_path / "my dir" / "events#1.db"


def test_options_from_url_and_keywords() -> None:
    store = eskit.open_store("sqlite:///x/events.db?synchronous=normal", idle_checkpoint=0.5)
    assert isinstance(store, SQLiteStore)
    assert store.synchronous == "NORMAL"
    assert store._idle_checkpoint == 0.5
    default = eskit.open_store("sqlite:///x/events.db")
    assert isinstance(default, SQLiteStore)
    assert default.synchronous == "FULL"


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///events.db?cache=shared",  # unknown option
        "sqlite:///events.db?synchronous=OFF",  # not a durable setting
        "sqlite://localhost/events.db",  # a host
        "sqlite://events.db",  # two slashes: "events.db" is read as a host
        "sqlite:///:memory:",  # not a file
        "sqlite://",  # no path at all
        "sqlite:///",
        "mysql://localhost/events",  # unsupported scheme
        "sqlite3:///events.db",
        "events.db",
    ],
)
def test_unusable_urls_raise_value_error(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"\S"):
        eskit.open_store(url)
    assert list(tmp_path.iterdir()) == []


def test_memory_path_rejected_by_the_constructor() -> None:
    with pytest.raises(ValueError, match="memory://"):
        SQLiteStore(":memory:")
    with pytest.raises(ValueError, match="file path"):
        SQLiteStore("")
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStore("x.db", synchronous="OFF")  # type: ignore[arg-type]
