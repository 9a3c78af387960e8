"""E workloads: what encrypting sensitive fields costs per event, measured in one run.

``python -m benchmarks.encryption [--events N] [--repeat R] [--dir PATH]``

The same events are written and read twice: once as a class without sensitive fields,
once as the same class with two of its four fields marked ``Sensitive`` (each encrypted
with AES-256-GCM under one of 1,000 subjects' keys). Both sides write through the
``Repository`` (typed event -> envelope -> SQLite store, 10 events per append) and read
the whole log back through the registry (``read_all`` + ``decode``). The encrypting side
uses a SQLite key store file whose keys were created before the clock starts (the steady
state: subjects already known, keys cached); creating a key is timed on its own, as it is
paid once per subject (a durable write to the key store). ``codec`` rows time encode /
decode alone, without the store, to isolate the cryptography.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

from rich.table import Table

import eskit
from benchmarks.report import console
from eskit.application import Repository
from eskit.domain import Aggregate, EventRegistry
from eskit.privacy import Keyring, MasterKey, Sensitive, open_keystore
from eskit.store.model import RecordedEvent

SUBJECTS = 1_000
PER_APPEND = 10


@dataclasses.dataclass(frozen=True)
class Plain:
    customer_id: str
    email: str
    name: str
    amount: int


@dataclasses.dataclass(frozen=True)
class Sealed:
    customer_id: str
    email: Annotated[str, Sensitive(subject="customer_id")]
    name: Annotated[str, Sensitive(subject="customer_id")]
    amount: int


class Customer(Aggregate):
    """Only its stream naming matters here: the workloads save, they never load."""

    category = "customer"


@dataclasses.dataclass
class Side:
    """One side of the comparison: its registry and the events it writes."""

    name: str
    events: EventRegistry
    items: list[object]


def events_of(cls: type[Any], count: int) -> list[object]:
    return [
        cls(f"c-{i % SUBJECTS}", f"customer{i % SUBJECTS}@example.com", f"Name {i}", i)
        for i in range(count)
    ]


def registry(cls: type[Any], keyring: Keyring | None) -> EventRegistry:
    events = EventRegistry()
    events.register("CustomerUpdated")(cls)
    events.encrypt_with(keyring)
    return events


async def append_all(store: eskit.EventStore, side: Side) -> int:
    repository = Repository(store, side.events, Customer.model())
    for start in range(0, len(side.items), PER_APPEND):
        batch = side.items[start : start + PER_APPEND]
        stream = f"customer-{uuid.uuid4().hex[:12]}"
        new = repository.to_new_events(batch, stream=stream)
        await store.append(stream, new)
    return len(side.items)


async def read_all(store: eskit.EventStore, side: Side) -> int:
    decode, count = side.events.decode, 0
    async for recorded in store.read_all():
        count += len(decode(recorded))
    return count


def codec(side: Side, recorded: list[RecordedEvent]) -> int:
    """Encode every event and decode every stored one, without a store: the events
    that went both ways."""
    encode, decode = side.events.encode, side.events.decode
    event_id = uuid.uuid4()
    for item in side.items:
        encode(item, stream="customer-x", event_id=event_id)
    for stored in recorded:
        decode(stored)
    return min(len(side.items), len(recorded))


async def timed(work: Callable[[], Awaitable[int]]) -> tuple[int, float]:
    start = time.perf_counter()
    count = await work()
    return count, time.perf_counter() - start


async def run_side(side: Side, directory: Path) -> dict[str, float]:
    """Events/s of append, read+decode and codec for one side (fresh store file)."""
    rates: dict[str, float] = {}
    async with eskit.open_store(f"sqlite:///{directory}/{side.name}.db") as store:
        count, seconds = await timed(lambda: append_all(store, side))
        rates["append"] = count / seconds
        count, seconds = await timed(lambda: read_all(store, side))
        rates["read + decode"] = count / seconds
        stored = [e async for e in store.read_all()]

        async def in_memory() -> int:
            return codec(side, stored)

        count, seconds = await timed(in_memory)
        rates["codec (encode + decode)"] = count / seconds
    return rates


async def main(count: int, repeat: int, directory: Path | None) -> None:
    out = console()
    out.print(
        f"[dim]{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs · Python"
        f" {platform.python_version()} · SQLite {sqlite3.sqlite_version} · cryptography"
        f" {metadata.version('cryptography')}[/]",
        highlight=False,
    )
    best: dict[str, dict[str, float]] = {"plain": {}, "encrypted": {}}
    key_rate = 0.0
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            path = Path(tmp)
            keyring = Keyring(open_keystore(f"sqlite:///{path}/keys.db"), MasterKey.generate())
            start = time.perf_counter()
            for i in range(SUBJECTS):  # the keys exist before the clock starts
                keyring.key_for(f"c-{i}")
            key_rate = max(key_rate, SUBJECTS / (time.perf_counter() - start))
            sides = [
                Side("plain", registry(Plain, None), events_of(Plain, count)),
                Side("encrypted", registry(Sealed, keyring), events_of(Sealed, count)),
            ]
            for side in sides:
                for workload, rate in (await run_side(side, path)).items():
                    best[side.name][workload] = max(best[side.name].get(workload, 0.0), rate)
            keyring.close()
    out.print(report(best, count, repeat, key_rate))


def report(best: dict[str, dict[str, float]], count: int, repeat: int, key_rate: float) -> Table:
    table = Table(
        title=f"E: encrypting 2 of 4 fields, {count:,} events, best of {repeat}",
        caption=f"creating a subject key (once per subject, durable): {key_rate:,.0f} keys/s",
        caption_justify="left",
    )
    for column in ("workload", "plain ev/s", "encrypted ev/s", "ratio", "extra µs/event"):
        table.add_column(column, justify="left" if column == "workload" else "right")
    for workload, plain in best["plain"].items():
        sealed = best["encrypted"][workload]
        extra = 1e6 / sealed - 1e6 / plain
        table.add_row(
            workload, f"{plain:,.0f}", f"{sealed:,.0f}", f"{sealed / plain:.2f}", f"{extra:.1f}"
        )
    return table


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.encryption", description=__doc__)
    parser.add_argument("--events", type=int, default=20_000, help="events per side")
    parser.add_argument("--repeat", type=int, default=1, help="runs; best is kept")
    parser.add_argument("--dir", type=Path, help="where temporary databases go")
    args = parser.parse_args(argv)
    if args.events < PER_APPEND or args.repeat < 1:
        parser.error(f"--events must be at least {PER_APPEND} and --repeat at least 1")
    return args


if __name__ == "__main__":
    options = parse()
    asyncio.run(main(options.events, options.repeat, options.dir))
