"""Follows a PostgreSQL store's log; driven by tests/store/test_postgres.py.

Run by path: ``python postgres_subscriber_child.py URL AFTER PAGE_SIZE POLL_INTERVAL STOP``.
Subscribes from position AFTER with the given page size and poll interval, prints
``ready`` once the store is open, then one line per delivered event, flushed at once:
``POSITION EVENT_ID MONOTONIC_SECONDS`` (the clock is the machine's, shared by processes).
After STOP events (0: never) it leaves the subscription, closes the store and exits 0;
otherwise it runs until it is killed.
"""

from __future__ import annotations

import asyncio
import sys
import time

import eskit


async def run(url: str, after: int, page_size: int, poll_interval: float, stop: int) -> None:
    async with eskit.open_store(url) as store:
        store.page_size = page_size
        store.poll_interval = poll_interval
        print("ready", flush=True)
        delivered = 0
        async for event in store.subscribe(after=after):
            sys.stdout.write(f"{event.position} {event.id} {time.monotonic()}\n")
            sys.stdout.flush()
            delivered += 1
            if delivered == stop:
                break


if __name__ == "__main__":
    url, after, page_size, poll_interval, stop = sys.argv[1:]
    asyncio.run(run(url, int(after), int(page_size), float(poll_interval), int(stop)))
