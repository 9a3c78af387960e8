"""A short tour of the eskit event store on an embedded SQLite file.

Run it with ``make demo``. It appends invoice events, catches a concurrency conflict,
reads a stream and the global log, and follows new events with a live subscription.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

import eskit

console = Console()


def show(events: list[eskit.RecordedEvent], title: str) -> None:
    table = Table(title=title, title_justify="left")
    for column in ("position", "stream", "version", "type", "data"):
        table.add_column(column, justify="right" if column in ("position", "version") else "left")
    for e in events:
        table.add_row(str(e.position), e.stream, str(e.version), e.type, str(e.data))
    console.print(table)


def step(text: str) -> None:
    console.print(f"\n[bold cyan]▸ {text}[/]")


async def tour(path: Path) -> None:
    url = f"sqlite:///{path}"
    console.print(Panel(f"Opening the event store [bold]{url}[/]", title="eskit store tour"))
    async with eskit.open_store(url) as store:
        step("Append: create invoice-42 (expected_version=NO_STREAM: it must not exist yet)")
        created = await store.append(
            "invoice-42",
            [eskit.NewEvent("InvoiceCreated", {"customer_id": "c-1", "amount": 120})],
            expected_version=eskit.NO_STREAM,
        )
        console.print(
            f"  written at version {created.last_version}, position {created.last_position}"
        )

        step("Two clerks both loaded invoice-42 at version 0 and both try to add a line")
        first = store.append(
            "invoice-42",
            [eskit.NewEvent("LineAdded", {"sku": "book", "amount": 30})],
            expected_version=0,
        )
        second = store.append(
            "invoice-42",
            [eskit.NewEvent("LineAdded", {"sku": "pen", "amount": 2})],
            expected_version=0,
        )
        outcomes = await asyncio.gather(first, second, return_exceptions=True)
        for clerk, outcome in zip(("first", "second"), outcomes, strict=True):
            if isinstance(outcome, eskit.WrongExpectedVersion):
                console.print(
                    f"  {clerk} clerk: [red]conflict[/] — expected version {outcome.expected},"
                    f" the stream is at {outcome.actual}; reload and decide again"
                )
            else:
                assert isinstance(outcome, eskit.AppendResult)
                console.print(f"  {clerk} clerk: [green]saved[/] at version {outcome.last_version}")

        step("More invoices, a batch of events in one atomic append")
        await store.append(
            "invoice-43",
            [
                eskit.NewEvent("InvoiceCreated", {"customer_id": "c-2", "amount": 80}),
                eskit.NewEvent("InvoiceSent", {"to": "billing@example.com"}),
            ],
            expected_version=eskit.NO_STREAM,
        )
        await store.append("customer-c-2", [eskit.NewEvent("CustomerRegistered", {"name": "Ada"})])

        step("Read one stream: invoice-42")
        show([e async for e in store.read_stream("invoice-42")], "invoice-42")

        step("Read the global log, only the 'invoice' category")
        show([e async for e in store.read_all(category="invoice")], "read_all(category='invoice')")

        step("Subscribe from position 0: catch up, then go live")
        seen: list[eskit.RecordedEvent] = []
        caught_up = asyncio.Event()
        head = await store.last_position()

        async def follow() -> None:
            async for event in store.subscribe(after=0):
                seen.append(event)
                if event.position >= head:
                    caught_up.set()
                if event.type == "InvoicePaid":
                    return

        follower = asyncio.create_task(follow())
        await caught_up.wait()
        console.print(f"  caught up over {len(seen)} events; now paying invoice-43 …")
        paid = await store.append(
            "invoice-43", [eskit.NewEvent("InvoicePaid", {"amount": 80})], expected_version=1
        )
        await asyncio.wait_for(follower, timeout=5)
        console.print(
            f"  the subscription received position {seen[-1].position} live"
            f" ({seen[-1].type}); the append returned position {paid.last_position}"
        )

        step("Soft-delete invoice-42: it reads as empty, the log keeps its history")
        await store.delete_stream("invoice-42")
        remaining = [e async for e in store.read_stream("invoice-42")]
        console.print(
            f"  read_stream → {len(remaining)} events; stream_version →"
            f" {await store.stream_version('invoice-42')}; last position →"
            f" {await store.last_position()}"
        )
    console.print(Panel(f"Done. {path} was a temporary file; it is removed now.", style="green"))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="eskit-demo-") as folder:
        asyncio.run(tour(Path(folder) / "events.db"))


if __name__ == "__main__":
    main()
