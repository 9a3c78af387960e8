"""Copy-transform migration of a large SQLite store: events/s, peak memory, and a resume
after a kill (``eskit migrate-events``, as an operator runs it).

    .venv/bin/python -m benchmarks.migrate_events                    # 1,000,000 events
    .venv/bin/python -m benchmarks.migrate_events --events 100000    # a quicker run

The source is filled with the raw driver and eskit's schema (100 events per stream, ~200
bytes each, as the memory workload). The migration (``MIGRATION``) renames the category
(every event changes), adds a field to each event's data and splits one event in 100 in
two: every event is rewritten. Three runs of the real command, each a process of its own
timed by ``/usr/bin/time -v`` (wall clock, maximum resident set size):

1. the whole migration into an empty store;
2. the same into another store, killed (SIGKILL) once half the events are in;
3. that run again: it walks what the killed run wrote, appends the rest, checks, records.

The resumed target must end with the same count and digest as the first run's. Nothing
here is asserted by the test suite: it measures and reports.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import eskit
from benchmarks.common import fill_log, payloads
from eskit.migration import EventMigration, Rewritten
from eskit.store.model import RecordedEvent

ROOT = Path(__file__).resolve().parent.parent
PER_STREAM = 100
FILL_CHUNK = 50_000


def _rewrite(event: RecordedEvent) -> list[Rewritten]:
    """invoice-N becomes bill-N with a ``source`` field; every 100th event is split."""
    data = {**event.data, "source": "migrated"}
    moved = Rewritten.of(event, stream="bill" + event.stream.removeprefix("invoice"), data=data)
    if event.version % 100 == 99:
        audited = Rewritten(moved.stream, "InvoiceAudited", {"by": "migration"}, event.metadata)
        return [moved, audited]
    return [moved]


MIGRATION = EventMigration("bench", _rewrite, "invoice-* to bill-*, a field added, 1% split")


def fill(path: Path, count: int) -> None:
    chunks = (
        payloads(min(FILL_CHUNK, count - start), seed=start)
        for start in range(0, count, FILL_CHUNK)
    )
    fill_log(path, chunks, PER_STREAM)


def command(source: Path, target: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "eskit.cli",
        "migrate-events",
        f"sqlite:///{source}",
        f"sqlite:///{target}",
        "--app",
        "benchmarks.migrate_events:MIGRATION",
    ]


def timed(args: list[str]) -> tuple[float, int, str]:
    """Run ``args`` under ``/usr/bin/time -v``: wall seconds, peak RSS in bytes, stdout."""
    done = subprocess.run(
        ["/usr/bin/time", "-v", *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr[-3000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (.+)", done.stderr)
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    if wall is None or peak is None:
        raise SystemExit(f"no timing from /usr/bin/time -v:\n{done.stderr[-3000:]}")
    return _seconds(wall.group(1)), int(peak.group(1)) * 1024, done.stdout


def _seconds(text: str) -> float:
    seconds = 0.0
    for part in text.strip().split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    return {**os.environ, "PYTHONPATH": path, "COLUMNS": "120"}


async def _position(path: Path) -> int:
    try:
        async with eskit.open_store(f"sqlite:///{path}", readonly=True) as store:
            return await store.last_position()
    except eskit.StoreError:
        return 0


def kill_midway(source: Path, target: Path, at: int) -> tuple[int, float]:
    """Start the migration, SIGKILL it once the target holds ``at`` events: the position
    it had reached and the seconds it ran."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command(source, target),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while asyncio.run(_position(target)) < at:
            if process.poll() is not None:
                raise SystemExit("the migration ended before it could be killed")
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return asyncio.run(_position(target)), time.perf_counter() - started


def summary(stdout: str) -> dict[str, str]:
    """The first line and the target's digest of a run's report."""
    first = stdout.splitlines()[0]
    digest = re.search(r"^target: .* digest sha256:([0-9a-f]{64})$", stdout, re.M)
    assert digest is not None, stdout
    return {"line": first, "target_digest": digest.group(1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None)
    options = parser.parse_args()
    count = options.events
    with tempfile.TemporaryDirectory(dir=options.dir, prefix="eskit-migrate-") as folder:
        directory = Path(folder)
        source = directory / "blue.db"
        started = time.perf_counter()
        fill(source, count)
        print(f"filled {count:,} events in {time.perf_counter() - started:.1f} s", flush=True)

        wall, peak, stdout = timed(command(source, directory / "green.db"))
        whole = summary(stdout)
        print(
            f"whole run: {wall:.1f} s, {count / wall:,.0f} source events/s, peak RSS"
            f" {peak / 2**20:.0f} MiB\n  {whole['line']}",
            flush=True,
        )

        reached, ran = kill_midway(source, directory / "green2.db", count // 2)
        print(f"killed after {ran:.1f} s with {reached:,} events in the target", flush=True)
        wall2, peak2, stdout2 = timed(command(source, directory / "green2.db"))
        resumed = summary(stdout2)
        same = resumed["target_digest"] == whole["target_digest"]
        print(
            f"resumed run: {wall2:.1f} s, peak RSS {peak2 / 2**20:.0f} MiB\n"
            f"  {resumed['line']}\n  same target digest as the whole run: {same}",
            flush=True,
        )
        if not same:
            raise SystemExit("the resumed target differs from the whole run's")


if __name__ == "__main__":
    main()
