"""The invoicing example's write side on the blocking face (``eskit.sync``), as a script or a
Django or Flask app would run it: no event loop, no ``await``, threads instead of tasks.

Run it with ``python -m examples.invoicing.sync_demo``. The domain (``Invoice``, the customer
decider, the events) and the routes (``app.route``) are those of the async demo; only the
bus is the blocking one (``app.sync_invoicing``). It registers a customer, runs an invoice
through its life, retries a payment with its command id, travels in time, breaks a rule,
has eight clerks in eight threads add lines to one invoice at once, snapshots a long
invoice and refuses an e-mail address used twice. The file lives in a temporary directory.
"""

from __future__ import annotations

import concurrent.futures
import tempfile
import uuid
from pathlib import Path

from rich.panel import Panel

import eskit.sync
from examples.invoicing.app import sync_invoicing
from examples.invoicing.commands import (
    AddInvoiceLine,
    CancelInvoice,
    CreateInvoice,
    IssueInvoice,
    PayInvoice,
)
from examples.invoicing.customer import CustomerError, RegisterCustomer
from examples.invoicing.demo import DUE, START, Clock, console, euros, say, step
from examples.invoicing.invoice import Invoice, InvoiceError

CLERKS = 8


def write_side(bus: eskit.sync.CommandBus, clock: Clock) -> None:
    store = bus.store
    step("Register a customer: the e-mail is claimed in the same append")
    registered = bus.send(RegisterCustomer("ada", "Ada Lovelace", "Ada@Example.com"))
    claim = store.stream_version("email-ada@example.com")
    say(f"customer-ada at version {registered.version}, email-ada@example.com at version {claim}")

    step("Create, fill and issue invoice inv-1 (CreateInvoice skips the load: creates=True)")
    bus.send(CreateInvoice("inv-1", "ada", "EUR", DUE), correlation_id="order-1001")
    bus.send(AddInvoiceLine("inv-1", "book", 3000, "EUR"), correlation_id="order-1001")
    clock.advance(hours=1)
    issued = bus.send(IssueInvoice("inv-1", clock.now), correlation_id="order-1001")
    say(f"inv-1 issued at version {issued.version}, total {euros(issued.events[0].total)}")

    step("The bank pays inv-1, then sends the same command id again")
    pay = PayInvoice("inv-1", 3000, clock.advance(days=2))
    command_id = uuid.uuid5(uuid.NAMESPACE_URL, "bank://transfers/88")
    first = bus.send(pay, command_id=command_id)
    again = bus.send(pay, command_id=command_id)
    paid = [e for e in store.read_stream("invoice-inv-1") if e.type == "InvoicePaid"]
    say(f"second send: replayed={again.replayed}, same position {again.position == first.position}")
    say(f"InvoicePaid events in the stream: {len(paid)}")

    step("Time travel: inv-1 now and at version 1")
    invoices = bus.repository(Invoice.model())
    for label, loaded in (
        ("now", invoices.load("inv-1")),
        ("v1", invoices.load("inv-1", version=1)),
    ):
        say(
            f"{label}: version {loaded.version}, {loaded.state.status}, {euros(loaded.state.total)}"
        )

    step("A rule refuses a command: paying a cancelled invoice")
    bus.send(CreateInvoice("inv-2", "ada", "EUR", DUE))
    bus.send(CancelInvoice("inv-2", "ordered twice", clock.now))
    try:
        bus.send(PayInvoice("inv-2", 0, clock.now))
    except InvoiceError as refused:
        say(f"✗ PayInvoice refused: {refused}")


def clerks(bus: eskit.sync.CommandBus) -> None:
    step(f"{CLERKS} clerks in {CLERKS} threads add a line each to invoice inv-3 at once")
    bus.send(CreateInvoice("inv-3", "ada", "EUR", DUE))
    bus.max_attempts = 2 * CLERKS  # eight writers on one aggregate: more than the default 5
    retries: list[int] = []
    bus.on_retry = lambda context, attempt: retries.append(attempt)
    lines = [AddInvoiceLine("inv-3", f"chair-{n}", 100, "EUR") for n in range(CLERKS)]
    with concurrent.futures.ThreadPoolExecutor(CLERKS) as pool:
        results = list(pool.map(bus.send, lines))
    bus.on_retry, bus.max_attempts = None, 5
    loaded = bus.repository(Invoice.model()).load("inv-3")
    say(f"versions {sorted(r.version or 0 for r in results)}; conflicts retried: {len(retries)}")
    say(f"total {euros(loaded.state.total)}: no line was lost")


def long_invoice(bus: eskit.sync.CommandBus) -> None:
    lines = 130
    step(f"inv-big gets {lines} lines; Invoice snapshots every 100 events")
    bus.send(CreateInvoice("inv-big", "ada", "EUR", DUE))
    for n in range(lines):
        bus.send(AddInvoiceLine("inv-big", f"bolt-{n}", 10, "EUR"))
    stored = bus.store.load_snapshot("invoice-inv-big", Invoice.snapshot_version)
    assert stored is not None  # stored in the caller's thread, before send returned
    loaded = bus.repository(Invoice.model()).load("inv-big")
    say(f"snapshot at version {stored.version}; loaded at version {loaded.version}")


def unique_email(bus: eskit.sync.CommandBus) -> None:
    step("A second customer tries to register with Ada's e-mail address")
    try:
        bus.send(RegisterCustomer("ada-2", "A. Lovelace", " ADA@example.com"))
    except CustomerError as refused:
        say(f"✗ RegisterCustomer refused: {refused}")


def demo(path: Path) -> None:
    url = f"sqlite:///{path}"
    console.print(Panel(f"Invoicing on [bold]{url}[/], blocking", title="eskit.sync"))
    clock = Clock(START)
    with eskit.sync.open_store(url, clock=clock) as store:
        bus = sync_invoicing(store)
        write_side(bus, clock)
        clerks(bus)
        long_invoice(bus)
        unique_email(bus)
    console.print(Panel(f"Done. {path} was a temporary file; it is removed now.", style="green"))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="eskit-invoicing-sync-") as folder:
        demo(Path(folder) / "events.db")


if __name__ == "__main__":
    main()
