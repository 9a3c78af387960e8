"""Can the async face reach its targets at all? The floors of issue 13's async targets.

An async call whose work blocks on SQLite crosses threads at least once each way: the event
loop hands the work to a thread and the answer comes back to the loop (the loop may not
wait on SQLite: the loop test). So the async face's best possible time for a command is
the raw driver's time for the same writes plus one round trip of thread hand-offs, with no
CPU of eskit's at all. This module measures, in one run, best of ``--repeat``:

- **peer**: eventsourcing's side of ES1 (new aggregates) and ES2 (commands on existing
  aggregates), as in ``python -m benchmarks``;
- **raw**: the same commands with nothing but SQL (read the stream, insert one row; raw's
  own table, smaller than eskit's), and ES3's one-row appends;
- **round trip**: the loop handing an empty job to a thread that answers with
  ``call_soon_threadsafe``, the least an async call that leaves the loop costs;
- for ES3, **necessary work**: ``floor.checked_appends``, what eskit must do for each append
  to keep its guarantees (eskit's table, its validation, the heads read under the write
  lock, the id, the chain link), straight-line.

and prints the async floor, ``1 / (1 / raw + round trip)``, against each async target. A
floor below its target means the target is out of reach with no eskit code at all. For ES3
it also prints the floor with the necessary work, ``1 / (1 / necessary + round trip)``: the
best an async append that keeps eskit's guarantees can do.
Run: ``python -m benchmarks.floor_commands``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import floor, peer_eventsourcing, peer_raw
from benchmarks.common import Measurement, Payload, payloads

COMMANDS = 2_000
ROUND_TRIPS = 20_000
Side = Callable[[Path, list[Payload]], Measurement]
TARGETS: dict[str, tuple[Side | None, Side, float]] = {
    "ES1 new aggregates": (
        lambda d, items: peer_eventsourcing.new_aggregates("sqlite", d, items),
        lambda d, items: peer_raw.commands("sqlite", d, items, existing=False),
        1.2,
    ),
    "ES2 commands on 100 aggregates": (
        lambda d, items: peer_eventsourcing.existing_aggregates("sqlite", d, items),
        lambda d, items: peer_raw.commands("sqlite", d, items, existing=True),
        2.0,
    ),
    "ES3 one-event appends": (
        None,  # relative to raw itself
        lambda d, items: peer_raw.appends("sqlite", d, items),
        0.6,
    ),
}
"""Workload: (the peer's side the target is relative to, or None for raw; raw's side; the
factor)."""


def round_trip(count: int = ROUND_TRIPS) -> float:
    """Seconds per loop → thread → loop hand-off of an empty job."""
    jobs: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()

    def worker() -> None:
        while (answer := jobs.get()) is not None:
            answer()

    async def calls() -> float:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        for _ in range(count):
            future: asyncio.Future[None] = loop.create_future()
            jobs.put(functools.partial(loop.call_soon_threadsafe, future.set_result, None))
            await future
        return (time.perf_counter() - start) / count

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        return asyncio.run(calls())
    finally:
        jobs.put(None)
        thread.join()


def _necessary(directory: Path, items: list[Payload]) -> Measurement:
    """ES3's necessary work (``floor.checked_appends``) as a side."""
    return Measurement(len(items), floor.checked_appends(directory, items))


def _rate(side: Side, items: list[Payload], directory: Path | None) -> float:
    with tempfile.TemporaryDirectory(prefix="eskit-floor-", dir=directory) as d:
        measured = side(Path(d), items)
    return measured.count / measured.seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor_commands")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side; best is kept")
    parser.add_argument("--dir", type=Path, help="where the files go (default: TMPDIR)")
    parser.add_argument("--commands", type=int, default=COMMANDS, help="per workload")
    args = parser.parse_args(argv)
    items = payloads(args.commands, seed=2)
    trip = min(round_trip(args.commands * 10) for _ in range(args.repeat))
    print(f"round trip of thread hand-offs: {trip * 1e6:.1f} µs (best of {args.repeat})")
    for name, (peer, raw_side, factor) in TARGETS.items():
        best = raw = 0.0
        for _ in range(args.repeat):  # the sides take turns: noise hits them alike
            if peer is not None:
                best = max(best, _rate(peer, items, args.dir))
            raw = max(raw, _rate(raw_side, items, args.dir))
        base, of = (raw, "raw") if peer is None else (best, "peer")
        target, floor = factor * base, 1 / (1 / raw + trip)
        verdict = "within reach" if floor >= target else "OUT OF REACH with no eskit code"
        print(
            f"{name}: {of} {base:,.0f}/s, raw {raw:,.0f}/s; async target ≥ {factor}x {of}"
            f" = {target:,.0f}/s; async floor (raw + one round trip) {floor:,.0f}/s"
            f" = {floor / base:.2f}x {of}: {verdict}"
        )
        if peer is None:  # ES3: the floor with eskit's necessary work too
            necessary = max(_rate(_necessary, items, args.dir) for _ in range(args.repeat))
            floor = 1 / (1 / necessary + trip)
            verdict = "within reach" if floor >= target else "OUT OF REACH"
            print(
                f"  with eskit's necessary work ({necessary:,.0f}/s one at a time):"
                f" {floor:,.0f}/s = {floor / base:.2f}x raw: {verdict}"
            )


if __name__ == "__main__":
    main()
