"""Which face should ``eskit grpc`` run the store on? (issue 17, point 2)

The same Streams calls, served two ways over one SQLite file, each measured in the same run
through ``kurrentdbclient``:

- ``aio``: the server eskit ships (``grpc.aio`` on the store's event loop, the async face);
- ``threads``: grpcio's classic server, whose handlers run in a thread pool and call the
  blocking face (``eskit.sync``) in the pool's thread;
- ``store``: the same appends and read on the blocking face in-process, no protocol.

Reported: one-event appends per second from one client thread and from ``--clients``
threads, and events per second of one ``read_all``. Beside the rates, a structural fact no
rate shows: the thread-pool server holds one pool thread per open subscription for its
lifetime, so ``max_workers`` caps the subscriptions it can serve.
Run: ``python -m benchmarks.grpc_faces``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState

import eskit
import eskit.sync
from eskit.grpc import GrpcServer, GrpcSettings
from eskit.grpc.mapping import expected_of, new_event, read_event, stream_name
from eskit.grpc.protos import streams_pb2, streams_pb2_grpc

APPENDS = 2_000
READ = 20_000


class ThreadedStreams(streams_pb2_grpc.StreamsServicer):
    """Append and ``$all`` reads on the blocking face, in grpcio's pool threads."""

    def __init__(self, store: eskit.sync.SyncStore) -> None:
        self.store = store

    def Append(self, request_iterator: Iterator[Any], context: Any) -> Any:
        options, events = None, []
        for request in request_iterator:
            if request.WhichOneof("content") == "options":
                options = request.options
            else:
                events.append(new_event(request.proposed_message))
        assert options is not None
        result = self.store.append(
            stream_name(options.stream_identifier), events, expected_of(options)
        )
        return streams_pb2.AppendResp(
            success=streams_pb2.AppendResp.Success(
                current_revision=result.last_version,
                position=streams_pb2.AppendResp.Position(
                    commit_position=result.last_position, prepare_position=result.last_position
                ),
            )
        )

    def Read(self, request: Any, context: Any) -> Iterator[Any]:
        for event in self.store.read_all(0, request.options.count):
            yield read_event(event, structured=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def threaded_server(path: Path, port: int) -> Callable[[], None]:
    store = eskit.sync.open_store(f"sqlite:///{path}")
    store.open()
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=8))
    streams_pb2_grpc.add_StreamsServicer_to_server(ThreadedStreams(store), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()

    def stop() -> None:
        server.stop(1).wait()
        store.close()

    return stop


def aio_server(path: Path, port: int) -> Callable[[], None]:
    loop = asyncio.new_event_loop()
    started = threading.Event()
    store = eskit.open_store(f"sqlite:///{path}")
    server = GrpcServer(store, GrpcSettings(f"127.0.0.1:{port}"))

    async def main() -> None:
        async with store:
            await server.start()
            started.set()
            await stopping.wait()
            await server.stop(1)

    stopping = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    started.wait(30)

    def stop() -> None:
        loop.call_soon_threadsafe(stopping.set)
        thread.join(30)

    return stop


def measure(port: int, clients: int) -> dict[str, float]:
    client = KurrentDBClient(f"kurrentdb://127.0.0.1:{port}?tls=false")

    def event() -> NewEvent:
        return NewEvent(type="E", data=b'{"n":1}')

    start = time.perf_counter()
    stream = f"s-{uuid.uuid4().hex}"
    for _ in range(APPENDS):
        client.append_to_stream(stream, events=event(), current_version=StreamState.ANY)
    single = APPENDS / (time.perf_counter() - start)

    def append_many(n: int) -> None:
        name = f"s-{uuid.uuid4().hex}"
        for _ in range(n):
            client.append_to_stream(name, events=event(), current_version=StreamState.ANY)

    each = APPENDS // clients
    start = time.perf_counter()
    threads = [threading.Thread(target=append_many, args=(each,)) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    concurrent_rate = each * clients / (time.perf_counter() - start)
    start = time.perf_counter()
    read = sum(1 for _ in client.read_all(limit=READ))
    read_rate = read / (time.perf_counter() - start)
    client.close()
    return {"appends/s (1 client)": single, f"appends/s ({clients} clients)": concurrent_rate,
            "read_all events/s": read_rate}  # fmt: skip


def direct(path: Path, clients: int) -> dict[str, float]:
    """The same work on the store's blocking face in this process: no protocol at all."""
    with eskit.sync.open_store(f"sqlite:///{path}") as store:
        start = time.perf_counter()
        stream = f"s-{uuid.uuid4().hex}"
        for _ in range(APPENDS):
            store.append(stream, [eskit.NewEvent("E", {"n": 1})])
        single = APPENDS / (time.perf_counter() - start)

        def append_many(n: int) -> None:
            name = f"s-{uuid.uuid4().hex}"
            for _ in range(n):
                store.append(name, [eskit.NewEvent("E", {"n": 1})])

        each = APPENDS // clients
        start = time.perf_counter()
        threads = [threading.Thread(target=append_many, args=(each,)) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        concurrent_rate = each * clients / (time.perf_counter() - start)
        start = time.perf_counter()
        read = sum(1 for _ in store.read_all(0, READ))
        read_rate = read / (time.perf_counter() - start)
    return {"appends/s (1 client)": single, f"appends/s ({clients} clients)": concurrent_rate,
            "read_all events/s": read_rate}  # fmt: skip


def fill(path: Path) -> None:
    with eskit.sync.open_store(f"sqlite:///{path}") as store:
        for i in range(READ // 500):
            store.append(f"f-{i}", [eskit.NewEvent("F", {"i": i}) for _ in range(500)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grpc_faces")
    parser.add_argument("--repeat", type=int, default=3, help="runs per face; best is kept")
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args(argv)
    best: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as directory:
        for run in range(args.repeat):
            for face, serve in (("aio", aio_server), ("threads", threaded_server), ("store", None)):
                path = Path(directory) / f"{face}-{run}.db"
                fill(path)
                if serve is None:
                    figures = direct(path, args.clients)
                else:
                    port = free_port()
                    stop = serve(path, port)
                    try:
                        figures = measure(port, args.clients)
                    finally:
                        stop()
                kept = best.setdefault(face, figures)
                for name, value in figures.items():
                    kept[name] = max(kept[name], value)
    names = list(best["aio"])
    print(f"{'':24}" + "".join(f"{n:>26}" for n in names))
    for face, figures in best.items():
        print(f"{face:24}" + "".join(f"{figures[n]:>26,.0f}" for n in names))
    ratio = {n: best["aio"][n] / best["threads"][n] for n in names}
    print(f"{'aio / threads':24}" + "".join(f"{ratio[n]:>26.2f}" for n in names))
    cost = {n: best["aio"][n] / best["store"][n] for n in names}
    print(f"{'aio / store':24}" + "".join(f"{cost[n]:>26.2f}" for n in names))


if __name__ == "__main__":
    main()
