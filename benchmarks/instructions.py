"""``python -m benchmarks.instructions``: CPU instructions per operation on the hot paths,
counted by valgrind's callgrind.

Wall-clock ratios move twofold between runs on a shared VM; an instruction count is exact and
repeatable (±0.5%) whatever else the machine does. Each workload runs twice under
callgrind on ``/dev/shm`` (no disk wait), with ``--count`` and with ``--count // 10``
operations, the same set-up and warm-up in both: the difference divided by the difference
in operations is the cost of one operation, set-up and interpreter start-up cancelled out.

The workloads are the peer table's eskit sides (``peer_eskit``), W1c's and W2's, raw's
one-row append for scale, and ``floor``'s ES3 and W1c floors (eskit's table and checks, no
framework) for the least eskit's guarantees cost. Needs ``valgrind`` on the PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import math
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from benchmarks import eskit_side, floor, peer_eskit, peer_eventsourcing, peer_raw
from benchmarks.common import Payload, payloads
from eskit.store import group_commit

Side = Callable[[Path, list[Payload]], object]


def _peer_side(
    function: Callable[..., object], directory: Path, items: list[Payload], **options: object
) -> object:
    return function("sqlite", directory, items, **options)


def _w1c(directory: Path, items: list[Payload]) -> object:
    return asyncio.run(eskit_side.append_concurrently(directory, items, tasks=100))


def _w2(directory: Path, items: list[Payload]) -> object:
    return asyncio.run(eskit_side.append_batches(directory, items, per_append=100))


WORKLOADS: dict[str, tuple[Side, str]] = {
    "es1-sync": (functools.partial(_peer_side, peer_eskit.sync_new_aggregates), "command"),
    "es1-async": (functools.partial(_peer_side, peer_eskit.new_aggregates), "command"),
    "es2-sync": (functools.partial(_peer_side, peer_eskit.sync_existing_aggregates), "command"),
    "es2-async": (functools.partial(_peer_side, peer_eskit.existing_aggregates), "command"),
    "es3-sync": (functools.partial(_peer_side, peer_eskit.sync_appends), "append"),
    "es3-async": (functools.partial(_peer_side, peer_eskit.appends), "append"),
    "es3-raw": (functools.partial(_peer_side, peer_raw.appends), "append"),
    "es1-raw": (functools.partial(_peer_side, peer_raw.commands, existing=False), "command"),
    "es2-raw": (functools.partial(_peer_side, peer_raw.commands, existing=True), "command"),
    "es1-peer": (functools.partial(_peer_side, peer_eventsourcing.new_aggregates), "command"),
    "es2-peer": (functools.partial(_peer_side, peer_eventsourcing.existing_aggregates), "command"),
    "es3-peer": (functools.partial(_peer_side, peer_eventsourcing.appends), "append"),
    "es3-floor": (floor.checked_appends, "append"),
    "w1c": (_w1c, "event"),
    "w1c-floor": (floor.committed_concurrently, "event"),
    "w2": (_w2, "event"),
}
DEFAULT_COUNT = 2_000


def _instructions(workload: str, count: int, of: int) -> int:
    """Total instructions of one run of ``workload`` with ``count`` operations (the first
    of ``of`` payloads, all made in each run so that making them cancels out)."""
    with tempfile.TemporaryDirectory(dir="/dev/shm") as scratch:
        out = Path(scratch) / "callgrind.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "benchmarks.instructions",
                "--run",
                workload,
                "--count",
                str(count),
                "--of",
                str(of),
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no total in callgrind's output for {workload}")
        return int(match.group(1))


def per_operation(workload: str, count: int) -> float:
    """Instructions of one operation of ``workload``: two runs, their difference."""
    fewer = max(1, count // 10)
    whole = _instructions(workload, count, count)
    return (whole - _instructions(workload, fewer, count)) / (count - fewer)


def _run(workload: str, count: int, of: int) -> None:
    # Under valgrind every commit takes milliseconds: without this, commits on the event
    # loop would pause (LOOP_COMMIT_LIMIT) and the async workloads count hand-offs instead.
    group_commit.LOOP_COMMIT_LIMIT = math.inf
    side, _ = WORKLOADS[workload]
    items = payloads(of, seed=2)
    with tempfile.TemporaryDirectory(dir="/dev/shm") as directory:
        side(Path(directory), items[:count])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("workloads", nargs="*", help=f"default: all of {', '.join(WORKLOADS)}")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT)
    parser.add_argument("--run", help=argparse.SUPPRESS)  # one run, inside valgrind
    parser.add_argument("--of", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        _run(args.run, args.count, args.of or args.count)
        return
    for workload in args.workloads or list(WORKLOADS):
        if workload not in WORKLOADS:
            parser.error(f"unknown workload {workload!r}; known: {', '.join(WORKLOADS)}")
        cost = per_operation(workload, args.count)
        print(f"{workload:10} {cost:12,.0f} instructions per {WORKLOADS[workload][1]}")


if __name__ == "__main__":
    main()
