"""How close can eskit's appends get to raw ``sqlite3``? (issue 13 point 6: ES3, W2, W1c)

Six ways of making the same one-event appends to new streams, one at a time, each in the
same run on the same kind of file (WAL, ``synchronous=FULL``), best of ``--repeat``:

- **raw**: ES3's raw side, ``BEGIN IMMEDIATE; INSERT; COMMIT`` into a table with only the
  position key and ``UNIQUE (stream, version)``;
- **raw, eskit's table**: the same statements inserting rows built beforehand, and bound
  as eskit's writer binds them (``_bound``), into eskit's own schema (its ``id`` and
  ``category`` indexes, the link column): what the rows eskit stores cost SQLite, with no
  Python of eskit's;
- **raw, eskit's table, two hand-offs**: the same, each append handed from an event loop
  to a writer thread and answered back with ``call_soon_threadsafe``: the async face's
  floor, with nothing of eskit's but its table;
- **raw, eskit's table and checks**: straight-line code doing only what eskit must do per
  append to keep its guarantees (the JSON exactness check, the heads read under the write lock,
  a fresh id, the chain link), with eskit's own statements and functions: the sync face's
  floor;
- **eskit.sync** and **eskit async**: ``store.append`` through each face.

W2's appends of 100 events to one stream: raw, raw into eskit's table (each in multi-row
INSERTs of 64, 32 and 4 rows, as eskit's writer inserts a group), and both faces. W1c's
appends from 100 tasks: its raw side, eskit async, and the least any group commit can do
(each task checks its event and waits; one thread commits whatever is queued in one
transaction and answers the group with one call into the loop).

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

import eskit
import eskit.sync
from benchmarks import eskit_side, raw
from benchmarks.common import Payload, payloads, placements
from eskit.store import planner
from eskit.store.chain import hasher, link_event
from eskit.store.ids import new_event_ids
from eskit.store.planner import LIVE, NEW_STREAM, UNTOUCHED
from eskit.store.rules import DEFAULT_MAX_EVENT_SIZE, _exact_json, category
from eskit.store.sqlite_chain import HEAD
from eskit.store.sqlite_writer import (
    _INSERT_JSON,
    _INSERTS,
    _MANY_HEADS,
    _ONE_HEAD,
    _bound,
    _insert_chunks,
)

APPENDS = 2_000
Row = tuple[object, ...]


DATA = '{"customer":"acme","amount":1250,"lines":[1,2,3]}'
PER_APPEND = 100
"""W2's events per append (all into one stream)."""
TASKS = 100
"""W1c's concurrent asyncio tasks."""
TYPE = "InvoiceCreated"


def _raw_rows(count: int, one_stream: bool = False) -> list[Row]:
    return [
        (uuid.uuid4().bytes, *_where(i, one_stream), "InvoiceCreated", DATA, "{}", 1)
        for i in range(count)
    ]


def _where(i: int, one_stream: bool) -> tuple[str, int]:
    return ("invoice-0", i) if one_stream else (f"inv-{i}", 0)


def _eskit_rows(count: int, first: int, one_stream: bool = False) -> list[planner.Row]:
    ids = new_event_ids(count)  # eskit's own (UUIDv7: in order, as eskit writes them)
    rows: list[planner.Row] = []
    for i in range(count):
        stream, version = _where(i, one_stream)
        at, link = 1, os.urandom(32)
        row = (first + i, stream, "inv", version, ids[i], "InvoiceCreated", DATA, "{}", at, link)
        rows.append((*row, None, None, None))  # no raw payloads (content type, data, metadata)
    return rows


def _bound_one_by_one(rows: list[planner.Row]) -> tuple[str, list[Row]]:
    """Each row's parameters as eskit's writer binds a lone row (``_bound``: ten columns
    without raw parts, id and link as ``bytearray``), and that insert: the rows eskit
    stores, bound no dearer than eskit binds them."""
    statement = _bound(rows[:1])[0]
    return statement, [tuple(_bound([row])[1]) for row in rows]


def _one_at_a_time(conn: sqlite3.Connection, insert: str, rows: Sequence[Row]) -> float:
    start = time.perf_counter()
    for row in rows:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(insert, row)
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
        return count / _one_at_a_time(conn, *_bound_one_by_one(_eskit_rows(count, first)))
    finally:
        conn.close()


def raw_handed_off(directory: Path, count: int) -> float:
    conn, first = _eskit_table(directory / "handoff.db")
    conn.close()
    insert, rows = _bound_one_by_one(_eskit_rows(count, first))
    jobs: queue.SimpleQueue[tuple[Row, Callable[[], object]] | None] = queue.SimpleQueue()

    def writer() -> None:
        db = raw.connect(directory / "handoff.db")
        while (job := jobs.get()) is not None:
            row, answer = job
            db.execute("BEGIN IMMEDIATE")
            db.execute(insert, row)
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


def _exact(value: dict[str, Any]) -> bytes:
    """``value`` as JSON that reads back as what was given, checked by eskit's own check
    (``rules._exact_json``: by its types for a flat payload, else read back and compared)."""
    encoded = _exact_json(value)
    if encoded is None:
        raise ValueError("not exact JSON")
    return encoded


def _validated(data: dict[str, Any], metadata: dict[str, Any]) -> tuple[str, str]:
    """An event's data and metadata JSON after eskit's checks (no metadata: ``{}`` unread)."""
    body, meta = _exact(data), _exact(metadata) if metadata else b"{}"
    if len(body) + len(meta) > DEFAULT_MAX_EVENT_SIZE:
        raise ValueError("event too large")
    return body.decode(), meta.decode()


def checked_appends(directory: Path, items: list[Payload]) -> float:
    """ES3's necessary work, one append at a time, straight-line: the seconds it took.

    What eskit must do for each append to keep its guarantees, with its own statements and
    functions, on a file it made: validate the event; under the write lock read the stream's
    head and the log's (optimistic concurrency against other processes too); a fresh id; the
    chain link covering position and version; insert; commit.
    """
    conn, _ = _eskit_table(directory / "checked.db")
    cursor, base = conn.cursor(), hasher(None)
    try:
        start = time.perf_counter()
        for i, (data, metadata) in enumerate(items):
            stream = f"inv-{i}"
            body, meta = _validated(data, metadata)
            cursor.execute("BEGIN IMMEDIATE")
            at = time.time_ns() // 1_000
            last, state, link, head = cursor.execute(_ONE_HEAD, (stream,)).fetchone()
            if last is not None or state not in (UNTOUCHED, LIVE):
                raise eskit.WrongExpectedVersion(stream, eskit.NO_STREAM, last)
            (id_,) = new_event_ids(1)
            _, row = _first_row(base, stream, at, link, head + 1, id_, body, meta)
            cursor.execute(_INSERT_JSON, row)
            cursor.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        conn.close()


def _first_row(
    base: Any,
    stream: str,
    at: int,
    previous: bytes | None,
    position: int,
    id_: bytes,
    body: str,
    meta: str,
) -> tuple[bytes, tuple[object, ...]]:
    """A new stream's first event's link (``chain.link_event``, over its position and
    version) and its row as ``_INSERT_JSON`` binds it (id and link as ``bytearray``, as
    ``_bound``)."""
    link = link_event(
        base, stream.encode(), at, previous, position, 0, id_, TYPE, body, meta, None, None, None
    )
    return link, (
        position, stream, category(stream), 0, bytearray(id_), TYPE, body, meta, at,
        bytearray(link),
    )  # fmt: skip


def raw_checked(directory: Path, count: int) -> float:
    data = msgspec.json.decode(DATA)
    return count / checked_appends(directory, [(data, {}) for _ in range(count)])


def w1c_raw(directory: Path, count: int) -> float:
    """W1c's raw side (``benchmarks.workloads``): the rows committed 100 a transaction."""
    return raw.write(directory, payloads(count), per_stream=1, per_tx=TASKS).rate


def w1c_eskit_async(directory: Path, count: int) -> float:
    return asyncio.run(eskit_side.append_concurrently(directory, payloads(count), TASKS)).rate


Job = tuple[str, str, str, "asyncio.Future[int]"]
"""An append handed to the committer: stream, data and metadata JSON, its caller's future."""


def committed_concurrently(directory: Path, items: list[Payload]) -> float:
    """The least a W1c-shaped design can do: each task validates its event on the loop and
    waits; one committer thread writes whatever is queued in one transaction and answers
    the whole group with one call into the loop, after COMMIT. The seconds it took."""
    path, count = directory / "checked.db", len(items)
    _eskit_table(path)[0].close()
    streams = [stream for stream, _ in placements(count, 1)]
    jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()

    async def appends() -> float:
        loop = asyncio.get_running_loop()

        async def append(i: int) -> int:
            body, meta = _validated(*items[i])
            future: asyncio.Future[int] = loop.create_future()
            jobs.put((streams[i], body, meta, future))
            return await future

        start = time.perf_counter()
        await eskit_side.in_tasks(TASKS, count, append)
        return time.perf_counter() - start

    thread = threading.Thread(target=_committer, args=(path, jobs))
    thread.start()
    try:
        return asyncio.run(appends())
    finally:
        jobs.put(None)
        thread.join()


def w1c_checked(directory: Path, count: int) -> float:
    return count / committed_concurrently(directory, payloads(count))


def _committer(path: Path, jobs: queue.SimpleQueue[Job | None]) -> None:
    """Take everything queued, commit it as one group; stop at None."""
    conn = raw.connect(path)
    cursor, base = conn.cursor(), hasher(None)
    try:
        while True:
            taken = [jobs.get()]
            while not jobs.empty():
                taken.append(jobs.get())
            group = [job for job in taken if job is not None]
            if group:
                _commit_group(conn, cursor, base, group)
            if len(group) < len(taken):
                return
    finally:
        conn.close()


def _commit_group(
    conn: sqlite3.Connection, cursor: sqlite3.Cursor, base: Any, group: list[Job]
) -> None:
    """One transaction for the group: one heads query for all its streams, ids, links, the
    rows in eskit's multi-row INSERTs (``_insert_chunks``); each append checked against the
    heads as they stand in the group. The callers are answered, all in one
    ``call_soon_threadsafe``, only after COMMIT."""
    outcomes: list[int | Exception] = []
    try:
        cursor.execute("BEGIN IMMEDIATE")
        at = time.time_ns() // 1_000
        names = [stream for stream, _, _, _ in group]
        new = (NEW_STREAM.last, NEW_STREAM.state, NEW_STREAM.link)  # no row for these
        heads = dict.fromkeys(names, new)
        as_json = msgspec.json.encode(names).decode()
        for name, last, state, link in cursor.execute(_MANY_HEADS, (as_json,)):
            heads[name] = (last, state, link)
        head = position = cursor.execute(HEAD).fetchone()[0]  # the log's head
        ids = iter(new_event_ids(len(group)))
        bound: list[object] = []  # the rows' parameters, flat (eskit's ``_bound``)
        for stream, body, meta, _ in group:
            last, state, link = heads[stream]
            if last is not None or state not in (UNTOUCHED, LIVE):
                outcomes.append(eskit.WrongExpectedVersion(stream, eskit.NO_STREAM, last))
                continue
            position += 1
            link, row = _first_row(base, stream, at, link, position, next(ids), body, meta)
            heads[stream] = (0, LIVE, link)
            bound += row
            outcomes.append(position)
        if bound:
            _insert_chunks(cursor, bound, position - head)  # a row a position given
        cursor.execute("COMMIT")
    except Exception as error:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        outcomes = [error] * len(group)
    group[0][3].get_loop().call_soon_threadsafe(_answer, group, outcomes)


def _answer(group: list[Job], outcomes: list[int | Exception]) -> None:
    """Set every future of a committed group (on the loop: one call for the group)."""
    for (_, _, _, future), outcome in zip(group, outcomes, strict=True):
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def w2_raw(directory: Path, count: int) -> float:
    """W2's raw side: 100 rows a transaction in multi-row INSERTs (``raw.in_batches``)."""
    transactions = raw.in_batches(_raw_rows(count, one_stream=True), PER_APPEND)
    conn = raw.create(directory / "raw.db")
    try:
        return count / raw.in_transactions(conn, transactions)
    finally:
        conn.close()


def w2_eskit_table(directory: Path, count: int) -> float:
    """The same into eskit's table: its rows bound as its writer binds them (``_bound``),
    in the multi-row INSERTs it chunks them into, planned before the clock."""
    conn, first = _eskit_table(directory / "table.db")
    transactions = []
    rows = _eskit_rows(count, first, one_stream=True)
    for batch in (rows[i : i + PER_APPEND] for i in range(0, count, PER_APPEND)):
        parameters = _bound(batch)[1]
        inserts = _INSERTS[len(parameters) // len(batch)]  # by width, as ``_insert_chunks``
        transactions.append(raw.chunked(parameters, len(batch), inserts))
    try:
        return count / raw.in_transactions(conn, transactions)
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
            "raw, eskit's table and checks": raw_checked,
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
    f"W1c (one-event appends to new streams from {TASKS} tasks)": (
        5_000,
        {
            "raw": w1c_raw,
            "eskit async": w1c_eskit_async,
            "eskit's table and checks, one committer thread": w1c_checked,
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
            print(f"  {name:<48} {rate:>9,.0f} events/s   {rate / best['raw']:.2f} of raw")


if __name__ == "__main__":
    main()
