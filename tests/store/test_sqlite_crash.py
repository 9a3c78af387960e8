"""Crash safety of the SQLite backend: a writer killed with SIGKILL at a random moment loses
nothing it acknowledged, leaves no partial batch and no broken file, and the next writer
carries on with larger positions.

crash_child.py appends from several tasks (single events and 5-10 event batches, exact
expected versions and ANY) and prints each append after it returned. The test kills it at a
random moment, checks the file, and starts the next child on the same file, 20 times.
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
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import pytest

import eskit
from eskit.store.sqlite import SQLiteStore

CHILD = Path(__file__).with_name("crash_child.py")
ROUNDS = 20
TIMEOUT = 30.0


class Row(NamedTuple):
    position: int
    stream: str
    version: int
    batch: str
    size: int
    nth: int  # index of the event in its batch


async def run_and_kill(path: Path, seed: int, delay: float) -> list[dict[str, Any]]:
    """Start a child, SIGKILL it ``delay`` seconds after it is ready, return its acks."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        str(path),
        str(seed),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,  # a traceback shows up among the acks
    )
    assert child.stdout is not None
    output: list[bytes] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            ready = await child.stdout.readline()
            assert ready == b'{"ready": true}\n', ready + await child.stdout.read()

            async def follow() -> None:
                assert child.stdout is not None
                while line := await child.stdout.readline():
                    output.append(line)

            reading = asyncio.create_task(follow())
            await asyncio.sleep(delay)  # the random moment of the crash is what is tested
            child.send_signal(signal.SIGKILL)
            await child.wait()
            await reading  # to EOF: every line the child wrote before it died
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    text = b"".join(output).decode(errors="replace")
    assert child.returncode == -signal.SIGKILL, f"the child died on its own:\n{text}"
    if output and not output[-1].endswith(b"\n"):
        output.pop()  # cut off mid-line by the kill: not a complete acknowledgement
    acks = []
    for line in output:
        try:
            acks.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"the child wrote something else:\n{text}") from None
    return acks


def check_file(
    path: Path, acks: list[dict[str, Any]], before: dict[bytes, Row]
) -> dict[bytes, Row]:
    """Check the file as the crash left it; return every event in it by id."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        found = conn.execute(
            "SELECT id, position, stream, version, metadata FROM events ORDER BY position"
        ).fetchall()
        sequence = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    rows: dict[bytes, Row] = {}
    for id_, position, stream, version, metadata in found:
        meta = json.loads(metadata)
        rows[id_] = Row(position, stream, version, meta["batch"], meta["size"], meta["index"])
    assert len(rows) == len(found), "an event id appears twice"

    # Nothing written before this round changed or disappeared; new events come after it.
    assert {i: rows.get(i) for i in before} == before, "events of earlier rounds changed"
    newest_before = max((r.position for r in before.values()), default=0)
    assert all(r.position > newest_before for i, r in rows.items() if i not in before)
    assert sequence is None or sequence[0] >= max((r.position for r in rows.values()), default=0)

    # Versions contiguous per stream, in position order.
    by_stream: dict[str, list[Row]] = defaultdict(list)
    for row in sorted(rows.values()):
        by_stream[row.stream].append(row)
    for stream, events in by_stream.items():
        assert [r.version for r in events] == list(range(len(events))), stream

    # Every batch complete: all its events, consecutive in its stream and in the log.
    batches: dict[str, list[Row]] = defaultdict(list)
    for row in rows.values():
        batches[row.batch].append(row)
    for batch, events in batches.items():
        events.sort()
        size = events[0].size
        assert [r.nth for r in events] == list(range(size)), f"partial batch {batch}"
        assert len({r.stream for r in events}) == 1
        assert [r.version - events[0].version for r in events] == list(range(size))
        assert [r.position - events[0].position for r in events] == list(range(size))

    # Every acknowledged append is there, exactly where the child was told it is.
    for ack in acks:
        size = ack["size"]
        for index, id_ in enumerate(ack["ids"]):
            stored = rows.get(uuid.UUID(id_).bytes)
            assert stored is not None, f"acknowledged event lost: {ack}"
            assert stored == Row(
                ack["last_position"] - size + 1 + index,
                ack["stream"],
                ack["last_version"] - size + 1 + index,
                ack["batch"],
                size,
                index,
            ), ack
    return rows


async def check_with_store(path: Path, rows: dict[bytes, Row]) -> None:
    """The store reopens the crashed file and reads exactly what is in it."""
    async with asyncio.timeout(TIMEOUT), SQLiteStore(path) as store:
        log = [(e.id.bytes, e.position, e.stream, e.version) async for e in store.read_all()]
        assert log == sorted(
            ((i, r.position, r.stream, r.version) for i, r in rows.items()), key=lambda e: e[1]
        )
        heads: dict[str, int] = {}
        for row in rows.values():
            heads[row.stream] = max(heads.get(row.stream, -1), row.version)
        for stream, head in heads.items():
            assert await store.stream_version(stream) == head


@pytest.mark.slow
@pytest.mark.anyio
async def test_acknowledged_appends_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    rows: dict[bytes, Row] = {}
    acknowledged = 0
    started = time.perf_counter()
    for round_ in range(ROUNDS):
        delay = rng.uniform(0.05, 0.6)
        acks = await run_and_kill(path, rng.randrange(2**32), delay)
        assert acks, f"round {round_}: nothing was acknowledged in {delay:.2f} s"
        acknowledged += len(acks)
        try:
            rows = check_file(path, acks, rows)
            await check_with_store(path, rows)
        except AssertionError as error:
            raise AssertionError(f"round {round_} (seed {seed}, kill after {delay:.3f} s)") from (
                error
            )

    async with asyncio.timeout(TIMEOUT), SQLiteStore(path) as store:  # goes on after a crash
        newest = max(r.position for r in rows.values())
        version = await store.stream_version("crash-0")
        expected: eskit.ExpectedVersion = eskit.NO_STREAM if version is None else version
        result = await store.append("crash-0", [eskit.NewEvent("AfterCrash", {})], expected)
        assert result.last_position > newest
    elapsed = time.perf_counter() - started
    unacknowledged = len({r.batch for r in rows.values()}) - acknowledged
    print(
        f"{ROUNDS} SIGKILLs in {elapsed:.1f} s (seed {seed}): {acknowledged} acknowledged"
        f" appends all found, {len(rows)} events, {unacknowledged} batches committed but"
        " not yet acknowledged when killed"
    )
