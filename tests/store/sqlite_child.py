"""A second process on the same SQLite file, driven by tests/store/test_sqlite.py.

Run by path: ``python sqlite_child.py MODE PATH ...``. It talks JSON lines on stdout (one
object per line, flushed at once) so the parent can follow it without sleeping.

- ``subscribe PATH COUNT [readonly]``: print ``{"ready": last_position}``, then follow the
  store and print ``{"i", "position", "latency"}`` for each of the next COUNT events, where
  latency is the wall-clock time since the ``t`` the writer put in the event's data. With
  ``readonly``, the store is opened with ``readonly=True``.
- ``write PATH NAME COUNT``: print ``{"ready": NAME}``, wait for a line on stdin, then append
  COUNT events to the shared stream ``shared-x`` (retrying on WrongExpectedVersion) and COUNT
  to its own stream ``own-NAME`` (exact expected versions), concurrently. Prints each
  acknowledged append as ``{"stream", "last_version", "last_position"}`` and finally
  ``{"done": NAME, "retries": n}``.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

import eskit

SHARED_STREAM = "shared-x"


def say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def url(path: str) -> str:
    return f"sqlite:///{path}"  # an absolute path gives sqlite:////abs/path


async def subscribe(path: str, count: int, readonly: bool = False) -> None:
    async with eskit.open_store(url(path), readonly=readonly) as store:
        after = await store.last_position()
        say({"ready": after})
        seen = 0
        async for event in store.subscribe(after=after):
            latency = time.time() - event.data["t"]
            say({"i": event.data["i"], "position": event.position, "latency": latency})
            seen += 1
            if seen == count:
                return


async def write(path: str, name: str, count: int) -> None:
    async with eskit.open_store(url(path)) as store:
        say({"ready": name})
        await asyncio.to_thread(sys.stdin.readline)  # the parent says go to both at once
        retries = 0

        async def shared() -> None:
            nonlocal retries
            for i in range(count):
                event = eskit.NewEvent("SharedWritten", {"writer": name, "i": i})
                while True:
                    version = await store.stream_version(SHARED_STREAM)
                    expected: eskit.ExpectedVersion = (
                        eskit.NO_STREAM if version is None else version
                    )
                    try:
                        result = await store.append(SHARED_STREAM, [event], expected)
                    except eskit.WrongExpectedVersion:
                        retries += 1
                        continue
                    break
                say(ack(SHARED_STREAM, result))
                await pause()

        async def own() -> None:
            stream = f"own-{name}"
            for i in range(count):
                event = eskit.NewEvent("OwnWritten", {"writer": name, "i": i})
                expected: eskit.ExpectedVersion = eskit.NO_STREAM if i == 0 else i - 1
                say(ack(stream, await store.append(stream, [event], expected)))
                await pause()

        await asyncio.gather(shared(), own())
        say({"done": name, "retries": retries})


async def pause() -> None:
    """Leave the write lock free now and then: SQLite's busy handler polls, so a process
    that writes without pause can keep the other one out for long stretches."""
    await asyncio.sleep(random.uniform(0, 0.002))


def ack(stream: str, result: eskit.AppendResult) -> dict[str, Any]:
    return {
        "stream": stream,
        "last_version": result.last_version,
        "last_position": result.last_position,
    }


def main(argv: list[str]) -> None:
    mode, path, *rest = argv
    if mode == "subscribe":
        asyncio.run(subscribe(path, int(rest[0]), rest[1:] == ["readonly"]))
    elif mode == "write":
        asyncio.run(write(path, rest[0], int(rest[1])))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
