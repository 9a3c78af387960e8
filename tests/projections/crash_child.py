"""Runs a counting projection over an SQLite store until it is killed; driven by
tests/projections/test_crash.py.

Run by path: ``python crash_child.py PATH MODE SEED``. Prints ``{"ready": true}`` once the
store is open, then appends events from one task while a ``ProjectionRunner`` follows the
log with ``Counter``. MODE ``follow`` only follows, printing ``{"following": true}`` once
the checkpoint is past position 1; MODE ``rebuild`` also rebuilds the projection beside its
live tables, printing ``{"rebuilt_to": position}`` after each
committed rebuild batch and ``{"switched": generation}`` once the new build is live (every
line is written only after what it reports was committed).
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
            "INSERT INTO {stream_counts} VALUES (?, 1, ?) ON CONFLICT (stream)"
            " DO UPDATE SET events = events + 1, amount = amount + excluded.amount",
            (event.stream, n),
        )
        db.execute(
            "INSERT INTO {totals} VALUES (1, 1, ?) ON CONFLICT (id)"
            " DO UPDATE SET events = events + 1, amount = amount + excluded.amount",
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


async def run(path: str, mode: str, seed: int) -> None:
    rng = random.Random(seed)
    async with eskit.open_store(f"sqlite:///{path}") as store:
        say({"ready": True})

        async def append() -> None:
            """Keep the log growing while the projection works (and the parent kills)."""
            while True:
                stream = f"count-{rng.randrange(STREAMS)}"
                await store.append(stream, events(rng, rng.randint(1, 10)))

        appending = asyncio.create_task(append())
        async with ProjectionRunner(store, [Counter()]) as runner:
            if mode == "follow":
                await runner.wait_until(1)
                say({"following": True})
            else:
                await runner.rebuild(
                    Counter.name, progress=lambda position, head: say({"rebuilt_to": position})
                )
                state = runner.worker(Counter.name).state
                assert state is not None
                say({"switched": state.generation})
            await appending  # runs until the parent kills this process


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], sys.argv[2], int(sys.argv[3])))
