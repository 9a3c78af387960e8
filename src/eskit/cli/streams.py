"""``eskit streams``: list streams, show one, follow the log."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich.json import JSON
from rich.text import Text

import eskit
from eskit.cli.common import Url, err, fail, opened, out, run, when
from eskit.cli.records import AsJson, Column, show_records
from eskit.store.archive import read_stream_through
from eskit.store.model import StreamInfo, readable

app = typer.Typer(
    help="Look at streams and follow the log.\n\nExample: eskit streams list sqlite:///./events.db",
    no_args_is_help=True,
)

Category = Annotated[
    str | None, typer.Option("--category", "-c", help="Only streams of this category.")
]


@app.command("list")
def list_streams(
    url: Url,
    category: Category = None,
    after: Annotated[
        str | None, typer.Option(help="Start after this stream name (the next page).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Streams to show at most.")] = 100,
    as_json: AsJson = False,
) -> None:
    """List streams by name with their last event; deleted ones are flagged.

    Example: eskit streams list sqlite:///./events.db --category invoice
    """
    infos = run(_list(url, category, after, limit + 1))
    records = [
        {
            "stream": info.stream,
            "events": info.event_count,
            "last_position": info.last_position,
            "last_type": info.last_type,
            "last_recorded": info.last_recorded_at,
            "status": info.status,
        }
        for info in infos[:limit]
    ]
    show_records(STREAM_COLUMNS, records, title=f"streams in {url}", as_json=as_json)
    if len(infos) > limit:
        (err() if as_json else out()).print(
            Text(f"more streams follow: add --after {infos[limit - 1].stream!r}"), soft_wrap=True
        )


STREAM_COLUMNS = (
    Column("stream", names=True),
    Column("events", right=True),
    Column("last_position", "position", right=True),
    Column("last_type", "last type", names=True),
    Column("last_recorded", "last recorded", shown=when),
    Column("status", names=True, style=lambda s: "green" if s == "live" else "yellow"),
)


async def _list(url: str, category: str | None, after: str | None, limit: int) -> list[StreamInfo]:
    async with opened(url, readonly=True) as store:
        return await store.list_streams(category=category, after=after, limit=limit)


@app.command()
def show(
    url: Url,
    stream: Annotated[str, typer.Argument(help="Stream name, e.g. invoice-42.")],
    from_version: Annotated[int | None, typer.Option(min=0, help="First version to show.")] = None,
    backwards: Annotated[bool, typer.Option(help="Newest first.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="Events to show at most.")] = 100,
    archive: Annotated[
        Path | None,
        typer.Option(
            help="Read through to this archive (eskit archive): its events of the stream"
            " first, then the store's.",
            show_default=False,
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Show a stream's events with their metadata and data.

    Example: eskit streams show sqlite:///./events.db invoice-42 --backwards --limit 5
    """
    if archive is not None and backwards:
        fail("--backwards reads the store only: leave out --archive, or --backwards")
    events = run(_read(url, stream, from_version, backwards, limit + 1, archive))
    if as_json:
        for event in events[:limit]:
            typer.echo(msgspec.json.encode(event).decode())
        if len(events) > limit:
            err().print(Text(f"more events follow: add --from-version {events[limit].version}"))
        return
    console = out()
    if not events:
        console.print(Text(f"stream {stream!r} has no events"))
        return
    for event in events[:limit]:
        console.rule(Text(f"{event.stream} · v{event.version} · {event.type}"), align="left")
        console.print(
            Text(f"position {event.position} · {when(event.recorded_at)} · id {event.id}"),
            soft_wrap=True,
        )
        console.print(Text("metadata", style="bold"))
        if event.raw_metadata is None:
            console.print(JSON(msgspec.json.encode(event.metadata).decode()))
        else:
            console.print(Text(readable(event.raw_metadata)), soft_wrap=True)
        if event.raw is None:
            console.print(Text("data", style="bold"))
            console.print(JSON(msgspec.json.encode(event.data).decode()))
        else:
            console.print(Text(f"data ({event.content_type or 'no content type'})", style="bold"))
            console.print(Text(readable(event.raw.body)), soft_wrap=True)
    if len(events) > limit:
        next_version = events[limit].version
        console.print(Text(f"more events follow: add --from-version {next_version}"))


async def _read(
    url: str,
    stream: str,
    from_version: int | None,
    backwards: bool,
    limit: int,
    archive: Path | None,
) -> list[eskit.RecordedEvent]:
    async with opened(url, readonly=True) as store:
        if archive is None:
            reading = store.read_stream(stream, from_version, backwards, limit)
            return [event async for event in reading]
        events = []
        through = read_stream_through(store, stream, archive, from_version)
        async with contextlib.aclosing(through) as reading:
            async for event in reading:
                events.append(event)
                if len(events) == limit:
                    break
        return events


@app.command()
def tail(
    url: Url,
    category: Category = None,
    types: Annotated[
        list[str] | None, typer.Option("--type", "-t", help="Only events of this type (repeat).")
    ] = None,
    after: Annotated[
        int | None,
        typer.Option(min=0, help="Start after this position (default: the head: new events)."),
    ] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many events.")] = None,
) -> None:
    """Follow the log live, one line per event, until Ctrl-C.

    Example: eskit streams tail sqlite:///./events.db --category invoice --type InvoicePaid
    """
    run(_tail(url, category, types, after, count))


async def _tail(
    url: str, category: str | None, types: list[str] | None, after: int | None, count: int | None
) -> None:
    console = out()
    seen = 0
    async with opened(url, readonly=True) as store:
        start = await store.last_position() if after is None else after
        async for event in store.subscribe(after=start, types=types or None, category=category):
            data = (
                msgspec.json.encode(event.data).decode()
                if event.raw is None
                else f"({event.content_type}) {readable(event.raw.body)}"
            )
            line = Text.assemble(
                (f"{event.position:>8} ", "dim"),
                (f"{when(event.recorded_at)} ", "dim"),
                (f"{event.stream} v{event.version} ", "cyan"),
                (f"{event.type} ", "bold"),
                data,
            )
            console.print(line, soft_wrap=True)
            seen += 1
            if count is not None and seen >= count:
                return
