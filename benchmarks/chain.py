"""The cost of the hash chain: microseconds per event to link (what every append pays, on
the writer's thread) with and without an audit key, and how fast ``eskit verify`` checks a
SQLite log. Run: ``python -m benchmarks.chain [--events N]``."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid

import eskit
from eskit.store import chain
from eskit.store.audit import verify

DATA = '{"invoice_id": "inv-000123", "customer_id": "c-42", "amount": 12000, "currency": "EUR"}'
METADATA = '{"correlation_id": "6f2c7d9e-58a4-4d8b-9a57-0c3f5e0e7a11", "schema_version": 1}'


def link_cost(key: bytes | None, count: int = 200_000) -> float:
    """Microseconds per link of a typical event."""
    event_id, previous = uuid.uuid4().bytes, None
    started = time.perf_counter()
    for version in range(count):
        previous = chain.link(
            previous,
            version + 1,
            "invoice-123",
            version,
            event_id,
            "InvoiceCreated",
            DATA,
            METADATA,
            1,
            key,
        )
    return (time.perf_counter() - started) / count * 1e6


async def verify_rate(events: int) -> float:
    """Events per second ``verify`` checks on a SQLite file of ``events`` events."""
    with tempfile.TemporaryDirectory() as directory:
        async with eskit.open_store(f"sqlite:///{directory}/events.db") as store:
            for start in range(0, events, 100):
                stream = f"invoice-{start // 1000}"
                await store.append(stream, [eskit.NewEvent("E", {"n": n}) for n in range(100)])
            started = time.perf_counter()
            report = await verify(store)
            elapsed = time.perf_counter() - started
            assert report.ok, report.problems
            assert report.events == events
            return events / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    events = parser.parse_args().events
    print(f"link, BLAKE2b-256:         {link_cost(None):.2f} µs/event")
    print(f"link, keyed (audit key):   {link_cost(bytes(32)):.2f} µs/event")
    print(f"verify, SQLite:            {asyncio.run(verify_rate(events)):,.0f} events/s")


if __name__ == "__main__":
    main()
