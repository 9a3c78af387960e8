"""The workloads, their targets, and the runner that measures both sides best-of-N."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Literal

from benchmarks import (
    eskit_side,
    postgres,
    postgres_eskit,
    postgres_processes,
    postgres_raw,
    projection_eskit,
    projection_raw,
    raw,
)
from benchmarks.common import Measurement, Payload, payloads
from benchmarks.projection import BATCH

Side = Literal["eskit", "raw"]
Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Unit:
    """What a workload counts, and whether its speed reads as a rate or as ms per item."""

    counted: str
    """Plural noun: events, commands, loads."""
    in_ms: bool = False
    percentiles: bool = False
    """Latencies: the median and the 99th percentile of each item's time, in ms."""

    @property
    def label(self) -> str:
        if self.percentiles:
            return "ms p50 / p99"
        return f"ms/{self.counted.removesuffix('s')}" if self.in_ms else f"{self.counted}/s"

    def show(self, m: Measurement) -> str:
        """The measurement in this unit, as a table cell."""
        if self.percentiles:
            return f"{milliseconds(m.percentile_ms(50))} / {milliseconds(m.percentile_ms(99))}"
        return milliseconds(m.ms_each) if self.in_ms else f"{m.rate:,.0f}"

    def speed(self, m: Measurement) -> float:
        """Higher is faster: the rate, or for latencies one over the median."""
        return 1 / m.percentile_ms(50) if self.percentiles else m.rate

    def score(self, m: Measurement) -> float:
        """What best-of-N keeps the highest: the speed, or for latencies one over the p99."""
        return 1 / m.percentile_ms(99) if self.percentiles else m.rate


def milliseconds(ms: float) -> str:
    """Three significant digits, no exponent: 0.231, 8.42, 41.7, 1,032."""
    if not math.isfinite(ms) or ms <= 0:
        return f"{ms}"
    decimals = min(3, max(0, 2 - math.floor(math.log10(ms))))
    return f"{ms:,.{decimals}f}"


EVENTS = Unit("events")
COMMANDS = Unit("commands")
LOADS = Unit("loads", in_ms=True)
LATENCY = Unit("appends", percentiles=True)


@dataclasses.dataclass(frozen=True)
class Target:
    """What eskit should reach: a share of the raw rate, an absolute rate, at most
    milliseconds per item or at the 99th percentile, or nothing."""

    kind: Literal["ratio", "absolute", "ms", "p99", "none"]
    value: float = 0.0

    @property
    def label(self) -> str:
        if self.kind == "ratio":
            return f"≥ {self.value:.1f} of raw"
        if self.kind == "absolute":
            return f"≥ {self.value:,.0f}/s"
        if self.kind == "ms":
            return f"≤ {self.value:g} ms"
        if self.kind == "p99":
            return f"p99 < {self.value:g} ms"
        return "—"

    def met(self, eskit: Measurement, raw: Measurement) -> bool | None:
        """True or False, or None when there is no target."""
        if self.kind == "ratio":
            return eskit.rate >= self.value * raw.rate
        if self.kind == "absolute":
            return eskit.rate >= self.value
        if self.kind == "ms":
            return eskit.ms_each <= self.value
        if self.kind == "p99":
            return eskit.percentile_ms(99) < self.value
        return None


@dataclasses.dataclass(frozen=True)
class Workload:
    """One workload: the payloads made for it, what each side runs, the target, how raw is
    done, and what it counts (by default each side must handle ``size`` events)."""

    name: str
    what: str
    size: int
    eskit: Callable[[Path, list[Payload]], Coroutine[Any, Any, Measurement]]
    raw: Callable[[Path, list[Payload]], Measurement]
    target: Target
    raw_note: str
    unit: Unit = EVENTS
    count: int | None = None
    """What each side must report if not ``size`` (e.g. the number of loads)."""
    relative_to: str | None = None
    """Another workload whose eskit time this one's is compared with, in the caption."""
    backend: str = "SQLite, synchronous=FULL, WAL"
    """Where both sides store the events (named in the table's title)."""
    unavailable: Callable[[], str | None] | None = None
    """Why the workload cannot run here (it is skipped), or None when it can."""

    @property
    def expected(self) -> int:
        return self.size if self.count is None else self.count


@dataclasses.dataclass(frozen=True)
class Outcome:
    """Best measurement of each side over the repetitions."""

    workload: Workload
    eskit: Measurement
    raw: Measurement

    @property
    def ratio(self) -> float:
        """Speed of eskit over speed of raw (above 1: eskit is faster), whatever the unit."""
        unit = self.workload.unit
        return unit.speed(self.eskit) / unit.speed(self.raw)

    @property
    def met(self) -> bool | None:
        return self.workload.target.met(self.eskit, self.raw)

    @property
    def count_ok(self) -> bool:
        """Both sides handled (and, for loads, rebuilt correctly) exactly what was expected."""
        return self.eskit.count == self.raw.count == self.workload.expected


def _commands(name: str, what: str, tasks: int, raw_note: str) -> Workload:
    return Workload(
        name,
        what,
        5_000,
        lambda d, items: eskit_side.send_commands(d, items, tasks),
        lambda d, items: asyncio.run(eskit_side.append_created(d, items, tasks)),
        Target("none"),  # the peer-relative targets of benchmarks/peer.py replace 7,650/s
        raw_note,
        unit=COMMANDS,
    )


def _load(
    name: str,
    events: int,
    loads: int,
    snapshots: bool,
    target: Target = Target("none"),
    relative_to: str | None = None,
) -> Workload:
    how = "snapshot at the last event" if snapshots else "no snapshot"
    scan = (
        "the newest snapshot row, then SELECT ... WHERE stream = ? AND version > ? (no rows)"
        if snapshots
        else "SELECT ... WHERE stream = ? ORDER BY version"
    )
    return Workload(
        name,
        f"Repository.load of a {events:,}-event invoice, {how}",
        events,
        lambda d, items: eskit_side.load_invoice(d, items, loads, snapshots),
        lambda d, items: raw.load_invoice(d, items, loads, snapshots),
        target,
        f"{scan}, decoding data and metadata (no objects, no evolve)",
        unit=LOADS,
        count=loads,
        relative_to=relative_to,
    )


LATENCY_APPENDS = 300
CONCURRENT_APPENDS = 320
SPACING = 0.005
"""Seconds between the appends of P2 (each is measured on an otherwise idle runner)."""
LATENCY_TARGET_MS = 50


def _latency(name: str, what: str, appenders: int) -> Workload:
    spacing = SPACING if appenders == 1 else 0.0
    return Workload(
        name,
        f"append-to-visible latency, {what}: append, then runner.wait_until(its position)",
        LATENCY_APPENDS if appenders == 1 else CONCURRENT_APPENDS,
        lambda d, items: projection_eskit.latency(d, items, appenders, spacing),
        lambda d, items: projection_raw.latency(d, items, spacing),
        Target("p99", LATENCY_TARGET_MS),
        "one connection: a transaction appends the event, the next applies it to the read"
        " model and moves the checkpoint (two fsyncs, as eskit), one event after the other",
        unit=LATENCY,
    )


PG_BACKEND = "PostgreSQL, the server's durability settings"
PG_APPENDERS = 50


def _postgres(
    name: str,
    what: str,
    size: int,
    eskit: Callable[[Path, list[Payload]], Coroutine[Any, Any, Measurement]],
    raw: Callable[[Path, list[Payload]], Measurement],
    raw_note: str,
    target: Target = Target("none"),
) -> Workload:
    """A PostgreSQL workload; ``target`` is issue 5's where it sets one."""
    return Workload(
        name,
        what,
        size,
        eskit,
        raw,
        target,
        raw_note,
        backend=PG_BACKEND,
        unavailable=postgres.unavailable,
    )


POSTGRES_WORKLOADS: tuple[Workload, ...] = (
    _postgres(
        "PG1",
        "PostgreSQL: 2,000 appends of 1 event to new streams, one at a time",
        2_000,
        postgres_eskit.append_one_at_a_time,
        postgres_raw.append_one_at_a_time,
        "one autocommit statement per event: UPDATE eskit_head (its row lock keeps positions"
        " gap-free) RETURNING position, INSERT the row at it, COMMIT",
        Target("ratio", 0.8),
    ),
    _postgres(
        "PG2",
        f"PostgreSQL: 5,000 single-event appends from {PG_APPENDERS} concurrent tasks, each"
        " to its own stream (exact expected versions)",
        5_000,
        lambda d, items: postgres_eskit.append_concurrently(d, items, PG_APPENDERS),
        lambda d, items: postgres_raw.append_concurrently(d, items, PG_APPENDERS),
        f"the same statement per event from {PG_APPENDERS} tasks on a pool of"
        f" {PG_APPENDERS} connections: one transaction per event under the same head-row"
        " lock (gap-free positions, commit order = position order, as eskit)",
    ),
    _postgres(
        "PG3",
        "PostgreSQL: 10,000 events into one stream, 100 events per append",
        10_000,
        lambda d, items: postgres_eskit.append_batches(d, items, per_append=100),
        lambda d, items: postgres_raw.append_batches(d, items, per_append=100),
        "per 100 events one transaction: UPDATE eskit_head ... RETURNING position, COPY the"
        " rows, COMMIT",
        Target("absolute", 100_000),
    ),
    _postgres(
        "PG4",
        "PostgreSQL: read_all of 100,000 events in pages of 1,000",
        100_000,
        lambda d, items: postgres_eskit.read_all(d, items, per_stream=100, page=1_000),
        lambda d, items: postgres_raw.read_all(d, items, per_stream=100, page=1_000),
        "SELECT ... FROM eskit_events WHERE position > %s ORDER BY position LIMIT 1000, page"
        " after page, decoding data and metadata",
        Target("ratio", 0.7),
    ),
    _postgres(
        "PG5",
        f"PostgreSQL: projection catch-up over 50,000 events (P1's read model in the"
        f" store's schema, an upsert per event, a checkpoint per batch of {BATCH})",
        50_000,
        postgres_eskit.catch_up,
        postgres_raw.catch_up,
        f"per batch one transaction: SELECT {BATCH} events of the type by position, decode,"
        " the same upserts (executemany), UPDATE a checkpoint row, COMMIT",
    ),
    _postgres(
        "PG6",
        f"PostgreSQL: 4,000 single-event appends from {postgres_processes.PROCESSES}"
        " processes at once, each to its own stream (exact expected versions)",
        4_000,
        postgres_processes.eskit_appends,
        postgres_processes.raw_appends,
        f"PG1's statement, one at a time, from {postgres_processes.PROCESSES} processes with"
        " a connection each: their transactions take turns on the head-row lock",
        Target("ratio", 0.7),
    ),
)

WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "W1",
        "5,000 appends of 1 event to new streams, one at a time",
        5_000,
        eskit_side.append_one_at_a_time,
        lambda d, items: raw.write(d, items, per_stream=1, per_tx=1),
        Target("ratio", 0.8),
        "one row per transaction (BEGIN IMMEDIATE; INSERT; COMMIT), 5,000 times",
    ),
    Workload(
        "W1c",
        "5,000 appends of 1 event to new streams from 100 concurrent tasks",
        5_000,
        lambda d, items: eskit_side.append_concurrently(d, items, tasks=100),
        lambda d, items: raw.write(d, items, per_stream=1, per_tx=100),
        Target("absolute", 50_000),
        "5,000 rows committed 100 rows per transaction, in multi-row INSERTs of 64, 32 and 4"
        " rows: the best group commit of 100 clients can do (the target is absolute, the"
        " ratio is for information)",
    ),
    Workload(
        "W2",
        "10,000 events into one stream, 100 events per append",
        10_000,
        lambda d, items: eskit_side.append_batches(d, items, per_append=100),
        lambda d, items: raw.write(d, items, per_stream=len(items), per_tx=100),
        Target("ratio", 0.6),
        "100 transactions of 100 rows, each in multi-row INSERTs of 64, 32 and 4 rows",
    ),
    Workload(
        "W3",
        "read back one 10,000-event stream (read_stream)",
        10_000,
        eskit_side.read_stream,
        raw.read_stream,
        Target("ratio", 0.7),
        "one SELECT ... WHERE stream = ? ORDER BY version, decoding data and metadata",
    ),
    Workload(
        "W4",
        "read_all of 50,000 events in pages of 1,000",
        50_000,
        lambda d, items: eskit_side.read_all(d, items, per_stream=100, page=1_000),
        lambda d, items: raw.read_all(d, items, per_stream=100, page=1_000),
        Target("ratio", 0.7),
        "SELECT ... WHERE position > ? ORDER BY position LIMIT 1000, page after page,"
        " decoding data and metadata",
    ),
    Workload(
        "W5",
        "subscribe(after=0) catching up over 50,000 events",
        50_000,
        lambda d, items: eskit_side.subscribe(d, items, per_stream=100),
        lambda d, items: raw.read_all(d, items, per_stream=100, page=1_000),
        Target("none"),
        "the same paged scan as W4",
    ),
    _commands(
        "C1",
        "5,000 CreateInvoice commands via the CommandBus, one at a time",
        1,
        "eskit's own store.append of each command's InvoiceCreated event, encoded beforehand,"
        " to its new stream (NO_STREAM), one at a time: the ratio is the bus's cost",
    ),
    _commands(
        "C1c",
        "the same 5,000 commands from 100 concurrent tasks",
        100,
        "the same store.append calls from 100 concurrent tasks",
    ),
    _load("L1", 1_000, 40, snapshots=False),
    _load("L10", 10_000, 8, snapshots=False),  # measured against the peer in ES4 / PGES4
    _load("L100", 100_000, 2, snapshots=False),
    _load("L1s", 1_000, 1_000, snapshots=True),
    _load("L10s", 10_000, 1_000, snapshots=True),
    _load("L100s", 100_000, 1_000, snapshots=True, relative_to="L1s"),
    Workload(
        "P1",
        f"projection catch-up over 50,000 events into a SQLite read model (an upsert per"
        f" event, a checkpoint per batch of {BATCH})",
        50_000,
        projection_eskit.catch_up,
        projection_raw.catch_up,
        Target("ratio", 0.6),
        f"the same upsert per event (executemany) and a checkpoint UPDATE, reading eskit's"
        f" events table {BATCH} rows at a time, one transaction per batch",
    ),
    _latency("P2", f"{LATENCY_APPENDS} single-event appends {SPACING * 1e3:g} ms apart", 1),
    _latency("P2c", f"{CONCURRENT_APPENDS} appends from 8 concurrent tasks, back to back", 8),
    *POSTGRES_WORKLOADS,
)


def select(only: str | None, also: tuple[str, ...] = ()) -> list[Workload]:
    """The workloads named in ``only`` ("W1,W3"), or all; raise ValueError for names that
    are neither these workloads' nor in ``also`` (other tables' workloads)."""
    if not only:
        return list(WORKLOADS)
    known = {w.name.lower() for w in WORKLOADS} | {name.lower() for name in also}
    wanted = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in wanted if name.lower() not in known]
    if unknown or not wanted:
        names = ", ".join([*(w.name for w in WORKLOADS), *also])
        raise ValueError(f"unknown workload(s) {', '.join(unknown) or only!r}; choose from {names}")
    chosen = {name.lower() for name in wanted}
    return [w for w in WORKLOADS if w.name.lower() in chosen]


def measure(
    workload: Workload, side: Side, items: list[Payload], parent: Path | None
) -> Measurement:
    """Run one side once in a fresh temporary directory (so a fresh database file)."""
    with tempfile.TemporaryDirectory(
        prefix=f"eskit-bench-{workload.name}-{side}-", dir=parent
    ) as d:
        if side == "eskit":
            return asyncio.run(workload.eskit(Path(d), items))
        return workload.raw(Path(d), items)


def run(workload: Workload, repeat: int, parent: Path | None, progress: Progress) -> Outcome:
    """Measure both sides ``repeat`` times, alternating, and keep each side's best rate
    (for loads: the lowest mean time per load; for latencies: the lowest p99)."""
    items = payloads(workload.size)
    best: dict[Side, Measurement] = {}
    sides: tuple[Side, ...] = ("raw", "eskit")
    for i in range(1, repeat + 1):
        for side in sides:
            m = measure(workload, side, items, parent)
            shown = f"{workload.unit.show(m):>12} {workload.unit.label}"
            progress(f"{workload.name} {side:<5} run {i}/{repeat}: {shown}")
            if side not in best or workload.unit.score(m) > workload.unit.score(best[side]):
                best[side] = m
    return Outcome(workload, best["eskit"], best["raw"])
