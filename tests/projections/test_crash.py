"""Crash safety of SQL projections: a runner killed with SIGKILL at any moment (mid-batch,
mid-rebuild) leaves a read model that matches its checkpoint exactly, and the next runner
carries on from there without applying an event twice or losing one; on SQLite (read model
in the store's file) and on PostgreSQL (in the store's schema).

crash_child.py appends events while a ``ProjectionRunner`` follows the log with a counting
projection (per stream and in total). After every kill the database is checked: the live
read model equals what a count over the events table up to its checkpoint gives, and so
does a rebuild in progress up to its own position. Then the rebuild phase kills children
while they rebuild, checking that the rebuild resumes (same build, never going back) and the
live read model stays right; at the end the projection catches up and equals both a direct
count of the whole log and a fresh rebuild (``state.digest``). The same loop runs on both
backends; only the check's SQL differs (``snapshot``, ``head_of``, ``expected``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sqlite3
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
import pytest

import eskit
from eskit.projections import ProjectionRunner, state
from eskit.projections.sql import Connection, is_sqlite
from eskit.store.postgres import PostgresStore
from tests.projections.crash_child import COUNTED, STREAMS, Counter, events
from tests.projections.models import store_url

ROOT = Path(__file__).parents[2]
CHILD = "tests.projections.crash_child"
TIMEOUT = 60.0

Counts = tuple[dict[str, tuple[int, int]], tuple[int, int]]
"""(events, amount) per stream, and in total."""


class Seen(NamedTuple):
    """What the file holds after a kill: the live build and a rebuild in progress."""

    generation: int
    position: int
    head: int
    rebuild: tuple[int, int] | None  # (generation, position)


async def fill(url: str, count: int, seed: int) -> None:
    """``count`` events over the child's streams, 100 per append."""
    rng = random.Random(seed)
    async with eskit.open_store(url) as store:
        for start in range(0, count, 1_000):
            await asyncio.gather(
                *(
                    store.append(f"count-{rng.randrange(STREAMS)}", events(rng, 100))
                    for _ in range(start, min(count, start + 1_000), 100)
                )
            )


def at_once(lines: list[dict[str, Any]]) -> bool:
    return True


def following(lines: list[dict[str, Any]]) -> bool:
    return any("following" in line for line in lines)


def live(lines: list[dict[str, Any]]) -> bool:
    return any("live" in line for line in lines)


async def run_and_kill(
    url: str,
    mode: str,
    seed: int,
    delay: float,
    until: Callable[[list[dict[str, Any]]], bool],
) -> list[dict[str, Any]]:
    """Start a child; once ``until(lines printed so far)`` holds, wait ``delay`` seconds and
    SIGKILL it. Return every complete line it printed."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        CHILD,
        url,
        mode,
        str(seed),
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,  # a traceback shows up among the lines
    )
    assert child.stdout is not None
    output: list[bytes] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            ready = await child.stdout.readline()
            assert ready == b'{"ready": true}\n', ready + await child.stdout.read()
            while not until([json.loads(line) for line in output]):
                line = await child.stdout.readline()
                assert line, b"the child died on its own:\n" + b"".join(output)
                output.append(line)
            await asyncio.sleep(delay)  # the random moment of the crash is what is tested
            child.send_signal(signal.SIGKILL)
            await child.wait()
            output.extend((await child.stdout.read()).splitlines(keepends=True))
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    text = b"".join(output).decode(errors="replace")
    assert child.returncode == -signal.SIGKILL, f"the child died on its own:\n{text}"
    if output and not output[-1].endswith(b"\n"):
        output.pop()  # cut off mid-line by the kill
    try:
        return [json.loads(line) for line in output]
    except ValueError:
        raise AssertionError(f"the child wrote something else:\n{text}") from None


@contextlib.contextmanager
def snapshot(url: str) -> Iterator[Connection]:
    """A connection to the store's database that sees one moment throughout. SQLite: no
    one else writes once the child is dead. PostgreSQL: the server may still be committing
    the dead child's last COMMIT while the check reads, so the check reads in one
    REPEATABLE READ transaction (the checkpoint and the tables it compares are then of one
    instant)."""
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            yield conn
        return
    store = PostgresStore.from_url(urllib.parse.urlsplit(url))  # its settings; not opened
    with psycopg.connect(store.conninfo) as pg:
        pg.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        pg.read_only = True
        pg.execute(f'SET search_path TO "{store.schema}"')
        yield pg


def head_of(conn: Connection) -> int:
    table = "events" if is_sqlite(conn) else "eskit_events"
    return int(conn.execute(f"SELECT coalesce(max(position), 0) FROM {table}").fetchone()[0])


def expected(conn: Connection, position: int) -> Counts:
    """The counts straight from the events table, up to ``position``."""
    if is_sqlite(conn):
        query = (
            "SELECT stream, count(*), sum(json_extract(data, '$.n')) FROM events"
            " WHERE type = ? AND position <= ? GROUP BY stream"
        )
    else:
        query = (
            "SELECT stream, count(*), sum((data::jsonb ->> 'n')::int) FROM eskit_events"
            " WHERE type = %s AND position <= %s GROUP BY stream"
        )
    per_stream = {
        stream: (count, amount)
        for stream, count, amount in conn.execute(query, (COUNTED, position)).fetchall()
    }
    total = (sum(c for c, _ in per_stream.values()), sum(a for _, a in per_stream.values()))
    return per_stream, total


def read_model(conn: Connection, stream_counts: str, totals: str) -> Counts:
    per_stream = {
        stream: (count, amount)
        for stream, count, amount in conn.execute(f'SELECT * FROM "{stream_counts}"').fetchall()
    }
    rows = conn.execute(f'SELECT events, amount FROM "{totals}"').fetchall()
    return per_stream, (rows[0] if rows else (0, 0))


def assert_counts(got: Counts, want: Counts, what: str) -> None:
    """Equal, or say briefly where they differ (a few streams, and the totals)."""
    if got == want:
        return
    streams = sorted(s for s in got[0].keys() | want[0].keys() if got[0].get(s) != want[0].get(s))
    differ = {s: (got[0].get(s), want[0].get(s)) for s in streams[:5]}
    raise AssertionError(
        f"{what}: totals {got[1]} but the log counts {want[1]}; {len(streams)} streams differ,"
        f" e.g. (read model, log): {differ}"
    )


def check_database(url: str) -> Seen:
    """The live read model (through its views) matches its checkpoint exactly, and a
    rebuild in progress matches its own position."""
    with snapshot(url) as conn:
        head = head_of(conn)
        if not state.load_all(conn):
            return Seen(0, 0, head, None)  # killed before the projection was set up
        live = state.load(conn, Counter.name)
        assert live is not None
        assert live.status == state.RUNNING, live
        assert live.position <= head
        got = read_model(conn, "stream_counts", "totals")
        assert_counts(got, expected(conn, live.position), f"live build at {live.position}")
        rebuild = state.load_rebuild(conn, Counter.name)
        if rebuild is None:
            return Seen(live.generation, live.position, head, None)
        assert rebuild.generation > live.generation
        tables = [f"{table}__g{rebuild.generation}" for table in Counter.tables]
        got = read_model(conn, *tables)
        assert_counts(got, expected(conn, rebuild.position), f"rebuild at {rebuild.position}")
        return Seen(live.generation, live.position, head, (rebuild.generation, rebuild.position))


def check_progress(before: Seen, after: Seen) -> None:
    """Nothing goes back: the checkpoint, the live build, a rebuild's position."""
    assert after.generation >= before.generation
    if after.generation == before.generation:
        assert after.position >= before.position
    if before.rebuild is not None and after.rebuild is not None:
        assert after.rebuild[0] == before.rebuild[0], "the rebuild started over"
        assert after.rebuild[1] >= before.rebuild[1]


@contextlib.contextmanager
def explained(what: str) -> Iterator[None]:
    """Say which round (and seed) an assertion failed in."""
    try:
        yield
    except AssertionError as error:
        raise AssertionError(what) from error


async def kill_followers(url: str, rng: random.Random, seed: int, kills: int) -> Seen:
    """Kill children that follow the log, mostly mid-batch, checking the database each time."""
    seen = check_database(url)
    filled, catching_up = seen.head, 0
    for round_ in range(kills):
        # Short delays first (kills during the catch-up; every other child only once it has
        # committed, so there is progress), then longer ones once it has caught up (live).
        delay = rng.uniform(0.0, 0.1 if round_ < kills / 2 else 0.5)
        until = live if round_ >= kills / 2 else following if round_ % 2 == 0 else at_once
        await run_and_kill(url, "follow", rng.randrange(2**32), delay, until)
        with explained(f"follow round {round_} (seed {seed}, kill after {delay:.3f} s)"):
            now = check_database(url)
            check_progress(seen, now)
        catching_up += now.position < filled
        seen = now
    assert seen.position > 0, "the followers never committed a batch"
    print(f"{kills} followers killed, {catching_up} before catching up with {filled} events")
    return seen


async def kill_rebuilders(url: str, rng: random.Random, seed: int, kills: int) -> Seen:
    """Kill children that rebuild the projection after a few committed batches, then let
    the last one switch: the rebuild resumes each time and the live build stays right."""
    seen = check_database(url)
    live_generation, rebuilding = seen.generation, set()
    for round_ in range(kills + 1):
        batches = rng.randint(1, 8) if round_ < kills else sys.maxsize
        delay = rng.uniform(0.0, 0.05)

        def enough(lines: list[dict[str, Any]], batches: int = batches) -> bool:
            done = sum("rebuilt_to" in line for line in lines)
            return done >= batches or any("switched" in line for line in lines)

        lines = await run_and_kill(url, "rebuild", rng.randrange(2**32), delay, enough)
        with explained(f"rebuild round {round_} (seed {seed}, kill after {delay:.3f} s)"):
            now = check_database(url)
            check_progress(seen, now)
            reported = [line["rebuilt_to"] for line in lines if "rebuilt_to" in line]
            if now.rebuild is not None:
                rebuilding.add(now.rebuild[0])
                assert now.rebuild[1] >= max(reported, default=0), "reported progress lost"
            if seen.rebuild is not None and reported:
                assert reported[0] >= seen.rebuild[1], "the rebuild did not resume"
        seen = now
        if now.generation > live_generation:
            break
    assert seen.rebuild is None, "the rebuild never finished"
    assert seen.generation == live_generation + 1, "the rebuild was restarted"
    assert rebuilding <= {seen.generation}
    print(f"{round_ + 1} rebuilders killed")
    return seen


async def check_end(url: str) -> int:
    """Catch up in this process: the read model equals a count of the whole log and a
    fresh rebuild of it. Returns the number of events."""
    async with asyncio.timeout(TIMEOUT), eskit.open_store(url) as store:
        runner = ProjectionRunner(store, [Counter()])
        await runner.run_until_caught_up()
        (status,) = await runner.status()
        assert (status.status, status.lag) == ("stopped", 0), status
        final = check_database(url)
        with snapshot(url) as conn:
            # The stored checkpoint may stay before trailing events the projection does not
            # handle (run_until_caught_up keeps that step in memory): count to the head.
            got = read_model(conn, "stream_counts", "totals")
            assert_counts(got, expected(conn, final.head), "caught up")
        database = runner.database
        before = await database.read(lambda c: state.digest(c, Counter.tables))
        await runner.rebuild(Counter.name)
        after = await database.read(lambda c: state.digest(c, Counter.tables))
        assert after == before, "a fresh rebuild differs from the crashed-and-resumed build"
        await runner.stop()
    check_database(url)
    return final.head


async def crash_loop(url: str, events: int, follow_kills: int, rebuild_kills: int) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    started = time.perf_counter()
    await fill(url, events, rng.randrange(2**32))
    await kill_followers(url, rng, seed, follow_kills)
    await kill_rebuilders(url, rng, seed, rebuild_kills)
    total = await check_end(url)
    elapsed = time.perf_counter() - started
    print(f"{elapsed:.1f} s (seed {seed}): {total} events, every count exact")


BACKENDS = ["sqlite", "postgres"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.anyio
async def test_one_kill_while_following_and_one_while_rebuilding(
    backend: str, tmp_path: Path
) -> None:
    url = store_url(backend, tmp_path)
    await crash_loop(url, events=4_000, follow_kills=1, rebuild_kills=1)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.anyio
async def test_counts_stay_exact_across_sigkills(backend: str, tmp_path: Path) -> None:
    url = store_url(backend, tmp_path)
    await crash_loop(url, events=20_000, follow_kills=10, rebuild_kills=6)
