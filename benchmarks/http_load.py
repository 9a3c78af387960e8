"""``python -m benchmarks.http_load``: the HTTP API under load, on SQLite and on PostgreSQL.

For each backend, ``eskit serve`` runs the invoicing example (``--app
examples.invoicing.web:app_spec``, bearer tokens on) in a process of its own; this process
runs ``--clients`` concurrent clients, each an ``httpx.AsyncClient`` with one kept-alive
connection, sending invoice commands for ``--seconds``: each client walks invoices of its
own through ``CreateInvoice``, ``AddInvoiceLine``, ``IssueInvoice`` and ``PayInvoice``,
every command with a ``Command-Id``. It reports requests/s, p50/p99 latency and errors,
then stops the server and checks that every acknowledged command's events are in the store
(the ids, streams and types the answers gave).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table

import eskit
from benchmarks import postgres
from benchmarks.common import Measurement
from benchmarks.report import console, environment
from eskit.web.tokens import TokenFile

sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]
"""httpcore imports sniffio at every request to learn the event loop's library and falls
back to asyncio when it is missing; missing, that import searches every directory of
``sys.path`` each time (~0.4 ms a request, more than the rest of the client). Marked absent,
it fails at once."""

ROOT = Path(__file__).resolve().parents[1]
"""The checkout: the server imports the example from there."""
APP = "examples.invoicing.web:app_spec"
STARTUP = 60.0
"""Seconds the server may take to start (PostgreSQL: migrations, the example's catch-up)."""
NOW = "2026-12-01T09:00:00Z"


@dataclasses.dataclass
class Acknowledged:
    """What the server said a command appended."""

    stream: str
    events: list[tuple[str, str]]
    """(event id, type) of each event."""


@dataclasses.dataclass
class Run:
    """One backend's load run: every latency, the errors and the acknowledged commands."""

    backend: str
    seconds: float = 0.0
    latencies: list[float] = dataclasses.field(default_factory=list)
    errors: dict[str, int] = dataclasses.field(default_factory=dict)
    acknowledged: list[Acknowledged] = dataclasses.field(default_factory=list)
    missing: int = -1
    """Acknowledged events not found in the store afterwards (-1: not checked)."""
    stored: int = 0
    server_cpu: float = 0.0
    client_cpu: float = 0.0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    @property
    def measured(self) -> Measurement:
        return Measurement(len(self.latencies), self.seconds, tuple(self.latencies))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.http_load",
        description="The HTTP API (eskit serve) under concurrent command load.",
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="load duration (30)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (50)")
    parser.add_argument(
        "--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres"
    )
    parser.add_argument(
        "--postgres", metavar="URL", help=f"PostgreSQL server (default {postgres.DEFAULT_SERVER})"
    )
    parser.add_argument("--dir", type=Path, help="where the SQLite file goes (default: TMPDIR)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.clients < 1:
        parser.error("--seconds must be > 0 and --clients >= 1")
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not set(args.backends) <= {"sqlite", "postgres"}:
        parser.error("--backends takes sqlite and/or postgres")
    return args


# -- the server ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serving(url: str, directory: Path) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    """``eskit serve`` of the example on ``url`` with a fresh write token: (base URL,
    token, process). Stopped with SIGTERM, as an operator would."""
    token = TokenFile(directory / "tokens.json").create("load", ["write", "read"])
    port = free_port()
    log = (directory / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "eskit.cli", "serve", "--url", url, "--app", APP,
         "--tokens", str(directory / "tokens.json"), "--port", str(port)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP
        while True:
            try:
                httpx.get(f"{base}/openapi.json", timeout=1.0)
                break
            except httpx.TransportError as error:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start; see {log.name}") from error
                time.sleep(0.1)
        yield base, token, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the clients --------------------------------------------------------------------------


def lifecycle(invoice: str) -> list[tuple[str, dict[str, Any]]]:
    """The commands of one invoice's life, in order."""
    return [
        ("CreateInvoice", {"invoice_id": invoice, "customer_id": "cus-0001", "currency": "EUR",
                           "due_date": "2026-12-31"}),
        ("AddInvoiceLine", {"invoice_id": invoice, "sku": "sku-1", "amount": 1250,
                            "currency": "EUR"}),
        ("IssueInvoice", {"invoice_id": invoice, "now": NOW}),
        ("PayInvoice", {"invoice_id": invoice, "amount": 1250, "now": NOW}),
    ]  # fmt: skip


@contextlib.asynccontextmanager
async def clients(base: str, token: str, count: int) -> AsyncIterator[list[httpx.AsyncClient]]:
    """``count`` clients of one kept-alive connection each, made before the clock starts
    and sharing one TLS context (each would load the CA bundle: ~70 ms of CPU)."""
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    tls = ssl.create_default_context()
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=base, headers=headers, limits=limits, timeout=30.0, verify=tls
                )
            )
            for _ in range(count)
        ]


async def client(number: int, http: httpx.AsyncClient, until: float, run: Run) -> None:
    """Send invoices' commands one after the other until ``until``."""
    invoice = 0
    while time.perf_counter() < until:
        invoice += 1
        for name, body in lifecycle(f"load-{number}-{invoice}"):
            if time.perf_counter() >= until:
                return
            await send(http, name, body, run)


async def send(http: httpx.AsyncClient, name: str, body: dict[str, Any], run: Run) -> None:
    started = time.perf_counter()
    try:
        response = await http.post(
            f"/commands/{name}", json=body, headers={"Command-Id": str(uuid.uuid4())}
        )
    except httpx.HTTPError as error:
        run.error(type(error).__name__)
        return
    run.latencies.append(time.perf_counter() - started)
    if response.status_code != 200:
        run.error(str(response.status_code))
        return
    reply = response.json()
    run.acknowledged.append(
        Acknowledged(reply["stream"], [(e["id"], e["type"]) for e in reply["events"]])
    )


async def load(base: str, token: str, count: int, seconds: float, run: Run) -> None:
    """Warm every connection up, then ``count`` clients for ``seconds``."""
    async with clients(base, token, count) as https:
        warm = Run("warm-up")
        until = time.perf_counter() + 1.0
        await asyncio.gather(*(client(-1 - i, h, until, warm) for i, h in enumerate(https)))
        started = time.perf_counter()
        until = started + seconds
        await asyncio.gather(*(client(i, h, until, run) for i, h in enumerate(https)))
        run.seconds = time.perf_counter() - started


async def check(url: str, run: Run) -> None:
    """Count the acknowledged events that are not in the store as acknowledged."""
    stored: dict[str, tuple[str, str]] = {}
    async with eskit.open_store(url) as store:
        async for event in store.read_all():
            stored[str(event.id)] = (event.stream, event.type)
    run.stored = len(stored)
    run.missing = sum(
        stored.get(event_id) != (ack.stream, kind)
        for ack in run.acknowledged
        for event_id, kind in ack.events
    )


def measure(backend: str, url: str, directory: Path, clients: int, seconds: float) -> Run:
    run = Run(backend)
    with serving(url, directory) as (base, token, process):
        client_cpu = time.process_time()
        server_cpu = cpu_seconds(process.pid)
        asyncio.run(load(base, token, clients, seconds, run))
        run.server_cpu = cpu_seconds(process.pid) - server_cpu
        run.client_cpu = time.process_time() - client_cpu
    asyncio.run(check(url, run))
    return run


# -- backends and report ------------------------------------------------------------------


@contextlib.contextmanager
def store_url(backend: str, parent: Path | None) -> Iterator[tuple[str, Path]]:
    """A fresh store of ``backend`` (URL) and a directory for the run's files."""
    directory = Path(tempfile.mkdtemp(prefix="eskit-http-", dir=parent))
    try:
        if backend == "sqlite":
            yield f"sqlite:///{directory}/events.db", directory
        else:
            with postgres.fresh_schema() as schema:
                yield postgres.store_url(schema), directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def table(runs: list[Run], clients: int) -> Table:
    t = Table(title=f"HTTP API: {clients} concurrent clients sending invoice commands")
    for column in ("backend", "requests/s", "p50 ms", "p99 ms", "requests", "errors",
                   "events checked", "missing", "server CPU s", "client CPU s"):  # fmt: skip
        t.add_column(column, justify="left" if column == "backend" else "right")
    for run in runs:
        m = run.measured
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(run.errors.items())) or "0"
        checked = sum(len(a.events) for a in run.acknowledged)
        t.add_row(
            run.backend, f"{m.rate:,.0f}", f"{m.percentile_ms(50):.1f}",
            f"{m.percentile_ms(99):.1f}", f"{m.count:,}", errors, f"{checked:,}",
            str(run.missing), f"{run.server_cpu:.1f}", f"{run.client_cpu:.1f}",
        )  # fmt: skip
    return t


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    out = console()
    out.print(f"[dim]{environment()}[/]", highlight=False)
    out.print(
        f"[dim]{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC · {args.seconds:g} s per backend"
        f" · server: eskit serve --app {APP} (uvicorn, one process)"
        f" · load average {os.getloadavg()[0]:.1f} before the run[/]",
        highlight=False,
    )
    if args.postgres:
        postgres.configure(args.postgres)
    runs = []
    try:
        for backend in args.backends:
            if backend == "postgres" and (reason := postgres.unavailable()) is not None:
                out.print(f"[yellow]postgres skipped: {reason}[/]", highlight=False)
                continue
            if backend == "postgres":
                out.print(f"[dim]{postgres.describe()}[/]", highlight=False)
            with store_url(backend, args.dir) as (url, directory):
                out.print(f"[dim]{backend}: loading for {args.seconds:g} s…[/]", highlight=False)
                runs.append(measure(backend, url, directory, args.clients, args.seconds))
    finally:
        postgres.drop_database()
    out.print(table(runs, args.clients))
    if any(run.missing != 0 or run.errors for run in runs):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
