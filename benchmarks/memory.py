"""Memory workload: peak RSS of a fresh process that reads every event of a 1M-event log,
once through a subscription and once building a projection.

The parent only orchestrates. A first child fills a SQLite file with the raw driver and
eskit's own schema (big transactions, ``synchronous=OFF`` for the fill only); a second,
fresh child opens it with eskit, subscribes from 0 and consumes every event, sampling its
resident memory; a third, as fresh, catches P1's projection up over the whole log with
``ProjectionRunner.run_until_caught_up()`` (its read model lands in the same file). The
children are run as ``python -m benchmarks.memory fill|consume|project``.

Peak RSS is the consumer's ``VmHWM`` (high-water mark of its own address space), or its
largest sampled RSS if that is higher (the kernel's counters are approximate). The
``ru_maxrss`` it also reports is an upper bound only: on Linux a child inherits the
launching process's high-water mark across fork/exec, so it can never be below the
parent's, which is why the parent stays small and the fill runs in a process of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

import eskit
from benchmarks.common import catch_up, fill_log, payloads
from benchmarks.projection import TABLE, InvoiceTotals
from eskit.projections import ProjectionRunner

MB = 1024 * 1024
TARGET_MB = 150
FILL_CHUNK = 50_000
PER_STREAM = 100
ROOT = Path(__file__).resolve().parent.parent
SAMPLE_EVERY = 0.1
"""Seconds between RSS samples while a projection catches up."""


def fill(path: Path, count: int) -> None:
    """Write ``count`` events (100 per stream) into a new file with eskit's schema."""
    chunks = (
        payloads(min(FILL_CHUNK, count - start), seed=start)
        for start in range(0, count, FILL_CHUNK)
    )
    fill_log(path, chunks, PER_STREAM)


def _rss() -> int:
    """Current resident set size in bytes (/proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _vm_hwm() -> int:
    """This address space's peak resident set size in bytes (/proc/self/status VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


async def consume(url: str) -> dict[str, float]:
    """Subscribe from 0 and consume every event up to the store's last position."""
    rss_start = _rss()
    async with eskit.open_store(url) as store:
        last = await store.last_position()
        rss_open = _rss()
        samples = [rss_open]
        count, elapsed = await catch_up(store, last, lambda: samples.append(_rss()))
        rss_max = max(*samples, _rss())
    return _figures(count, last, elapsed, rss_start, rss_open, rss_max)


async def project(url: str) -> dict[str, float]:
    """Catch a fresh projection (P1's per-invoice totals, an upsert per event, a checkpoint
    per batch) up over every event with ``run_until_caught_up()``, sampling RSS."""
    rss_start = _rss()
    async with eskit.open_store(url) as store:
        last = await store.last_position()
        rss_open = _rss()
        samples = [rss_open]

        async def sample() -> None:
            while True:
                samples.append(_rss())
                await asyncio.sleep(SAMPLE_EVERY)

        runner = ProjectionRunner(store, [InvoiceTotals()])
        sampler = asyncio.create_task(sample())
        start = time.perf_counter()
        await runner.run_until_caught_up()
        elapsed = time.perf_counter() - start
        sampler.cancel()
        (status,) = await runner.status()
        count = await runner.database.read(
            lambda c: c.execute(f"SELECT sum(events) FROM {TABLE}").fetchone()[0]
        )
        await runner.stop()
        rss_max = max(*samples, _rss())
    return _figures(
        count if status.position == last else 0, last, elapsed, rss_start, rss_open, rss_max
    )


def _figures(
    count: int, last: int, seconds: float, rss_start: int, rss_open: int, rss_max: int
) -> dict[str, float]:
    return {
        "events": count,
        "last_position": last,
        "seconds": seconds,
        "rss_start": rss_start,
        "rss_open": rss_open,
        "rss_max_sampled": rss_max,
        "vm_hwm": _vm_hwm(),
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def _child(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


CONSUMERS = {
    "consume": "subscription: subscribe(after=0)",
    "project": "projection catch-up (P1's read model)",
}


def run(count: int, parent: Path | None, out: Console) -> None:
    """Fill a file in one child, consume it in another, build a projection from it in a
    third, and print the figures."""
    with tempfile.TemporaryDirectory(prefix="eskit-bench-memory-", dir=parent) as d:
        path = Path(d) / "events.db"
        out.print(f"[dim]filling {path} with {count:,} events (raw driver, eskit schema)…[/]")
        start = time.perf_counter()
        _child("fill", str(path), str(count))
        fill_seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in Path(d).iterdir())
        results = {}
        for command, what in CONSUMERS.items():
            out.print(f"[dim]{what}, in a fresh process…[/]")
            results[what] = json.loads(_child(command, str(path)).splitlines()[-1])
    out.print()
    out.print(_table(count, fill_seconds, size, results))


def _table(
    count: int, fill_seconds: float, size: int, results: dict[str, dict[str, float]]
) -> Table:
    t = Table(title="Memory: a fresh process reads every event of the log")
    t.add_column("consumer")
    for name in ("events", "events/s", "peak RSS", "ru_maxrss", "RSS at start", "target"):
        t.add_column(name, justify="right")
    t.add_column("result")
    details = []
    for what, r in results.items():
        peak = max(r["vm_hwm"], r["rss_max_sampled"]) / MB
        ok = r["events"] == count
        met = ok and peak < TARGET_MB
        t.add_row(
            what,
            f"{r['events']:,.0f}",
            f"{r['events'] / r['seconds']:,.0f}",
            f"{peak:,.1f} MB",
            f"{r['ru_maxrss'] / MB:,.1f} MB",
            f"{r['rss_start'] / MB:,.1f} MB",
            f"< {TARGET_MB} MB",
            Text("met", style="green") if met else Text("missed" if ok else "WRONG COUNT", "red"),
        )
        details.append(
            f"{what}: VmHWM {r['vm_hwm'] / MB:,.1f} MB, largest sampled RSS"
            f" {r['rss_max_sampled'] / MB:,.1f} MB, RSS after opening the store"
            f" {r['rss_open'] / MB:,.1f} MB."
        )
    t.caption = "\n".join(
        [
            f"File: {count:,} events, {size / MB:,.0f} MB, filled in {fill_seconds:,.1f} s."
            " Peak RSS = the consumer's VmHWM or its largest sampled RSS, whichever is higher.",
            *details,
            "ru_maxrss is an upper bound: Linux carries the launching process's high-water mark"
            " into the child.",
        ]
    )
    t.caption_justify = "left"
    return t


def main(argv: list[str]) -> None:
    """``fill PATH COUNT``, ``consume PATH`` or ``project PATH`` (the last two print one
    JSON line)."""
    if len(argv) == 3 and argv[0] == "fill":
        fill(Path(argv[1]), int(argv[2]))
    elif len(argv) == 2 and argv[0] in CONSUMERS:
        url = f"sqlite:///{Path(argv[1]).resolve()}"
        measure = consume if argv[0] == "consume" else project
        print(json.dumps(asyncio.run(measure(url))))
    else:
        raise SystemExit(
            "usage: python -m benchmarks.memory fill PATH COUNT | consume PATH | project PATH"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
