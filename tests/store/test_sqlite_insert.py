"""A group's rows go into SQLite as multi-row INSERTs of up to 64 rows (``_insert``): every
group size reads back exactly (positions, versions, ids, data, raw parts, links that
``verify`` accepts), and a failing insert still rolls the group back and retries each
request alone."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import uuid
from pathlib import Path

import pytest

import eskit
from eskit.store import rules
from eskit.store.audit import verify
from eskit.store.sqlite_writer import AppendRequest, Writer, micros

SIZES = [1, 2, 63, 64, 65, 100, 127, 128, 129, 300]


def new_event(n: int, raw: bool) -> eskit.NewEvent:
    if raw:
        meta = eskit.RawData("", bytes([n % 256])) if n % 2 else None
        return eskit.NewEvent(
            "Raw", eskit.RawData("app/x", n.to_bytes(4, "big", signed=True)), meta, uuid.uuid4()
        )
    return eskit.NewEvent("Happened", {"n": n}, id=uuid.uuid4())


def request(stream: str, events: list[eskit.NewEvent]) -> AppendRequest:
    size = rules.DEFAULT_MAX_EVENT_SIZE
    return AppendRequest([rules.prepare_append(stream, events, eskit.ANY, size)])


def writer(path: Path) -> Writer:
    return Writer(str(path), "NORMAL", lambda: micros(dt.datetime.now(dt.UTC)), None)


async def read_back(path: Path) -> list[eskit.RecordedEvent]:
    async with eskit.open_store(f"sqlite:///{path}") as store:
        report = await verify(store)
        assert report.ok, report.problems
        return [e async for e in store.read_all()]


@pytest.mark.parametrize("raw", [False, True], ids=["json", "raw"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shape", ["one-append", "many-requests"])
def test_a_group_of_any_size_reads_back_exactly(
    tmp_path: Path, size: int, raw: bool, shape: str
) -> None:
    """One append of ``size`` events, or ``size`` one-event requests to their own streams
    in one group (the last with raw parts, when ``raw``: the 13-column form for all)."""
    path = tmp_path / "events.db"
    events = [new_event(n, raw and (shape == "one-append" or n == size - 1)) for n in range(size)]
    if shape == "one-append":
        batch = [request("s", events)]
        streams = ["s"] * size
        versions = list(range(size))
    else:
        batch = [request(f"s-{n}", [e]) for n, e in enumerate(events)]
        streams = [f"s-{n}" for n in range(size)]
        versions = [0] * size
    w = writer(path)
    try:
        w.commit([request("opener", [new_event(-1, raw)])])  # a chain to link to
        outcomes, wrote = w.commit(batch)
    finally:
        w.close()
    assert wrote
    assert all(error is None for _, error in outcomes)
    log = asyncio.run(read_back(path))[1:]
    assert [(e.position, e.stream, e.version, e.id) for e in log] == [
        (2 + n, streams[n], versions[n], events[n].id) for n in range(size)
    ]
    for written, given in zip(log, events, strict=True):
        if isinstance(given.data, eskit.RawData):
            assert written.raw == given.data
            meta = given.metadata
            assert written.raw_metadata == (meta.body if isinstance(meta, eskit.RawData) else None)
        else:
            assert written.data == given.data


@pytest.mark.parametrize("size", [2, 65, 130])
def test_an_insert_failing_midway_rolls_the_group_back_and_retries_each_alone(
    tmp_path: Path, size: int
) -> None:
    """A trigger refuses one event past the first chunk: the group's earlier chunks are
    rolled back, each request is retried alone, and only the refused one fails."""
    path = tmp_path / "events.db"
    bad = size - 1
    w = writer(path)
    try:
        w.conn.execute(
            "CREATE TEMP TRIGGER refuse BEFORE INSERT ON main.events WHEN NEW.type = 'Bad'"
            " BEGIN SELECT RAISE(ABORT, 'injected: refused'); END"
        )
        events = [eskit.NewEvent("Bad" if n == bad else "Good", {"n": n}) for n in range(size)]
        outcomes, wrote = w.commit([request(f"s-{n}", [e]) for n, e in enumerate(events)])
    finally:
        w.close()
    assert wrote
    for n, (results, error) in enumerate(outcomes):
        if n == bad:
            assert results is None
            assert isinstance(error, sqlite3.IntegrityError)
            assert "injected: refused" in str(error)
        else:
            assert error is None
            assert results is not None
    log = asyncio.run(read_back(path))
    assert [(e.position, e.stream, e.data) for e in log] == [
        (1 + n, f"s-{n}", {"n": n}) for n in range(size) if n != bad
    ]
