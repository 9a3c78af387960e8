"""The invoicing example end to end: commands in, events out, on an embedded SQLite file.

Run it with ``make demo`` (after the store tour) or ``python -m examples.invoicing.demo``.
It registers a customer (decider style), runs an invoice through its life (class style),
then shows correlation ids, an idempotent retry, time travel, a broken rule, a concurrency
conflict the bus retries, a snapshot, and the unique e-mail rule. The file lives in a
temporary directory and is removed at the end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import tempfile
import uuid
from pathlib import Path

from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

import eskit
from eskit.application import CommandBus, Repository
from examples.invoicing.app import handle_invoice, invoice_id, invoicing
from examples.invoicing.commands import (
    AddInvoiceLine,
    CancelInvoice,
    CreateInvoice,
    IssueInvoice,
    PayInvoice,
)
from examples.invoicing.customer import CustomerError, RegisterCustomer
from examples.invoicing.events import events
from examples.invoicing.invoice import Invoice, InvoiceError

console = Console()

START = dt.datetime(2024, 5, 1, 9, 0, tzinfo=dt.UTC)
DUE = dt.date(2024, 5, 31)


class Clock:
    """The demo's time. The store stamps ``recorded_at`` with it and commands carry it, so
    that time travel can name a moment between two events."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> dt.datetime:
        self.now += dt.timedelta(**delta)
        return self.now


def step(text: str) -> None:
    console.print(f"\n[bold cyan]▸ {text}[/]")


def say(text: str) -> None:
    console.print(f"  {text}")


def columns(*names: str) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for name in names:
        table.add_column(name, justify="right" if name in ("pos", "v", "version") else "left")
    return table


def euros(cents: int) -> str:
    return f"€{cents / 100:,.2f}"


def short(value: object) -> str:
    """Ids as people read them: the first 8 characters of a uuid, other ids whole."""
    text = str(value)
    return text[:8] if len(text) == 36 and text.count("-") == 4 else text


async def register_customer(bus: CommandBus) -> None:
    step("Register a customer (decider style): the e-mail is claimed in the same append")
    result = await bus.send(RegisterCustomer("ada", "Ada Lovelace", "Ada@Example.com"))
    claim = await bus.store.stream_version("email-ada@example.com")
    say(
        f"customer-ada at version {result.version}, and [bold]email-ada@example.com[/] at"
        f" version {claim}: both written by one atomic append"
    )


async def invoice_life(bus: CommandBus, clock: Clock) -> None:
    step("A checkout (correlation id order-1001) creates, fills and issues invoice inv-1")
    checkout = "order-1001"  # e.g. the web request's id: every command of the flow carries it
    await bus.send(CreateInvoice("inv-1", "ada", "EUR", DUE), correlation_id=checkout)
    clock.advance(minutes=5)
    await bus.send(AddInvoiceLine("inv-1", "book", 3000, "EUR"), correlation_id=checkout)
    clock.advance(minutes=5)
    await bus.send(AddInvoiceLine("inv-1", "pen", 250, "EUR"), correlation_id=checkout)
    clock.advance(hours=1)
    issued = await bus.send(IssueInvoice("inv-1", clock.now), correlation_id=checkout)
    (event,) = issued.events
    say(
        f"inv-1 issued at version {issued.version}:"
        f" {type(event).__name__}, total {euros(event.total)}"
    )


async def idempotent_payment(bus: CommandBus, clock: Clock) -> None:
    step("The bank pays inv-1; its webhook times out and sends the same command id again")
    pay = PayInvoice("inv-1", 3250, clock.advance(days=2))
    command_id = uuid.uuid5(uuid.NAMESPACE_URL, "bank://transfers/88")
    first = await bus.send(pay, command_id=command_id, correlation_id="bank-tx-88")
    again = await bus.send(pay, command_id=command_id, correlation_id="bank-tx-88")
    paid = [e async for e in bus.store.read_stream("invoice-inv-1") if e.type == "InvoicePaid"]
    say(f"first send:  appended InvoicePaid at version {first.version}, replayed={first.replayed}")
    say(
        f"second send: [green]replayed[/]={again.replayed}, same version {again.version} and"
        f" position {again.position}; InvoicePaid events in the stream: {len(paid)}"
    )
    say("(without the command id, the retry would be refused: a paid invoice cannot be paid)")


async def events_table(store: eskit.EventStore) -> None:
    step("The events written so far, with the metadata the bus stamped on each")
    table = columns("pos", "stream", "v", "type", "correlation", "causation")
    async for e in store.read_all():
        table.add_row(
            str(e.position),
            e.stream,
            str(e.version),
            e.type,
            short(e.metadata.get("correlation_id", "")),
            short(e.metadata.get("causation_id", "")),
        )
    console.print(table)
    say(
        "correlation ties a whole flow together (the checkout, the bank transfer); causation is"
        " the command that wrote the event (its command_id, also in the metadata)"
    )


async def time_travel(bus: CommandBus) -> None:
    step("Time travel: inv-1 now, at version 1, and as it was on May 2nd at noon")
    async for e in bus.store.read_stream("invoice-inv-1"):
        say(f"version {e.version} {e.type:16} recorded {e.recorded_at:%b %d %H:%M}")
    invoices = bus.repository(Invoice.model())
    table = columns("as of", "version", "status", "total", "paid")
    noon = dt.datetime(2024, 5, 2, 12, 0, tzinfo=dt.UTC)
    for label, loaded in (
        ("now", await invoices.load("inv-1")),
        ("version=1", await invoices.load("inv-1", version=1)),
        (f"at={noon:%b %d %H:%M}", await invoices.load("inv-1", at=noon)),
    ):
        invoice = loaded.state
        table.add_row(
            label, str(loaded.version), invoice.status, euros(invoice.total), euros(invoice.paid)
        )
    console.print(table)


async def broken_rule(bus: CommandBus, clock: Clock) -> None:
    step("A rule refuses a command: paying invoice inv-2 after it was cancelled")
    await bus.send(CreateInvoice("inv-2", "ada", "EUR", DUE))
    await bus.send(AddInvoiceLine("inv-2", "lamp", 4500, "EUR"))
    await bus.send(IssueInvoice("inv-2", clock.now))
    await bus.send(CancelInvoice("inv-2", "ordered twice", clock.advance(hours=1)))
    try:
        await bus.send(PayInvoice("inv-2", 4500, clock.now))
    except InvoiceError as refused:
        version = await bus.store.stream_version("invoice-inv-2")
        say(f"[red]✗ PayInvoice refused:[/] {refused}")
        say(f"nothing was written: invoice-inv-2 is still at version {version}")


async def conflict_retried(store: eskit.EventStore, bus: CommandBus) -> None:
    step("Two clerks add a line to invoice inv-3 at the same moment")
    await bus.send(CreateInvoice("inv-3", "ada", "EUR", DUE))
    # A bus whose handler holds each clerk's first decision until both have loaded the
    # invoice, so that the race happens every time the demo runs; it notes what each saw.
    clerks = CommandBus(store, events)
    decisions: list[tuple[str, int]] = []
    both_loaded = asyncio.Barrier(2)

    async def add_line(command: AddInvoiceLine, invoice: Invoice) -> None:
        first_try = all(sku != command.sku for sku, _ in decisions)
        decisions.append((command.sku, invoice.total))
        if first_try:
            await both_loaded.wait()
        handle_invoice(command, invoice)

    clerks.register(AddInvoiceLine, Invoice, aggregate_id=invoice_id, handle=add_line)
    results = await asyncio.wait_for(
        asyncio.gather(
            clerks.send(AddInvoiceLine("inv-3", "desk", 25000, "EUR")),
            clerks.send(AddInvoiceLine("inv-3", "chair", 9000, "EUR")),
        ),
        timeout=10,
    )
    for sku, total in decisions:
        say(f"decided to add {sku!r} to the invoice as loaded, total {euros(total)}")
    retried = decisions[-1][0]  # the third decision: both first tries wait for each other
    say(
        "both decided on version 0; the store refused one append (WrongExpectedVersion)"
        f" and the bus [green]retried[/] {retried!r}: it reloaded and decided again"
    )
    final = await bus.repository(Invoice.model()).load("inv-3")
    say(
        f"saved at versions {sorted(r.version or 0 for r in results)};"
        f" total {euros(final.state.total)}: no line was lost"
    )


async def snapshot(bus: CommandBus, store: eskit.EventStore) -> None:
    lines = 130
    step(f"A long invoice: inv-big gets {lines} lines; Invoice snapshots every 100 events")
    await bus.send(CreateInvoice("inv-big", "ada", "EUR", DUE))
    for n in range(lines):
        await bus.send(AddInvoiceLine("inv-big", f"bolt-{n}", 10, "EUR"))
    invoices = bus.repository(Invoice.model())
    await invoices.wait_for_snapshots()  # snapshots are stored in the background
    stored = await store.load_snapshot("invoice-inv-big", Invoice.snapshot_version)
    assert stored is not None
    loaded = await invoices.load("inv-big")
    assert loaded.version is not None
    tail = [e async for e in store.read_stream("invoice-inv-big", from_version=stored.version + 1)]
    say(
        f"snapshot at version {stored.version} (snapshot_version {stored.snapshot_version});"
        f" the stream is at version {loaded.version}"
    )
    say(
        f"loading read the snapshot and only the tail: {len(tail)} events (versions"
        f" {tail[0].version} to {tail[-1].version}) instead of {loaded.version + 1}"
    )
    full_replay = Repository(
        store, events, dataclasses.replace(Invoice.model(), snapshot_every=None)
    )
    replayed = await full_replay.load("inv-big")
    same = replayed.state.total == loaded.state.total
    say(
        f"total {euros(loaded.state.total)}; a full replay from version 0 gives"
        f" {euros(replayed.state.total)} ({'the same' if same else '[red]different![/]'})"
    )


async def unique_email(bus: CommandBus) -> None:
    step("A second customer tries to register with Ada's e-mail address")
    try:
        await bus.send(RegisterCustomer("ada-2", "A. Lovelace", " ADA@example.com"))
    except CustomerError as refused:
        written = [e async for e in bus.store.read_stream("customer-ada-2")]
        say(f"[red]✗ RegisterCustomer refused:[/] {refused}")
        say(f"nothing was written: customer-ada-2 has {len(written)} events")


async def demo(path: Path) -> None:
    url = f"sqlite:///{path}"
    console.print(Panel(f"Invoicing on [bold]{url}[/]", title="eskit write side"))
    clock = Clock(START)
    async with eskit.open_store(url, clock=clock) as store:
        bus = invoicing(store)
        await register_customer(bus)
        await invoice_life(bus, clock)
        await idempotent_payment(bus, clock)
        await events_table(store)
        await time_travel(bus)
        await broken_rule(bus, clock)
        await conflict_retried(store, bus)
        await snapshot(bus, store)
        await unique_email(bus)
    console.print(Panel(f"Done. {path} was a temporary file; it is removed now.", style="green"))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="eskit-invoicing-") as folder:
        asyncio.run(demo(Path(folder) / "events.db"))


if __name__ == "__main__":
    main()
