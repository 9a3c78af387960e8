"""The invoicing example end to end: commands in, events out, on an embedded SQLite file.

Run it with ``make demo`` (after the store tour) or ``python -m examples.invoicing.demo``.
It registers a customer (decider style), runs an invoice through its life (class style),
then shows correlation ids, an idempotent retry, time travel, a broken rule, a concurrency
conflict the bus retries, a snapshot, and the unique e-mail rule.

Then the read side, which a ``ProjectionRunner`` keeps up to date live from the first
command on: the invoice list and customer balances as SQL read models, a full-text search,
the reminder process sending commands when the clock passes due dates, and a rebuild of the
invoice list with a progress bar that ends with the same digest it started with. The file
lives in a temporary directory and is removed at the end.
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
from rich.markup import escape
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

import eskit
from eskit.application import CommandBus, CommandResult, Repository
from eskit.application.trace import trace
from eskit.cli.trace import render as render_trace
from eskit.projections import ProjectionRunner
from eskit.projections import state as st
from eskit.store.model import Append
from examples.invoicing.app import handle_invoice, invoice_id, invoicing
from examples.invoicing.commands import (
    AddInvoiceLine,
    CancelInvoice,
    CreateInvoice,
    IssueInvoice,
    PayInvoice,
)
from examples.invoicing.customer import CustomerError, RegisterCustomer
from examples.invoicing.events import (
    InvoiceCreated,
    InvoiceIssued,
    InvoiceLineAdded,
    InvoicePaid,
    events,
)
from examples.invoicing.invoice import Invoice, InvoiceError
from examples.invoicing.read_models import (
    InvoiceList,
    count_invoices,
    customer_balances,
    find_invoice,
    list_invoices,
    projections,
)
from examples.invoicing.reminders import InvoiceReminders
from examples.invoicing.search import search_invoices

console = Console()

START = dt.datetime(2024, 5, 1, 9, 0, tzinfo=dt.UTC)
DUE = dt.date(2024, 5, 31)
LATER = dt.date(2024, 6, 30)


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
    """Ids as people read them: the last 8 characters of a uuid (its random part: a uuid7
    starts with its timestamp, the same for ids made within a minute), other ids whole."""
    text = str(value)
    return "…" + text[-8:] if len(text) == 36 and text.count("-") == 4 else text


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


# -- the read side ------------------------------------------------------------------------------


async def send_and_wait(runner: ProjectionRunner, bus: CommandBus, *commands: object) -> None:
    """Send the commands, then wait until every read model has applied their events, so
    the queries that follow read what was just written."""
    result: CommandResult | None = None
    for command in commands:
        result = await bus.send(command)
    if result is not None and result.position is not None:
        await runner.wait_until(result.position)


async def read_models(runner: ProjectionRunner, bus: CommandBus, clock: Clock) -> None:
    step("Grace Hopper gets two invoices and Ada a third; the runner projects them live")
    await send_and_wait(
        runner,
        bus,
        RegisterCustomer("grace", "Grace Hopper", "grace@example.com"),
        CreateInvoice("inv-4", "grace", "EUR", DUE),
        AddInvoiceLine("inv-4", "compiler", 90000, "EUR"),
        AddInvoiceLine("inv-4", "manual", 2500, "EUR"),
        IssueInvoice("inv-4", clock.now),
        CreateInvoice("inv-5", "grace", "EUR", LATER),
        AddInvoiceLine("inv-5", "cable", 1200, "EUR"),
        IssueInvoice("inv-5", clock.now),
        CreateInvoice("inv-6", "ada", "EUR", DUE),
        AddInvoiceLine("inv-6", "lamp", 4500, "EUR"),
        IssueInvoice("inv-6", clock.now),
    )
    say("each send is followed by [bold]runner.wait_until(result.position)[/]: read your writes")
    table = columns("invoice", "customer", "due", "status", "total", "paid")
    for row in await list_invoices(runner.database):
        table.add_row(
            row.invoice_id,
            row.customer_id,
            f"{row.due_date:%b %d}",
            row.status,
            euros(row.total),
            euros(row.paid),
        )
    console.print(Panel(table, title="SELECT * FROM invoices  (InvoiceList)", expand=False))
    await show_balances(runner)


async def show_balances(runner: ProjectionRunner) -> None:
    table = columns("customer", "currency", "invoices", "outstanding")
    for balance in await customer_balances(runner.database):
        table.add_row(
            balance.customer_id,
            balance.currency,
            str(balance.invoices),
            euros(balance.outstanding),
        )
    console.print(Panel(table, title="customer_balances  (CustomerBalances)", expand=False))


async def full_text_search(runner: ProjectionRunner) -> None:
    step("Full-text search (SearchIndex): every word must match; ranked, snippets show why")
    for text in ("grace", "lamp", "ada pen", '"lamp AND'):
        hits = await search_invoices(runner.database, text)
        found = ", ".join(f"{hit.invoice_id} ({hit.status}: {escape(hit.snippet)})" for hit in hits)
        say(f"{text!r:14} → {len(hits)} hit{'' if len(hits) == 1 else 's'}  {found}")
    say("user text is quoted word by word: '\"lamp AND' searches for two words, no syntax error")


async def reminders(runner: ProjectionRunner, bus: CommandBus, clock: Clock) -> None:
    step("The reminder process: Ada pays inv-6 in time; Grace's inv-4 stays unpaid")
    await send_and_wait(runner, bus, PayInvoice("inv-6", 4500, clock.advance(days=10)))
    process = runner.worker(InvoiceReminders.name).projection
    assert isinstance(process, InvoiceReminders)
    start = await bus.store.last_position()

    async def tick_at(moment: dt.datetime, why: str) -> None:
        before = await bus.store.last_position()
        clock.now = moment
        await process.tick(runner.database, clock())  # the runner also ticks it every second
        await runner.wait_until(await bus.store.last_position())
        sent = [f"{e.type} to {e.stream}" async for e in bus.store.read_all(after=before)]
        say(f"{moment:%b %d}, {why}: tick → {', '.join(sent) or 'nothing sent'}")

    await tick_at(dt.datetime(2024, 6, 1, 9, 0, tzinfo=dt.UTC), "the day after the due date")
    await tick_at(dt.datetime(2024, 6, 2, 9, 0, tzinfo=dt.UTC), "a day later")
    await tick_at(dt.datetime(2024, 6, 14, 9, 0, tzinfo=dt.UTC), "14 days past due")
    table = columns("pos", "stream", "type", "process_manager", "caused by")
    async for e in bus.store.read_all(after=start):
        cause = await bus.store.find_event(uuid.UUID(str(e.metadata["causation_id"])))
        table.add_row(
            str(e.position),
            e.stream,
            e.type,
            str(e.metadata.get("process_manager", "")),
            "" if cause is None else f"{cause.type} at {cause.position}",
        )
    console.print(table)
    overdue = await find_invoice(runner.database, "inv-4")
    assert overdue is not None
    say(
        f"inv-4 is now [bold]{overdue.status}[/] in the invoice list; inv-6 was paid, so its"
        " reminder was never sent; each command's id derives from the process and the step,"
        " so ticks repeated after a crash or restart replay instead of sending again"
    )
    await show_balances(runner)


async def causal_trace(store: eskit.EventStore) -> None:
    step("Why was inv-4 marked overdue? Its causes, back to the command that issued it")
    overdue = [e async for e in store.read_stream("invoice-inv-4") if e.type.endswith("Overdue")]
    event = overdue[-1]
    found = await trace(store, event.metadata["correlation_id"])
    say(
        f"eskit trace follows correlation {short(event.metadata['correlation_id'])}: the"
        f" command, the events it wrote, and what the process sent in answer"
        f" ({found.count} events in the chain)"
    )
    console.print(render_trace(found))


class RateColumn(ProgressColumn):
    """Events per second, as the rebuild goes."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} events/s", style="progress.data.speed")


async def import_history(store: eskit.EventStore, invoices: int) -> None:
    """Invoices moved over from the old billing system: their events written with
    ``append_many``, 250 streams per atomic append (an import of facts, not commands)."""
    repository = Repository(store, events, Invoice.model())
    due = dt.date(2024, 7, 31)
    appends = []
    for n in range(invoices):
        number = f"old-{n:05}"
        history = [
            InvoiceCreated(number, f"customer-{n % 40}", "EUR", due),
            InvoiceLineAdded(f"sku-{n % 97}", 1000 + n % 500),
            InvoiceLineAdded(f"sku-{n % 89}", 2000),
            InvoiceIssued(START, 3000 + n % 500),
            InvoicePaid(3000 + n % 500, START),
        ]
        new_events = repository.to_new_events(history, {"imported_from": "old-billing"})
        appends.append(Append(f"invoice-{number}", new_events, eskit.NO_STREAM))
    for first in range(0, len(appends), 250):
        await store.append_many(appends[first : first + 250])


async def rebuild(runner: ProjectionRunner, store: eskit.EventStore) -> None:
    invoices = 5000
    step(f"Rebuild: {invoices:,} old invoices are imported, then InvoiceList is rebuilt")
    await import_history(store, invoices)
    head = await store.last_position()
    await runner.wait_until(head)
    say(f"the log holds {head:,} events; every projection followed it live")
    db = runner.database
    before = await db.read(lambda c: st.digest(c, InvoiceList.tables))
    reads: list[asyncio.Task[int]] = []  # readers querying the list all through the rebuild

    def advanced(position: int, at_head: int) -> None:
        bar.update(task, completed=position, total=at_head)
        reads.append(asyncio.create_task(count_invoices(db)))

    bar = Progress(
        TextColumn("  rebuilding invoice_list"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    with bar:
        task = bar.add_task("rebuild", total=head)
        await runner.rebuild(InvoiceList.name, progress=advanced)
    counts = set(await asyncio.gather(*reads))
    after = await db.read(lambda c: st.digest(c, InvoiceList.tables))
    live = await db.read(lambda c: st.load(c, InvoiceList.name))
    assert live is not None
    say(
        "the new build was written beside the live one, then swapped in with one transaction:"
        f" `invoices` now reads invoices__g{live.generation}"
    )
    say(f"{len(reads)} reads counted the invoices during the rebuild; they saw {sorted(counts)}")
    say(f"digest before {before[:16]}…  after {after[:16]}…")
    if before == after:
        say("[green]✓ digests equal: the rebuilt read model is identical[/]")
    else:
        say("[red]✗ digests differ![/]")
    table = columns("projection", "version", "position", "lag", "status")
    for status in await runner.status():
        table.add_row(
            status.name, str(status.version), str(status.position), str(status.lag), status.status
        )
    console.print(table)


async def demo(path: Path) -> None:
    url = f"sqlite:///{path}"
    console.print(Panel(f"Invoicing on [bold]{url}[/]", title="eskit write side"))
    clock = Clock(START)
    async with eskit.open_store(url, clock=clock) as store:
        bus = invoicing(store)
        async with ProjectionRunner(store, projections(store, bus, clock)) as runner:
            await register_customer(bus)
            await invoice_life(bus, clock)
            await idempotent_payment(bus, clock)
            await events_table(store)
            await time_travel(bus)
            await broken_rule(bus, clock)
            await conflict_retried(store, bus)
            await snapshot(bus, store)
            await unique_email(bus)
            console.print(Panel("Read models, search, a process manager", title="eskit read side"))
            await read_models(runner, bus, clock)
            await full_text_search(runner)
            await reminders(runner, bus, clock)
            await causal_trace(store)
            await rebuild(runner, store)
    console.print(Panel(f"Done. {path} was a temporary file; it is removed now.", style="green"))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="eskit-invoicing-") as folder:
        asyncio.run(demo(Path(folder) / "events.db"))


if __name__ == "__main__":
    main()
