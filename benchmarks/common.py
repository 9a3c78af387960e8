"""What both sides share: the event shape, where events go, and how a run is measured."""

from __future__ import annotations

import dataclasses
import math
import random
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeAlias

import msgspec

from eskit import EventStore, NewEvent
from eskit.store import sqlite_schema

EVENT_TYPE = "InvoiceIssued"

Payload: TypeAlias = tuple[dict[str, Any], dict[str, Any]]
"""The data and metadata of one event."""
RawRow: TypeAlias = tuple[bytes, str, int, str, str, str, int]
"""(id, stream, version, type, data JSON, metadata JSON, recorded_at µs), as raw writes it."""


@dataclasses.dataclass(frozen=True)
class Measurement:
    """How much one timed run did (events, commands or loads) and how long it took."""

    count: int
    seconds: float
    latencies: tuple[float, ...] = ()
    """Seconds each item took, for workloads that report percentiles."""

    def percentile_ms(self, q: float) -> float:
        """The ``q``-th percentile of the latencies in ms (nearest rank)."""
        if not self.latencies:
            return float("inf")
        ordered = sorted(self.latencies)
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        return 1_000 * ordered[rank - 1]

    @property
    def rate(self) -> float:
        """Items (events, commands, loads) per second."""
        return self.count / self.seconds if self.seconds > 0 else float("inf")

    @property
    def ms_each(self) -> float:
        """Milliseconds per item (for loads)."""
        return 1_000 * self.seconds / self.count if self.count else float("inf")


def payloads(count: int, seed: int = 0) -> list[Payload]:
    """``count`` events of 4 small fields plus correlation/causation ids (~200 bytes JSON)."""
    rng = random.Random(seed)

    def uid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    return [
        (
            {
                "invoice_id": f"inv-{i:06d}",
                "customer_id": f"cus-{i % 10_000:04d}",
                "amount": 1_000 + rng.randrange(100_000),
                "currency": "EUR",
            },
            {"correlation_id": uid(), "causation_id": uid()},
        )
        for i in range(count)
    ]


def placements(count: int, per_stream: int, prefix: str = "invoice") -> list[tuple[str, int]]:
    """(stream, version) of ``count`` events written ``per_stream`` to a stream, in order."""
    return [(f"{prefix}-{i // per_stream}", i % per_stream) for i in range(count)]


def new_events(items: list[Payload]) -> list[NewEvent]:
    """The events as eskit takes them (eskit gives them ids and encodes them itself)."""
    return [NewEvent(EVENT_TYPE, data, metadata) for data, metadata in items]


def event_ids(count: int, start: int = 0) -> list[bytes]:
    """``count`` distinct, time-ordered 16-byte ids shaped like UUIDv7 (as eskit writes)."""
    prefix = (time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | 0x2 << 62
    return [(prefix | n).to_bytes(16, "big") for n in range(start, start + count)]


def raw_rows(where: list[tuple[str, int]], items: list[Payload], id_start: int = 0) -> list[RawRow]:
    """The rows raw sqlite3 writes, prepared in advance: ids made, JSON encoded."""
    encode = msgspec.json.encode
    now = time.time_ns() // 1_000
    ids = event_ids(len(items), id_start)
    return [
        (id_, stream, version, EVENT_TYPE, encode(data).decode(), encode(meta).decode(), now)
        for id_, (stream, version), (data, meta) in zip(ids, where, items, strict=True)
    ]


ESKIT_INSERT = (
    "INSERT INTO events (id, stream, category, version, type, data, metadata, recorded_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def eskit_rows(items: list[Payload], start: int, per_stream: int) -> list[tuple[Any, ...]]:
    """Rows of eskit's own events table for events ``start``, ``start + 1``, ... of a log
    written ``per_stream`` to a stream (streams ``invoice-N``, category ``invoice``)."""
    encode = msgspec.json.encode
    now = time.time_ns() // 1_000
    ids = event_ids(len(items), start)
    return [
        (
            ids[i],
            f"invoice-{(start + i) // per_stream}",
            "invoice",
            (start + i) % per_stream,
            EVENT_TYPE,
            encode(data).decode(),
            encode(meta).decode(),
            now,
        )
        for i, (data, meta) in enumerate(items)
    ]


def fill_log(path: Path, chunks: Iterable[list[Payload]], per_stream: int) -> None:
    """A new file with eskit's own schema holding the events of ``chunks``, one transaction
    per chunk, written with the raw driver (``synchronous=OFF``: setup, never timed) and
    checkpointed, so that eskit and raw sqlite3 read the very same table."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        sqlite_schema.migrate(conn, str(path))
        start = 0
        for items in chunks:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(ESKIT_INSERT, eskit_rows(items, start, per_stream))
            conn.execute("COMMIT")
            start += len(items)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def event_size(item: Payload) -> int:
    """Bytes of JSON of one event's data plus metadata."""
    return len(msgspec.json.encode(item[0])) + len(msgspec.json.encode(item[1]))


async def catch_up(
    store: EventStore, last: int, sample: Callable[[], None] | None = None
) -> tuple[int, float]:
    """Subscribe from 0 and stop at position ``last``: the events seen and the seconds it
    took. ``sample`` runs every 10,000 events (closing the subscription is not timed)."""
    count = 0
    start = time.perf_counter()
    subscription = store.subscribe(after=0)
    async for event in subscription:
        count += 1
        if sample is not None and count % 10_000 == 0:
            sample()
        if event.position >= last:
            break
    elapsed = time.perf_counter() - start
    close: Any = getattr(subscription, "aclose", None)
    if close is not None:
        await close()
    return count, elapsed
