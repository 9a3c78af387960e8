"""Appends to an SQLite store until it is killed; driven by tests/store/test_sqlite_crash.py.

Run by path: ``python crash_child.py PATH SEED``. Prints ``{"ready": true}`` once the store
is open, then one JSON line per acknowledged append, written and flushed only after
``append`` returned (so every line is a promise the store must keep after a crash):
``{"stream", "last_version", "last_position", "size", "batch", "ids"}``.

Several tasks append concurrently (so commits hold groups of appends): one per stream
``crash-N`` with exact expected versions, and two that append to ``crash-any`` with ANY.
Batches are single events or 5-10 events; each event's metadata carries its batch id, the
batch size and its index in the batch, so the parent can tell a partial batch.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import uuid

import eskit

OWN_STREAMS = 6
ANY_STREAM = "crash-any"
ANY_WRITERS = 2


async def run(path: str, seed: int) -> None:
    rng = random.Random(seed)
    async with eskit.open_store(f"sqlite:///{path}") as store:
        streams = [f"crash-{n}" for n in range(OWN_STREAMS)]
        versions = [await store.stream_version(s) for s in streams]
        print(json.dumps({"ready": True}), flush=True)

        async def append(stream: str, expected: eskit.ExpectedVersion) -> eskit.AppendResult:
            size = 1 if rng.random() < 0.5 else rng.randint(5, 10)
            batch = uuid.uuid4().hex
            ids = [uuid.uuid4() for _ in range(size)]
            pad = "p" * rng.choice((0, 10, 300, 3000))
            events = [
                eskit.NewEvent(
                    "CrashTested",
                    {"index": index, "pad": pad},
                    metadata={"batch": batch, "size": size, "index": index},
                    id=id_,
                )
                for index, id_ in enumerate(ids)
            ]
            result = await store.append(stream, events, expected)
            line = {
                "stream": stream,
                "last_version": result.last_version,
                "last_position": result.last_position,
                "size": size,
                "batch": batch,
                "ids": [str(i) for i in ids],
            }
            print(json.dumps(line), flush=True)
            return result

        async def own(stream: str, version: int | None) -> None:
            while True:
                expected: eskit.ExpectedVersion = eskit.NO_STREAM if version is None else version
                version = (await append(stream, expected)).last_version

        async def anywhere() -> None:
            while True:
                await append(ANY_STREAM, eskit.ANY)

        await asyncio.gather(
            *(own(s, v) for s, v in zip(streams, versions, strict=True)),
            *(anywhere() for _ in range(ANY_WRITERS)),
        )


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], int(sys.argv[2])))
