"""S workloads: what a search index costs to build, query and forget in, on each engine.

``python -m benchmarks.search [--invoices N] [--postgres URL]``

The invoicing example's ``InvoiceSearch`` is built by a ``ProjectionRunner`` from a memory
store holding ``N`` invoices of 1,000 customers (each registered, then per invoice: created,
three lines, issued: 5 events), into a SQLite file and, with ``--postgres``, a PostgreSQL
schema of its own (dropped after). Timed: the build (events/s), 200 searches of one or two
words with ``limit=10`` (median and 95th percentile), the same filtered by status, and one
forget (a ``SubjectForgotten`` record applied: on SQLite it merges the whole FTS5 index).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import statistics
import tempfile
import time
from pathlib import Path

from examples.invoicing.events import (
    CustomerRegistered,
    InvoiceCreated,
    InvoiceIssued,
    InvoiceLineAdded,
    events,
)
from examples.invoicing.search import InvoiceSearch, search_invoices
from rich.table import Table

from benchmarks.report import console
from eskit.domain.events import SCHEMA_VERSION
from eskit.projections import Database, PostgresDatabase, ProjectionRunner, SQLiteDatabase
from eskit.store.memory import MemoryStore
from eskit.store.model import NewEvent

CUSTOMERS = 1_000
SKUS = [f"{word}-{n}" for word in ("lamp", "book", "pen", "desk", "cable") for n in range(40)]
NAMES = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "John"]
QUERIES = 200


def new(event: object) -> NewEvent:
    entry, data = events.encode(event)
    return NewEvent(entry.name, data, {SCHEMA_VERSION: entry.version})


async def fill(store: MemoryStore, invoices: int) -> int:
    rng = random.Random(7)
    due, now = dt.date(2024, 5, 31), dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    for c in range(CUSTOMERS):
        name = f"{rng.choice(NAMES)} {rng.choice(NAMES)}son c{c}"
        await store.append(f"customer-c{c}", [new(CustomerRegistered(f"c{c}", name, f"c{c}@x"))])
    for i in range(invoices):
        lines = [new(InvoiceLineAdded(rng.choice(SKUS), 100)) for _ in range(3)]
        created = new(InvoiceCreated(f"i{i}", f"c{rng.randrange(CUSTOMERS)}", "EUR", due))
        await store.append(f"invoice-i{i}", [created, *lines, new(InvoiceIssued(now, 300))])
    return await store.last_position()


def percentile(samples: list[float], q: float) -> float:
    return sorted(samples)[min(len(samples) - 1, int(q * len(samples)))]


async def measure(engine: str, database: Database, invoices: int) -> list[str]:
    store = MemoryStore()
    await store.open()
    total = await fill(store, invoices)
    rng = random.Random(11)
    row = [engine, f"{invoices:,}"]
    async with ProjectionRunner(store, [InvoiceSearch()], database=database) as runner:
        started = time.perf_counter()
        await runner.run_until_caught_up()
        row.append(f"{total / (time.perf_counter() - started):,.0f}")
        for status in (None, "issued"):
            samples = []
            for _ in range(QUERIES):
                words = " ".join(rng.sample([*NAMES, *SKUS[:20]], rng.choice((1, 2))))
                began = time.perf_counter()
                await search_invoices(runner.database, words.lower(), status=status)
                samples.append((time.perf_counter() - began) * 1000)
            row.append(f"{statistics.median(samples):.2f} / {percentile(samples, 0.95):.2f}")
        forgotten = {"subject": "c1", "key_ids": [], "by": "bench"}
        await store.append("privacy-forgotten", [NewEvent("SubjectForgotten", forgotten)])
        began = time.perf_counter()
        await runner.run_until_caught_up()
        row.append(f"{(time.perf_counter() - began) * 1000:,.0f}")
    await store.close()
    return row


async def main(invoices: int, postgres: str | None) -> None:
    table = Table(title=f"InvoiceSearch: build, {QUERIES} queries, one forget")
    for column in ("engine", "invoices", "build events/s", "query ms p50 / p95"):
        table.add_column(column)
    table.add_column("filtered ms p50 / p95")
    table.add_column("forget ms")
    with tempfile.TemporaryDirectory() as directory:
        sqlite = SQLiteDatabase(Path(directory) / "search.db")
        table.add_row(*await measure("SQLite FTS5", sqlite, invoices))
        await sqlite.close()
    if postgres is not None:
        schema = f"bench_search_{int(time.time())}"
        pg = PostgresDatabase(url=postgres, schema=schema)
        try:
            table.add_row(*await measure("PostgreSQL tsvector", pg, invoices))
        finally:
            await pg.write(lambda conn: conn.execute(f'DROP SCHEMA "{schema}" CASCADE'))
            await pg.close()
    console().print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=20_000)
    parser.add_argument("--postgres", help="a PostgreSQL URL (a schema of its own is used)")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.invoices, arguments.postgres))
