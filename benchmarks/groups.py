"""Consumer groups: events/s acked by 1 and by 4 consumer processes, on SQLite and
PostgreSQL, beside a plain subscription doing the same work in one process; and a replay
of 100,000 parked events (time, peak Python memory).

Run: ``python -m benchmarks.groups [--events N] [--parked N] [--postgres URL]``.

The work per event is the same everywhere (a hash of its data). The group's consumers run
``Consumer.run`` on the blocking face (``eskit.sync``), ``max_in_flight`` events a batch;
the plain subscription reads pages of the log (``read_page``) and keeps no checkpoint.
Each side gets a fresh store filled before the clock; the clock runs from the moment every
consumer process is ready to the group's checkpoint reaching the head. Each side counts
the events it handled (printed beside its rate).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import multiprocessing
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

import eskit
import eskit.sync
from benchmarks import postgres
from eskit.store.model import RecordedEvent
from eskit.subscriptions import Settings, Source

IN_FLIGHT = 200


def work(event: RecordedEvent) -> bytes:
    return hashlib.sha256(msgspec.json.encode(event.data)).digest()


def fill(url: str, count: int) -> None:
    with eskit.sync.open_store(url) as store:
        for start in range(0, count, 1000):
            store.append_many(
                [
                    eskit.Append(f"invoice-{n}", [eskit.NewEvent("Due", {"n": n, "amount": n})])
                    for n in range(start, min(count, start + 1000))
                ]
            )


def consumer(
    url: str,
    name: str,
    target: int,
    counts: multiprocessing.Queue,  # type: ignore[type-arg]
    go: Any,
) -> None:
    """One consumer process: once every process is ready (``go``), handle until the
    group's checkpoint reaches ``target``."""
    handled = 0

    def handler(event: RecordedEvent) -> None:
        nonlocal handled
        work(event)
        handled += 1

    with eskit.sync.open_store(url) as store:
        groups = eskit.sync.Groups(store)
        member = groups.consumer("bench", name, poll=0.005)
        groups.get("bench")
        counts.put(0)  # ready
        go.wait()
        while groups.get("bench").checkpoint < target:
            member.run(handler, until_idle=True)
        member.close()
    counts.put(handled)


def group_rate(url: str, count: int, consumers: int) -> tuple[float, int]:
    """Events/s acked by ``consumers`` processes, and how many were handled in all."""
    fill(url, count)
    with eskit.sync.open_store(url) as store:
        head = store.last_position()
        eskit.sync.Groups(store).create(
            "bench", Source.all(), settings=Settings(max_in_flight=IN_FLIGHT, message_timeout=60)
        )
    context = multiprocessing.get_context("spawn")
    counts: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
    go = context.Event()
    processes = [
        context.Process(target=consumer, args=(url, f"c{n}", head, counts, go))
        for n in range(consumers)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        counts.get(timeout=120)
    started = time.perf_counter()
    go.set()
    handled = sum(counts.get(timeout=600) for _ in processes)
    elapsed = time.perf_counter() - started
    for process in processes:
        process.join()
    return count / elapsed, handled


def subscription_rate(url: str, count: int) -> tuple[float, int]:
    """Events/s of a plain subscription doing the same work (one process, no acks)."""
    fill(url, count)
    handled = 0
    with eskit.sync.open_store(url) as store:
        head, after = store.last_position(), 0
        started = time.perf_counter()
        while after < head:
            page = store.read_page(after, 500)
            for event in page.events:
                work(event)
                handled += 1
            after = page.next_after
        elapsed = time.perf_counter() - started
    return count / elapsed, handled


def replay_cost(directory: Path, parked: int) -> tuple[float, int, float]:
    """Seconds to replay ``parked`` parked events, the replay's peak Python memory (bytes),
    and the peak if the parked list were loaded at once (bytes), on SQLite."""
    url = f"sqlite:///{directory}/parked.db"
    fill(url, parked)
    with eskit.sync.open_store(url) as store:
        groups = eskit.sync.Groups(store)
        groups.create("bench", Source.all(), settings=Settings(max_in_flight=1000))
        member = groups.consumer("bench", "parker")
        while batch := member.fetch(1000):
            member.nack(batch, "park", "bench")
        tracemalloc.start()
        loaded = list(groups.iter_parked("bench"))
        _, all_at_once = tracemalloc.get_traced_memory()
        del loaded
        tracemalloc.reset_peak()
        started = time.perf_counter()
        groups.replay("bench", requested_by="bench")
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return elapsed, peak, all_at_once


@contextlib.contextmanager
def store_url(backend: str, directory: Path) -> Iterator[str]:
    if backend == "sqlite":
        path = directory / f"{time.monotonic_ns()}.db"
        yield f"sqlite:///{path}"
        return
    with postgres.fresh_schema() as schema:
        yield postgres.store_url(schema)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.groups")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--parked", type=int, default=100_000)
    parser.add_argument("--postgres", metavar="URL")
    args = parser.parse_args()
    if args.postgres:
        postgres.configure(args.postgres)
    backends = ["sqlite"] + ([] if postgres.unavailable() else ["postgresql"])
    print(f"{args.events} events, work = sha256 of the data; group max_in_flight={IN_FLIGHT}")
    print(f"{'backend':<11} {'side':<24} {'events/s':>10} {'handled':>9}")
    try:
        with tempfile.TemporaryDirectory(prefix="eskit-bench-groups-") as tmp:
            directory = Path(tmp)
            for backend in backends:
                with store_url(backend, directory) as url:
                    rate, handled = subscription_rate(url, args.events)
                print(f"{backend:<11} {'plain subscription':<24} {rate:>10,.0f} {handled:>9}")
                for consumers in (1, 4):
                    with store_url(backend, directory) as url:
                        rate, handled = group_rate(url, args.events, consumers)
                    side = f"group, {consumers} consumer{'s' if consumers > 1 else ''}"
                    print(f"{backend:<11} {side:<24} {rate:>10,.0f} {handled:>9}")
            seconds, peak, loaded = replay_cost(directory, args.parked)
            print(
                f"replay of {args.parked:,} parked events (SQLite): {seconds:.1f} s,"
                f" {args.parked / seconds:,.0f} events/s, peak {peak / 1024:,.0f} KiB"
                f" (the parked list loaded at once: {loaded / 1024 / 1024:,.1f} MiB)"
            )
    finally:
        if "postgresql" in backends:
            postgres.drop_database()


if __name__ == "__main__":
    main()
