"""One blocking store (a SQLite file) shared by many threads through ``eskit.sync.CommandBus``:
16 worker threads, then a threaded WSGI server with 16 client threads. Every command's
events are written exactly once, each stream's versions are contiguous, and commands that
conflict on one aggregate are retried until they succeed."""

from __future__ import annotations

import collections
import concurrent.futures
import json
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

import eskit.sync
from eskit.application import CommandResult
from eskit.sync import CommandBus, SyncStore
from tests.application.test_commands import Deposit, account_decider, events

THREADS = 16
EACH = 8  # commands per thread
HOT = "hot"  # the account the first command of every thread goes to


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SyncStore]:
    with eskit.sync.open_store(f"sqlite:///{tmp_path}/events.db") as opened:
        yield opened


class Collide:
    """A handler whose first two calls on the hot account wait for each other after both
    loaded it: they decide on the same version, so one append conflicts and is retried."""

    def __init__(self) -> None:
        self.barrier = threading.Barrier(2, timeout=10)
        self.lock = threading.Lock()
        self.calls = 0

    def __call__(self, command: Deposit, state: Any) -> Sequence[object]:
        if command.account_id == HOT:
            with self.lock:
                self.calls += 1
                first_two = self.calls <= 2
            if first_two:
                self.barrier.wait()
        return account_decider.decide(command, state)


def deposit_bus(store: SyncStore) -> tuple[CommandBus, list[int]]:
    """The bus, and the attempts it retried."""
    bus = CommandBus(store, events, max_attempts=100, backoff=0.001)
    bus.register(Deposit, account_decider, aggregate_id=lambda c: c.account_id, handle=Collide())
    retried: list[int] = []
    bus.on_retry = lambda context, attempt: retried.append(attempt)
    return bus, retried


def commands_of(thread: int) -> list[tuple[uuid.UUID, Deposit]]:
    """A thread's commands: the hot account first, then accounts shared by four threads."""
    accounts = [HOT] + [f"shared-{(thread + n) % 4}" for n in range(1, EACH)]
    return [
        (uuid.uuid4(), Deposit(account, thread * 100 + n)) for n, account in enumerate(accounts)
    ]


def check_written_once(store: SyncStore, sent: Iterable[tuple[uuid.UUID, Deposit]]) -> None:
    """Each command's one event exists exactly once, versions are contiguous per stream, and
    each account's balance is the sum of its deposits."""
    sent = list(sent)
    written = list(store.read_all())
    by_command = collections.Counter(e.metadata["command_id"] for e in written)
    assert by_command == collections.Counter(str(command_id) for command_id, _ in sent)
    versions = collections.defaultdict(list)
    for event in written:
        versions[event.stream].append(event.version)
    for stream, seen in versions.items():
        assert seen == list(range(len(seen))), stream
    expected = collections.Counter[str]()
    for _, command in sent:
        expected[command.account_id] += command.amount
    repository = eskit.sync.Repository(store, events, account_decider)
    assert {a: repository.load(a).state.balance for a in expected} == dict(expected)


def test_sixteen_threads_share_one_blocking_store(store: SyncStore) -> None:
    bus, retried = deposit_bus(store)
    work = [commands_of(thread) for thread in range(THREADS)]

    def run(commands: list[tuple[uuid.UUID, Deposit]]) -> list[CommandResult]:
        results = [bus.send(command, command_id=command_id) for command_id, command in commands]
        command_id, command = commands[0]  # a retry after a lost reply: replayed
        results.append(bus.send(command, command_id=command_id))
        return results

    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(run, work))

    assert retried, "the two commands made to collide on the hot account were not retried"
    assert all(r[-1].replayed and r[-1].position == r[0].position for r in results)
    check_written_once(store, (sent for commands in work for sent in commands))


# -- behind a threaded WSGI server ------------------------------------------------------------


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 64  # socketserver's 5 can reset some of 16 clients' connections


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log on the test's output."""


def deposits_app(bus: CommandBus, threads: set[int]) -> Callable[..., Iterable[bytes]]:
    """A WSGI application: ``POST /accounts/<id>/deposits`` with ``{"amount": n}`` and a
    ``Command-Id`` header sends a ``Deposit`` through the bus, in the request's thread."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        threads.add(threading.get_ident())
        account = environ["PATH_INFO"].split("/")[2]
        body = json.loads(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))
        command_id = uuid.UUID(environ["HTTP_COMMAND_ID"])
        result = bus.send(Deposit(account, body["amount"]), command_id=command_id)
        reply = {
            "version": result.version,
            "position": result.position,
            "replayed": result.replayed,
        }
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(reply).encode()]

    return app


def post(port: int, command_id: uuid.UUID, command: Deposit) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/accounts/{command.account_id}/deposits",
        data=json.dumps({"amount": command.amount}).encode(),
        headers={"Command-Id": str(command_id), "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        reply: dict[str, Any] = json.loads(response.read())
        return reply


def test_a_threaded_wsgi_server_shares_one_blocking_store(store: SyncStore) -> None:
    bus, retried = deposit_bus(store)
    server_threads: set[int] = set()
    server = make_server(
        "127.0.0.1",
        0,
        deposits_app(bus, server_threads),
        server_class=ThreadingWSGIServer,
        handler_class=QuietHandler,
    )
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    port = server.server_address[1]
    work = [commands_of(thread) for thread in range(THREADS)]

    def client(commands: list[tuple[uuid.UUID, Deposit]]) -> list[dict[str, Any]]:
        replies = [post(port, command_id, command) for command_id, command in commands]
        replies.append(post(port, *commands[0]))  # the client retries its first request
        return replies

    try:
        with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
            replies = list(pool.map(client, work))
    finally:
        server.shutdown()
        server.server_close()
        serving.join()

    assert len(server_threads) > 1
    assert retried, "the two commands made to collide on the hot account were not retried"
    assert all(r[-1]["replayed"] and r[-1]["position"] == r[0]["position"] for r in replies)
    check_written_once(store, (sent for commands in work for sent in commands))
