"""How close can eskit's appends get to raw ``sqlite3``? (issue 13 point 6: ES3, W2)

Five ways of making the same one-event appends to new streams, one at a time, each in the
same run on the same kind of file (WAL, ``synchronous=FULL``), best of ``--repeat``:

- **raw**: ES3's raw side, ``BEGIN IMMEDIATE; INSERT; COMMIT`` into a table with only the
  position key and ``UNIQUE (stream, version)``;
- **raw, eskit's table**: the same statements inserting rows built beforehand into eskit's
  own schema (its ``id`` and ``category`` indexes, the link column): what the rows eskit
  stores cost SQLite, with no Python of eskit's;
- **raw, eskit's table, two hand-offs**: the same, each append handed from an event loop
  to a writer thread and answered back with ``call_soon_threadsafe``: the async face's
  floor, with nothing of eskit's but its table;
- **eskit.sync** and **eskit async**: ``store.append`` through each face.

And W2's appends of 100 events to one stream: raw, raw into eskit's table, and both faces.

The ratios to raw show which part of the gap is the file eskit keeps, which the hand-offs
and which eskit's own work. Run: ``python -m benchmarks.floor``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import queue
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import eskit
import eskit.sync
from benchmarks import raw
from eskit.store.ids import new_event_ids
from eskit.store.sqlite_writer import _INSERT

APPENDS = 2_000
Row = tuple[object, ...]


DATA = '{"customer":"acme","amount":1250,"lines":[1,2,3]}'
PER_APPEND = 100
"""W2's events per append (all into one stream)."""


def _raw_rows(count: int, one_stream: bool = False) -> list[Row]:
    return [
        (uuid.uuid4().bytes, *_where(i, one_stream), "InvoiceCreated", DATA, "{}", 1)
        for i in range(count)
    ]


def _where(i: int, one_stream: bool) -> tuple[str, int]:
    return ("invoice-0", i) if one_stream else (f"inv-{i}", 0)


def _eskit_rows(count: int, first: int, one_stream: bool = False) -> list[Row]:
    ids = new_event_ids(count)  # eskit's own (UUIDv7: in order, as eskit writes them)
    rows: list[Row] = []
    for i in range(count):
        stream, version = _where(i, one_stream)
        at, link = 1, os.urandom(32)
        row = (first + i, stream, "inv", version, ids[i], "InvoiceCreated", DATA, "{}", at, link)
        rows.append((*row, None, None, None))  # no raw payloads (content type, data, metadata)
    return rows


def _one_at_a_time(conn: sqlite3.Connection, insert: str, rows: list[Row]) -> float:
    start = time.perf_counter()
    for row in rows:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(insert, row)
        conn.execute("COMMIT")
    return time.perf_counter() - start


def _in_batches(conn: sqlite3.Connection, insert: str, rows: list[Row]) -> float:
    start = time.perf_counter()
    for i in range(0, len(rows), PER_APPEND):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(insert, rows[i : i + PER_APPEND])
        conn.execute("COMMIT")
    return time.perf_counter() - start


def _eskit_table(path: Path) -> tuple[sqlite3.Connection, int]:
    """A fresh eskit store file (its schema, by eskit itself) and its next position."""
    with eskit.sync.open_store(f"sqlite:///{path}") as store:
        store.append("warmup-0", [eskit.NewEvent("Warm", {})])
    conn = raw.connect(path)
    return conn, conn.execute("SELECT max(position) FROM events").fetchone()[0] + 1


def raw_side(directory: Path, count: int) -> float:
    conn = raw.create(directory / "raw.db")
    try:
        return count / _one_at_a_time(conn, raw.INSERT, _raw_rows(count))
    finally:
        conn.close()


def raw_eskit_table(directory: Path, count: int) -> float:
    conn, first = _eskit_table(directory / "table.db")
    try:
        return count / _one_at_a_time(conn, _INSERT, _eskit_rows(count, first))
    finally:
        conn.close()


def raw_handed_off(directory: Path, count: int) -> float:
    conn, first = _eskit_table(directory / "handoff.db")
    conn.close()
    rows = _eskit_rows(count, first)
    jobs: queue.SimpleQueue[tuple[Row, Callable[[], object]] | None] = queue.SimpleQueue()

    def writer() -> None:
        db = raw.connect(directory / "handoff.db")
        while (job := jobs.get()) is not None:
            row, answer = job
            db.execute("BEGIN IMMEDIATE")
            db.execute(_INSERT, row)
            db.execute("COMMIT")
            answer()
        db.close()

    async def appends() -> float:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        for row in rows:
            future: asyncio.Future[None] = loop.create_future()
            jobs.put((row, functools.partial(loop.call_soon_threadsafe, future.set_result, None)))
            await future
        return time.perf_counter() - start

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        return count / asyncio.run(appends())
    finally:
        jobs.put(None)
        thread.join()


def w2_raw(directory: Path, count: int) -> float:
    conn = raw.create(directory / "raw.db")
    try:
        return count / _in_batches(conn, raw.INSERT, _raw_rows(count, one_stream=True))
    finally:
        conn.close()


def w2_eskit_table(directory: Path, count: int) -> float:
    conn, first = _eskit_table(directory / "table.db")
    try:
        return count / _in_batches(conn, _INSERT, _eskit_rows(count, first, one_stream=True))
    finally:
        conn.close()


def w2_eskit_sync(directory: Path, count: int) -> float:
    events = _events(count)
    with eskit.sync.open_store(f"sqlite:///{directory / 'sync.db'}") as store:
        store.append("warmup-0", [eskit.NewEvent("Warm", {})])
        expected: eskit.ExpectedVersion = eskit.NO_STREAM
        start = time.perf_counter()
        for i in range(0, count, PER_APPEND):
            batch = events[i : i + PER_APPEND]
            expected = store.append("invoice-0", batch, expected).last_version
        return count / (time.perf_counter() - start)


def w2_eskit_async(directory: Path, count: int) -> float:
    events = _events(count)

    async def appends() -> float:
        async with eskit.open_store(f"sqlite:///{directory / 'async.db'}") as store:
            await store.append("warmup-0", [eskit.NewEvent("Warm", {})])
            expected: eskit.ExpectedVersion = eskit.NO_STREAM
            start = time.perf_counter()
            for i in range(0, count, PER_APPEND):
                batch = events[i : i + PER_APPEND]
                expected = (await store.append("invoice-0", batch, expected)).last_version
            return count / (time.perf_counter() - start)

    return asyncio.run(appends())


def _events(count: int) -> list[eskit.NewEvent]:
    return [
        eskit.NewEvent("InvoiceCreated", {"customer": "acme", "amount": 1250, "lines": [1, 2, 3]})
        for _ in range(count)
    ]


def eskit_sync(directory: Path, count: int) -> float:
    events = _events(count)
    with eskit.sync.open_store(f"sqlite:///{directory / 'sync.db'}") as store:
        store.append("warmup-0", [eskit.NewEvent("Warm", {})])
        start = time.perf_counter()
        for i, event in enumerate(events):
            store.append(f"inv-{i}", [event], expected_version=eskit.NO_STREAM)
        return count / (time.perf_counter() - start)


def eskit_async(directory: Path, count: int) -> float:
    events = _events(count)

    async def appends() -> float:
        async with eskit.open_store(f"sqlite:///{directory / 'async.db'}") as store:
            await store.append("warmup-0", [eskit.NewEvent("Warm", {})])
            start = time.perf_counter()
            for i, event in enumerate(events):
                await store.append(f"inv-{i}", [event], expected_version=eskit.NO_STREAM)
            return count / (time.perf_counter() - start)

    return asyncio.run(appends())


Side = Callable[[Path, int], float]
WORKLOADS: dict[str, tuple[int, dict[str, Side]]] = {
    "ES3 (one-event appends, one at a time)": (
        APPENDS,
        {
            "raw": raw_side,
            "raw, eskit's table": raw_eskit_table,
            "raw, eskit's table, two hand-offs": raw_handed_off,
            "eskit.sync": eskit_sync,
            "eskit async": eskit_async,
        },
    ),
    "W2 (10,000 events into one stream, 100 per append)": (
        10_000,
        {
            "raw": w2_raw,
            "raw, eskit's table": w2_eskit_table,
            "eskit.sync": w2_eskit_sync,
            "eskit async": w2_eskit_async,
        },
    ),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the events")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side; best is kept")
    parser.add_argument("--dir", type=Path, help="where the files go (default: TMPDIR)")
    args = parser.parse_args(argv)
    for workload, (events, sides) in WORKLOADS.items():
        count = max(PER_APPEND, int(events * args.scale) // PER_APPEND * PER_APPEND)
        best = dict.fromkeys(sides, 0.0)
        for _ in range(args.repeat):  # the sides take turns: noise hits them alike
            for name, side in sides.items():
                with tempfile.TemporaryDirectory(prefix="eskit-floor-", dir=args.dir) as d:
                    best[name] = max(best[name], side(Path(d), count))
        print(f"{workload}, {count:,} events, best of {args.repeat}")
        for name, rate in best.items():
            print(f"  {name:<36} {rate:>9,.0f} events/s   {rate / best['raw']:.2f} of raw")


if __name__ == "__main__":
    main()
