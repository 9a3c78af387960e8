"""The workloads, their targets, and the runner that measures both sides best-of-N."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Literal

from benchmarks import eskit_side, raw
from benchmarks.common import Measurement, Payload, payloads

Side = Literal["eskit", "raw"]
Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Target:
    """What eskit should reach: a share of the raw rate, an absolute rate, or nothing."""

    kind: Literal["ratio", "absolute", "none"]
    value: float = 0.0

    @property
    def label(self) -> str:
        if self.kind == "ratio":
            return f"≥ {self.value:.1f} of raw"
        if self.kind == "absolute":
            return f"≥ {self.value:,.0f}/s"
        return "—"

    def met(self, eskit_rate: float, raw_rate: float) -> bool | None:
        """True or False, or None when there is no target."""
        if self.kind == "ratio":
            return eskit_rate >= self.value * raw_rate
        if self.kind == "absolute":
            return eskit_rate >= self.value
        return None


@dataclasses.dataclass(frozen=True)
class Workload:
    """One workload: how many events, what each side runs, the target and how raw is done."""

    name: str
    what: str
    events: int
    eskit: Callable[[Path, list[Payload]], Coroutine[Any, Any, Measurement]]
    raw: Callable[[Path, list[Payload]], Measurement]
    target: Target
    raw_note: str


@dataclasses.dataclass(frozen=True)
class Outcome:
    """Best measurement of each side over the repetitions."""

    workload: Workload
    eskit: Measurement
    raw: Measurement

    @property
    def ratio(self) -> float:
        return self.eskit.rate / self.raw.rate

    @property
    def met(self) -> bool | None:
        return self.workload.target.met(self.eskit.rate, self.raw.rate)

    @property
    def count_ok(self) -> bool:
        """Both sides handled exactly the expected number of events."""
        return self.eskit.events == self.raw.events == self.workload.events


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
        "5,000 rows committed 100 rows per transaction: the best group commit of 100"
        " clients can do (the target is absolute, the ratio is for information)",
    ),
    Workload(
        "W2",
        "10,000 events into one stream, 100 events per append",
        10_000,
        lambda d, items: eskit_side.append_batches(d, items, per_append=100),
        lambda d, items: raw.write(d, items, per_stream=len(items), per_tx=100),
        Target("ratio", 0.6),
        "100 transactions of 100 rows (executemany)",
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
)


def select(only: str | None) -> list[Workload]:
    """The workloads named in ``only`` ("W1,W3"), or all; raise ValueError for unknown names."""
    if not only:
        return list(WORKLOADS)
    known = {w.name.lower() for w in WORKLOADS}
    wanted = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in wanted if name.lower() not in known]
    if unknown or not wanted:
        names = ", ".join(w.name for w in WORKLOADS)
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
    """Measure both sides ``repeat`` times, alternating, and keep each side's best rate."""
    items = payloads(workload.events)
    best: dict[Side, Measurement] = {}
    sides: tuple[Side, ...] = ("raw", "eskit")
    for i in range(1, repeat + 1):
        for side in sides:
            m = measure(workload, side, items, parent)
            progress(f"{workload.name} {side:<5} run {i}/{repeat}: {m.rate:>12,.0f} events/s")
            if side not in best or m.rate > best[side].rate:
                best[side] = m
    return Outcome(workload, best["eskit"], best["raw"])
