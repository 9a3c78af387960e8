"""What KurrentDB's protocol costs (issue 17, point 8): the same work through
``kurrentdbclient`` against ``eskit grpc`` and through eskit's Python API, in one run.

Work, each on a fresh store of its own (SQLite file by default, ``--postgres`` for a
PostgreSQL schema in a database of the run's own, dropped at the end: ``benchmarks.postgres``):

- appends of one event at a time, from one client (appends/s);
- appends in batches of ``--batch`` events (events/s);
- one ``read_all`` of the whole log (events/s);
- a catch-up subscription to ``$all`` from the start until it has every event (events/s);
- a persistent subscription (an eskit consumer group) over the one-event stream, every
  event handed out and acked (events/s; the Python side fetches and acks 100 at a time).

The gRPC side is ``eskit grpc`` in a process of its own (as users run it) and the client
in this one, reading without kurrentdbclient's
default filter (it leaves out KurrentDB's system events, which eskit has none of, at a
regular expression per event); the Python side is the blocking face
(``eskit.sync``), no protocol. Each run is repeated (best kept) and the ratio grpc / python
printed: the share of the store's speed a KurrentDB client gets.
Run: ``python -m benchmarks.grpc [--repeat 3] [--postgres]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from kurrentdbclient import KurrentDBClient, NewEvent, StreamState

import eskit
import eskit.sync
from benchmarks import postgres
from benchmarks.grpc_faces import free_port
from eskit.subscriptions import Source

SINGLE = 1_000
BATCHES = 50
LOG = 20_000
"""Events in the log read and subscribed to (filled through eskit before timing)."""
Figures = dict[str, float]


@contextlib.contextmanager
def served(url: str, port: int) -> Iterator[None]:
    """``eskit grpc URL`` listening on ``port`` until the block ends."""
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "eskit.cli", "grpc", url, "--listen", f"127.0.0.1:{port}"]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"eskit grpc did not start ({process.returncode})")
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(30)


def rate(count: int, work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return count / (time.perf_counter() - start)


def fill(url: str) -> None:
    with eskit.sync.open_store(url) as store:
        for i in range(LOG // 500):
            store.append(f"fill-{i}", [eskit.NewEvent("Filled", {"i": i}) for _ in range(500)])


def through_grpc(port: int, batch: int) -> Figures:
    client = KurrentDBClient(f"kurrentdb://127.0.0.1:{port}?tls=false")
    try:
        stream = f"single-{uuid.uuid4().hex}"

        def singles() -> None:
            for n in range(SINGLE):
                event = NewEvent(type="Appended", data=b'{"n":%d}' % n)
                client.append_to_stream(stream, events=event, current_version=StreamState.ANY)

        def batches() -> None:
            name = f"batch-{uuid.uuid4().hex}"
            for _ in range(BATCHES):
                events = [NewEvent(type="Appended", data=b'{"n":1}') for _ in range(batch)]
                client.append_to_stream(name, events=events, current_version=StreamState.ANY)

        def read() -> None:
            assert sum(1 for _ in client.read_all(limit=LOG, filter_exclude=())) == LOG

        def subscribe() -> None:
            with client.subscribe_to_all(filter_exclude=()) as subscription:
                for seen, _ in enumerate(subscription, start=1):
                    if seen == LOG:
                        break

        def persistent() -> None:
            group = f"group-{uuid.uuid4().hex}"
            client.create_subscription_to_stream(group, stream)
            with client.read_subscription_to_stream(group, stream) as subscription:
                for seen, event in enumerate(subscription, start=1):
                    subscription.ack(event)
                    if seen == SINGLE:
                        break

        return {
            "appends/s (one event)": rate(SINGLE, singles),
            f"events/s (appends of {batch})": rate(BATCHES * batch, batches),
            "read_all events/s": rate(LOG, read),
            "subscription events/s": rate(LOG, subscribe),
            "persistent events/s": rate(SINGLE, persistent),
        }
    finally:
        client.close()


def through_python(url: str, batch: int) -> Figures:
    with eskit.sync.open_store(url) as store:
        stream = f"single-{uuid.uuid4().hex}"

        def singles() -> None:
            for n in range(SINGLE):
                store.append(stream, [eskit.NewEvent("Appended", {"n": n})])

        def batches() -> None:
            name = f"batch-{uuid.uuid4().hex}"
            for _ in range(BATCHES):
                store.append(name, [eskit.NewEvent("Appended", {"n": 1}) for _ in range(batch)])

        def read() -> None:
            assert sum(1 for _ in store.read_all(0, LOG)) == LOG

        def subscribe() -> None:
            for seen, _ in enumerate(store.subscribe(), start=1):
                if seen == LOG:
                    break

        def persistent() -> None:
            groups = eskit.sync.Groups(store)
            group = f"group-{uuid.uuid4().hex}"
            groups.create(group, Source.stream(stream))
            acked = 0
            with groups.consumer(group) as consumer:
                while acked < SINGLE:
                    deliveries = consumer.fetch(100)
                    consumer.ack(deliveries)
                    acked += len(deliveries)

        return {
            "appends/s (one event)": rate(SINGLE, singles),
            f"events/s (appends of {batch})": rate(BATCHES * batch, batches),
            "read_all events/s": rate(LOG, read),
            "subscription events/s": rate(LOG, subscribe),
            "persistent events/s": rate(SINGLE, persistent),
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grpc")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side; best is kept")
    parser.add_argument("--batch", type=int, default=100, help="events per batch append")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    args = parser.parse_args(argv)
    best: dict[str, Figures] = {}
    if args.postgres and (reason := postgres.unavailable()) is not None:
        raise SystemExit(reason)
    with tempfile.TemporaryDirectory() as directory, contextlib.ExitStack() as cleanup:
        if args.postgres:
            cleanup.callback(postgres.drop_database)
            print(postgres.describe())
        for run in range(args.repeat):
            for side in ("grpc", "python"):
                with contextlib.ExitStack() as schema:
                    if args.postgres:
                        url = postgres.store_url(schema.enter_context(postgres.fresh_schema()))
                    else:
                        url = f"sqlite:///{Path(directory) / f'{side}-{run}.db'}"
                    fill(url)
                    if side == "python":
                        figures = through_python(url, args.batch)
                    else:
                        port = free_port()
                        with served(url, port):
                            figures = through_grpc(port, args.batch)
                kept = best.setdefault(side, figures)
                for name, value in figures.items():
                    kept[name] = max(kept[name], value)
    names = list(best["grpc"])
    print(f"{'':16}" + "".join(f"{n:>28}" for n in names))
    for side, figures in best.items():
        print(f"{side:16}" + "".join(f"{figures[n]:>28,.0f}" for n in names))
    share = {n: best["grpc"][n] / best["python"][n] for n in names}
    print(f"{'grpc / python':16}" + "".join(f"{share[n]:>28.2f}" for n in names))


if __name__ == "__main__":
    main()
