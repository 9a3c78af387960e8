"""Memory workload: peak RSS of a fresh process whose subscription catches up over 1M events.

The parent only orchestrates. A first child fills a SQLite file with the raw driver and
eskit's own schema (big transactions, ``synchronous=OFF`` for the fill only); a second,
fresh child opens it with eskit, subscribes from 0 and consumes every event, sampling its
resident memory. Both children are run as ``python -m benchmarks.memory fill|consume``.

Peak RSS is the consumer's ``VmHWM`` (high-water mark of its own address space), or its
largest sampled RSS if that is higher (the kernel's counters are approximate). The
``ru_maxrss`` it also reports is an upper bound only: on Linux a child inherits the
launching process's high-water mark across fork/exec, so it can never be below the
parent's, which is why the parent stays small and the fill runs in a process of its own.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

import eskit
from benchmarks.common import EVENT_TYPE, catch_up, event_ids, payloads

MB = 1024 * 1024
TARGET_MB = 150
FILL_CHUNK = 50_000
PER_STREAM = 100
ROOT = Path(__file__).resolve().parent.parent

INSERT = (
    "INSERT INTO events (id, stream, category, version, type, data, metadata, recorded_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def fill(path: Path, count: int) -> None:
    """Write ``count`` events (100 per stream) into a new file with eskit's schema."""
    import msgspec

    schema = importlib.resources.files("eskit.store").joinpath("sqlite.sql").read_text()
    encode = msgspec.json.encode
    now = time.time_ns() // 1_000
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        conn.executescript(schema)
        for start in range(0, count, FILL_CHUNK):
            size = min(FILL_CHUNK, count - start)
            ids = event_ids(size, start)
            rows = [
                (
                    ids[i],
                    f"invoice-{(start + i) // PER_STREAM}",
                    "invoice",
                    (start + i) % PER_STREAM,
                    EVENT_TYPE,
                    encode(data).decode(),
                    encode(meta).decode(),
                    now,
                )
                for i, (data, meta) in enumerate(payloads(size, seed=start))
            ]
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(INSERT, rows)
            conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


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
    return {
        "events": count,
        "last_position": last,
        "seconds": elapsed,
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


def run(count: int, parent: Path | None, out: Console) -> None:
    """Fill a file in one child, consume it in another, and print the figures."""
    with tempfile.TemporaryDirectory(prefix="eskit-bench-memory-", dir=parent) as d:
        path = Path(d) / "events.db"
        out.print(f"[dim]filling {path} with {count:,} events (raw driver, eskit schema)…[/]")
        start = time.perf_counter()
        _child("fill", str(path), str(count))
        fill_seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in Path(d).iterdir())
        out.print("[dim]consuming in a fresh process…[/]")
        result = json.loads(_child("consume", str(path)).splitlines()[-1])
    out.print()
    out.print(_table(count, fill_seconds, size, result))


def _table(count: int, fill_seconds: float, size: int, r: dict[str, float]) -> Table:
    peak = max(r["vm_hwm"], r["rss_max_sampled"]) / MB
    ok = r["events"] == count
    met = ok and peak < TARGET_MB
    t = Table(title="Memory: a fresh process subscribes from 0 and consumes every event")
    for name in ("events", "events/s", "peak RSS", "ru_maxrss", "RSS at start", "target"):
        t.add_column(name, justify="right")
    t.add_column("result")
    t.add_row(
        f"{r['events']:,.0f}",
        f"{r['events'] / r['seconds']:,.0f}",
        f"{peak:,.1f} MB",
        f"{r['ru_maxrss'] / MB:,.1f} MB",
        f"{r['rss_start'] / MB:,.1f} MB",
        f"< {TARGET_MB} MB",
        Text("met", style="green") if met else Text("missed" if ok else "WRONG COUNT", "red"),
    )
    t.caption = (
        f"File: {count:,} events, {size / MB:,.0f} MB, filled in {fill_seconds:,.1f} s."
        f" Peak RSS = the consumer's VmHWM ({r['vm_hwm'] / MB:,.1f} MB) or its largest sampled"
        f" RSS ({r['rss_max_sampled'] / MB:,.1f} MB), whichever is higher; RSS after opening"
        f" the store {r['rss_open'] / MB:,.1f} MB.\nru_maxrss is an upper"
        " bound: Linux carries the launching process's high-water mark into the child."
    )
    t.caption_justify = "left"
    return t


def main(argv: list[str]) -> None:
    """``fill PATH COUNT`` or ``consume PATH`` (prints one JSON line)."""
    if len(argv) == 3 and argv[0] == "fill":
        fill(Path(argv[1]), int(argv[2]))
    elif len(argv) == 2 and argv[0] == "consume":
        print(json.dumps(asyncio.run(consume(f"sqlite:///{Path(argv[1]).resolve()}"))))
    else:
        raise SystemExit("usage: python -m benchmarks.memory fill PATH COUNT | consume PATH")


if __name__ == "__main__":
    main(sys.argv[1:])
