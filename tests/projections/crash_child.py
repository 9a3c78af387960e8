"""Runs a counting projection over a SQLite or PostgreSQL store until it is killed; driven
by tests/projections/test_crash.py.

Run from the repository's root: ``python -m tests.projections.crash_child URL MODE SEED``
(``sqlite:///path`` or ``postgresql://...?schema=name``). Prints ``{"ready": true}`` once the
store is open, then appends events from one task while a ``ProjectionRunner`` follows the
log with ``Counter``. MODE ``follow`` only follows, printing ``{"following": true}`` once
the checkpoint is past position 1 and ``{"live": true}`` once it has caught up with the log
as it was at the start; MODE ``rebuild`` also rebuilds the projection beside its live
tables, printing ``{"rebuilt_to": position}`` after each committed rebuild batch and
``{"switched": generation}`` once the new build is live (every line is written only after
what it reports was committed).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys

import eskit
from eskit.projections import ProjectionRunner, ReadModelConnection, SQLProjection, handles
from eskit.store.model import RecordedEvent

STREAMS = 50
COUNTED = "Counted"
IGNORED = "Ignored"
AHEAD = 1_000  # events the appender may be ahead of the live build (see Pace)


class Counter(SQLProjection):
    """Counts ``Counted`` events and sums their ``n``, per stream and in total: any event
    applied twice or lost changes a count."""

    name = "counts"
    batch_size = 200
    tables = ("stream_counts", "totals")
    schema = (
        "CREATE TABLE {stream_counts} (stream TEXT PRIMARY KEY, events INTEGER NOT NULL,"
        " amount INTEGER NOT NULL)",
        "CREATE TABLE {totals} (id INTEGER PRIMARY KEY CHECK (id = 1), events INTEGER NOT NULL,"
        " amount INTEGER NOT NULL)",
    )

    @handles(COUNTED)
    def counted(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        n = event.data["n"]
        db.execute(
            (
                "INSERT INTO {stream_counts} VALUES (?, 1, ?) ON CONFLICT (stream) DO UPDATE"
                " SET events = {stream_counts}.events + 1,"
                " amount = {stream_counts}.amount + excluded.amount"
            ),
            (event.stream, n),
        )
        db.execute(
            (
                "INSERT INTO {totals} VALUES (1, 1, ?) ON CONFLICT (id) DO UPDATE"
                " SET events = {totals}.events + 1, amount = {totals}.amount + excluded.amount"
            ),
            (n,),
        )


def events(rng: random.Random, count: int) -> list[eskit.NewEvent]:
    """``count`` events, about one in five of a type the projection does not handle."""
    return [
        eskit.NewEvent(IGNORED, {}) if rng.random() < 0.2 else eskit.NewEvent(COUNTED, {"n": n})
        for n in (rng.randint(1, 100) for _ in range(count))
    ]


def say(line: dict[str, object]) -> None:
    print(json.dumps(line), flush=True)


class Pace:
    """Keeps the appender behind the projection: at most ``AHEAD`` events ahead of the live
    build, and while a rebuild runs, one append per rebuild batch. On PostgreSQL one
    appending task can outrun projections sharing the CPU with it, and a log that grows
    as fast as a rebuild reads it would keep the rebuild from ever finishing."""

    def __init__(self, runner: ProjectionRunner, rebuilding: bool) -> None:
        self.runner = runner
        self.rebuilding = rebuilding
        self.moved = asyncio.Event()
        """Set when the rebuild commits a batch, or ends."""

    def rebuilt_batch(self) -> None:
        self.moved.set()

    def rebuilt(self) -> None:
        self.rebuilding = False
        self.moved.set()

    async def wait(self, written: int) -> None:
        await self.runner.wait_until(written - AHEAD)
        if self.rebuilding:
            self.moved.clear()
            await self.moved.wait()


async def run(url: str, mode: str, seed: int) -> None:
    rng = random.Random(seed)
    async with eskit.open_store(url) as store:
        say({"ready": True})
        backlog = await store.last_position()

        async def append(pace: Pace) -> None:
            """Keep the log growing while the projection works (and the parent kills)."""
            while True:
                stream = f"count-{rng.randrange(STREAMS)}"
                written = await store.append(stream, events(rng, rng.randint(1, 10)))
                await pace.wait(written.last_position)

        async with ProjectionRunner(store, [Counter()]) as runner:
            pace = Pace(runner, rebuilding=mode == "rebuild")
            appending = asyncio.create_task(append(pace))
            if mode == "follow":
                await runner.wait_until(1)
                say({"following": True})
                await runner.wait_until(backlog)
                say({"live": True})
            else:

                def progress(position: int, head: int) -> None:
                    say({"rebuilt_to": position})
                    pace.rebuilt_batch()

                await runner.rebuild(Counter.name, progress=progress)
                pace.rebuilt()
                state = runner.worker(Counter.name).state
                assert state is not None
                say({"switched": state.generation})
            await appending  # runs until the parent kills this process


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], sys.argv[2], int(sys.argv[3])))
