"""Read models and helpers shared by the read-side tests.

``Counter`` counts the events of each stream and type it handles, so an event applied twice
(or not at all) shows as a wrong count; ``fold`` is the same count in plain Python. The
models run on SQLite and PostgreSQL alike: their SQL is written once, with ``?`` (which eskit
translates for PostgreSQL), and upserts name the target table (``{counts}.n``), which
PostgreSQL requires.
"""

from __future__ import annotations

import itertools
from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import ClassVar

import eskit
from eskit.projections import Database, ReadModelConnection, SQLProjection, handles
from eskit.projections import state as st
from tests import postgres

BACKENDS = ("memory", "sqlite", "postgres")

COUNTED = ("Added", "Removed")
"""The event types ``Counter`` handles; anything else (``Other``) it never reads."""

Counts = dict[tuple[str, str], int]


def store_url(backend: str, directory: Path) -> str:
    """A new store on ``backend``: in memory, a SQLite file in ``directory``, or a
    PostgreSQL schema of its own (skipped, or failed under CI, without a server)."""
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{directory}/events.db"
    return postgres.store_url()


class Counter(SQLProjection):
    """Events per (stream, type), ``step`` per event."""

    name = "counter"
    tables = ("counts",)
    schema = (
        "CREATE TABLE {counts} (stream TEXT NOT NULL, type TEXT NOT NULL,"
        " n INTEGER NOT NULL, PRIMARY KEY (stream, type))",
    )
    step: ClassVar[int] = 1

    def __init__(self) -> None:
        self.applied = 0
        """Handler calls in this process: what a restarted runner re-applied."""

    @handles(*COUNTED)
    def count(self, event: eskit.RecordedEvent, db: ReadModelConnection) -> None:
        self.applied += 1
        db.execute(
            (
                "INSERT INTO {counts} VALUES (?, ?, ?)"
                " ON CONFLICT (stream, type) DO UPDATE SET n = {counts}.n + excluded.n"
            ),
            (event.stream, event.type, self.step),
        )


class Doubled(Counter):
    """The next version of ``Counter``: its handlers build something else."""

    version = 2
    step = 2


class Totals(SQLProjection):
    """The sum of ``amount`` per stream: a second read model beside ``Counter``."""

    name = "totals"
    tables = ("totals",)
    schema = ("CREATE TABLE {totals} (stream TEXT PRIMARY KEY, amount INTEGER NOT NULL)",)

    @handles("Added")
    def add(self, event: eskit.RecordedEvent, db: ReadModelConnection) -> None:
        db.execute(
            (
                "INSERT INTO {totals} VALUES (?, ?)"
                " ON CONFLICT (stream) DO UPDATE SET amount = {totals}.amount + excluded.amount"
            ),
            (event.stream, event.data["amount"]),
        )


def batched(size: int) -> Counter:
    """A ``Counter`` that reads ``size`` events per batch."""

    class Batched(Counter):
        batch_size = size

    return Batched()


async def append(store: eskit.EventStore, stream: str, *types: str) -> eskit.AppendResult:
    """Append one event of each type (``amount`` 1) to ``stream``."""
    return await store.append(stream, [eskit.NewEvent(t, {"amount": 1}) for t in types])


async def append_each(store: eskit.EventStore, written: Sequence[tuple[str, str]]) -> int:
    """Append (stream, type) events in this order, a run of one stream per append; the
    last position."""
    last = 0
    for stream, run in itertools.groupby(written, key=lambda event: event[0]):
        last = (await append(store, stream, *(type_ for _, type_ in run))).last_position
    return last


def fold(events: Iterable[tuple[str, str]], step: int = 1) -> Counts:
    """What ``Counter`` should hold after these (stream, type) events."""
    tally = Tally((stream, type_) for stream, type_ in events if type_ in COUNTED)
    return {key: n * step for key, n in tally.items()}


async def counts(database: Database) -> Counts:
    """The counter read model, read through its logical table (the view)."""
    rows = await database.read(lambda c: c.execute("SELECT stream, type, n FROM counts").fetchall())
    return {(stream, type_): n for stream, type_, n in rows}


async def stored(database: Database, name: str) -> st.State:
    """A projection's row as committed."""
    state = await database.read(lambda c: st.load(c, name))
    assert state is not None, f"no stored state for {name}"
    return state
