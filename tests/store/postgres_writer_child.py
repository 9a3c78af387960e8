"""Appends to a PostgreSQL store with injected faults; driven by tests/store/test_postgres.py.

Run by path: ``python postgres_writer_child.py URL WRITER SEED SECONDS TASKS``. Prints
``{"ready": true}`` once the store is open, waits for a line on stdin (so that every writer
starts at once), then appends from TASKS concurrent tasks for SECONDS seconds and prints one
JSON line per outcome, only after ``append`` returned:

- ``{"ok": [ids], "stream", "last_version", "last_position"}``: acknowledged;
- ``{"failed": [ids], "stream", "error"}``: refused (``WrongExpectedVersion``) or rolled back
  (``StoreError``); the ids may be appended again later (an idempotent retry);

and at the end ``{"done": true, "transactions": n, "rollbacks": n}``.

``store.before_commit`` sleeps 0-20 ms inside every write transaction (holding the head
row's lock, so other processes wait) and raises in about 10% of them, rolling it back.
Streams are shared by all writers (``soak-N``, so appends conflict across processes) or
owned by one task; half of the appends expect the version they just read, half ``ANY``. A
rolled-back append is retried once with the same ids.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid
from typing import Any

import eskit
from eskit.store.postgres import PostgresStore

SHARED_STREAMS = 6
ROLLBACK_RATE = 0.1
MAX_HOLD = 0.020


class InjectedRollback(Exception):
    """Raised by the before_commit hook to roll a transaction back."""


async def run(url: str, writer: int, seed: int, seconds: float, tasks: int) -> None:
    rng = random.Random(seed)
    counts = {"transactions": 0, "rollbacks": 0}
    store = eskit.open_store(url)
    assert isinstance(store, PostgresStore)

    async def before_commit() -> None:
        counts["transactions"] += 1
        await asyncio.sleep(rng.uniform(0, MAX_HOLD))
        if rng.random() < ROLLBACK_RATE:
            counts["rollbacks"] += 1
            raise InjectedRollback("injected rollback")

    def report(line: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    async with store:
        store.before_commit = before_commit
        report({"ready": True})
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        deadline = time.monotonic() + seconds

        async def attempt(
            stream: str, ids: list[uuid.UUID], expected: eskit.ExpectedVersion, task: int
        ) -> bool:
            """One append; True if it was rolled back by the hook (worth retrying)."""
            events = [
                eskit.NewEvent("SoakTested", {"writer": writer, "task": task, "n": n}, id=id_)
                for n, id_ in enumerate(ids)
            ]
            texts = [str(id_) for id_ in ids]
            try:
                result = await store.append(stream, events, expected)
            except eskit.WrongExpectedVersion:
                report({"failed": texts, "stream": stream, "error": "WrongExpectedVersion"})
                return False
            except eskit.StoreError as error:
                if not isinstance(error.__cause__, InjectedRollback):
                    raise  # not a fault of the test's making: the parent sees the traceback
                report({"failed": texts, "stream": stream, "error": "StoreError"})
                return True
            report(
                {
                    "ok": texts,
                    "stream": stream,
                    "last_version": result.last_version,
                    "last_position": result.last_position,
                }
            )
            return False

        async def append_until_deadline(task: int) -> None:
            own = [f"w{writer}t{task}-{n}" for n in range(2)]
            while time.monotonic() < deadline:
                if rng.random() < 0.5:
                    stream = f"soak-{rng.randrange(SHARED_STREAMS)}"
                else:
                    stream = rng.choice(own)
                expected: eskit.ExpectedVersion = eskit.ANY
                if rng.random() < 0.5:
                    version = await store.stream_version(stream)
                    expected = eskit.NO_STREAM if version is None else version
                ids = [uuid.uuid4() for _ in range(rng.randint(1, 3))]
                if await attempt(stream, ids, expected, task):
                    await attempt(stream, ids, expected, task)

        await asyncio.gather(*(append_until_deadline(task) for task in range(tasks)))
    report({"done": True, **counts})


if __name__ == "__main__":
    url, writer, seed, seconds, tasks = sys.argv[1:]
    asyncio.run(run(url, int(writer), int(seed), float(seconds), int(tasks)))
