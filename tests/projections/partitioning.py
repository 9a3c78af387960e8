"""What the partitioned-worker tests share: a read model that refuses events out of order,
its twin that chokes on poison, and waits on the stored partitions.

``Ordered`` keeps, per stream, the next version it expects and how many events it applied:
an event applied twice, skipped or out of order raises, which a test sees as a worker that
stops advancing and as a wrong count. ``Poisoned`` is ``Ordered`` whose handler raises on
``Poison`` events (always, or for their first few tries).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable

import eskit
from eskit.projections import (
    Database,
    ReadModelConnection,
    SQLProjection,
    handles,
    leases,
)
from eskit.store.model import RecordedEvent


class Ordered(SQLProjection):
    """Events per stream, in version order or not at all."""

    name = "ordered"
    batch_size = 50
    tables = ("ordered",)
    schema = (
        "CREATE TABLE {ordered} (stream TEXT PRIMARY KEY, next BIGINT NOT NULL,"
        " events BIGINT NOT NULL)",
    )
    paused = threading.Event()
    resume = threading.Event()

    def __init__(self, pause_on: str | None = None, strict: bool = True) -> None:
        self.pause_on = pause_on
        """A stream whose first event makes the handler wait for ``resume``: a worker
        paused in the middle of a batch."""
        self.strict = strict
        """Refuse an event out of order; a paused worker counts blindly instead, so that
        only the lease check can stop its late batch from counting events twice."""

    @handles("Added")
    def added(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        if event.stream == self.pause_on and event.version == 0:
            self.paused.set()
            self.resume.wait(30)
        row = db.execute("SELECT next FROM {ordered} WHERE stream = ?", (event.stream,))
        found = row.fetchone()
        expected = 0 if found is None else found[0]
        if self.strict and event.version != expected:
            raise AssertionError(f"{event.stream}: got v{event.version}, expected v{expected}")
        db.execute(
            (
                "INSERT INTO {ordered} VALUES (?, ?, 1) ON CONFLICT (stream) DO UPDATE"
                " SET next = excluded.next, events = {ordered}.events + 1"
            ),
            (event.stream, event.version + 1),
        )


class Poisoned(Ordered):
    """``Ordered`` that raises on a ``Poison`` event: every time, or only for the first
    ``fails`` tries of each, after which it counts as any event."""

    def __init__(self, fails: int | None = None) -> None:
        super().__init__()
        self.fails = fails
        self.tries: Counter[int] = Counter()
        """Handler calls per poison event position: what the retries cost."""

    @handles("Poison")
    def poison(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        self.tries[event.position] += 1
        if self.fails is None or self.tries[event.position] <= self.fails:
            raise RuntimeError("cannot digest poison")
        self.added(event, db)


async def fill(store: eskit.EventStore, streams: int, each: int, prefix: str = "s") -> int:
    """``each`` events on each of ``streams`` streams, interleaved; the last position."""
    last = 0
    for _ in range(each):
        for s in range(streams):
            result = await store.append(f"{prefix}-{s}", [eskit.NewEvent("Added", {})])
            last = result.last_position
    return last


async def ordered_counts(db: Database) -> dict[str, int]:
    rows = await db.read(lambda c: c.execute("SELECT stream, events FROM ordered").fetchall())
    return {stream: events for stream, events in rows}


async def eventually(check: Callable[[], bool], within: float = 10.0) -> None:
    """Wait until ``check()`` holds (polled: it reads state other tasks change)."""
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 (no event to wait on: workers' fields)
            await asyncio.sleep(0.05)


async def all_at(
    db: Database, name: str, position: int, within: float = 20.0, but: int | None = None
) -> None:
    """Wait until every partition of ``name`` (``but`` one) is checkpointed at
    ``position`` or later."""
    async with asyncio.timeout(within):
        while True:
            rows = await db.read(lambda c: leases.partitions(c, name))
            if rows and all(r.position >= position for r in rows if r.partition != but):
                return
            await asyncio.sleep(0.05)


async def stuck(db: Database, name: str, within: float = 20.0) -> list[leases.PartitionRow]:
    """Wait until a partition of ``name`` is stuck; the stuck ones."""
    async with asyncio.timeout(within):
        while True:
            rows = await db.read(lambda c: leases.partitions(c, name))
            if found := [row for row in rows if row.stuck]:
                return found
            await asyncio.sleep(0.05)
