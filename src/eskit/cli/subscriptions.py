"""``eskit subscriptions``: create, change, list and delete consumer groups; list and replay
their parked events."""

from __future__ import annotations

import getpass
from typing import Annotated

import msgspec
import typer

from eskit.cli.common import Url, opened, progress_bar, run, when
from eskit.cli.records import AsJson, Column, show_records
from eskit.subscriptions import EventFilter, Group, Groups, Replay, Settings, Source

app = typer.Typer(
    help="Consumer groups (persistent subscriptions): each event to one consumer, with"
    " ack, nack, park and replay.",
    no_args_is_help=True,
)

Name = Annotated[str, typer.Argument(help="The group's name.", show_default=False)]
Timeout = Annotated[
    float | None, typer.Option(help="Seconds to ack an event before it goes to another.")
]
Retries = Annotated[int | None, typer.Option(help="Deliveries after the first before parking.")]
InFlight = Annotated[int | None, typer.Option(help="Events one consumer holds unacked at most.")]
Strategy = Annotated[str | None, typer.Option(help="round_robin, or pinned (by stream).")]
FilterBy = Annotated[
    str | None, typer.Option(help="Filter the source's events by 'stream' name or event 'type'.")
]
Prefixes = Annotated[
    list[str] | None, typer.Option("--prefix", help="With --filter-by: a prefix (repeatable).")
]
Regex = Annotated[str, typer.Option(help="With --filter-by: a regex searched in the name.")]

GROUP_COLUMNS = (
    Column("name", names=True),
    Column("source"),
    Column("filter", optional=True),
    Column("strategy"),
    Column("checkpoint", right=True),
    Column("lag", right=True),
    Column("in_flight", "in flight", right=True),
    Column("waiting", right=True),
    Column("parked", right=True),
    Column("consumers", shown=", ".join, optional=True),
)
PARKED_COLUMNS = (
    Column("seq", right=True),
    Column("position", right=True),
    Column("stream", names=True),
    Column("event_type", "type"),
    Column("attempts", right=True),
    Column("reason"),
    Column("parked_at", "parked", shown=when),
)
REPLAY_COLUMNS = (
    Column("id", right=True),
    Column("requested_by", "by", names=True),
    Column("up_to", "up to", right=True),
    Column("replayed", right=True),
    Column("requested_at", "asked", shown=when),
    Column("finished_at", "finished", shown=when),
)


def _settings(
    base: Settings,
    message_timeout: float | None,
    max_retries: int | None,
    max_in_flight: int | None,
    strategy: str | None,
) -> Settings:
    given = {
        "message_timeout": message_timeout,
        "max_retries": max_retries,
        "max_in_flight": max_in_flight,
        "strategy": strategy,
    }
    return msgspec.structs.replace(base, **{k: v for k, v in given.items() if v is not None})


def _filter(by: str | None, prefixes: list[str] | None, regex: str) -> EventFilter | None:
    """The filter the options describe, if any; a clear error for a bad one."""
    if by is None:
        if prefixes or regex:
            raise typer.BadParameter("give --filter-by stream or type", param_hint="--filter-by")
        return None
    try:
        return EventFilter(by, tuple(prefixes or ()), regex)  # type: ignore[arg-type]
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--filter-by") from None


def _record(group: Group, head: int) -> dict[str, object]:
    return {
        "name": group.name,
        "source": str(group.source),
        "filter": "" if group.source.filter is None else str(group.source.filter),
        "strategy": group.settings.strategy,
        "checkpoint": group.checkpoint,
        "lag": max(0, head - group.checkpoint),
        "in_flight": group.in_flight,
        "waiting": group.waiting,
        "parked": group.parked,
        "consumers": list(group.consumers),
    }


@app.command()
def create(
    url: Url,
    name: Name,
    source: Annotated[str, typer.Option(help="$all, $ce-<category>, or a stream name.")] = "$all",
    start: Annotated[str, typer.Option(help="start, end, or a position.")] = "start",
    message_timeout: Timeout = None,
    max_retries: Retries = None,
    max_in_flight: InFlight = None,
    strategy: Strategy = None,
    filter_by: FilterBy = None,
    prefix: Prefixes = None,
    regex: Regex = "",
) -> None:
    """Create a group, over all of its source's events or those a filter keeps.

    Example: eskit subscriptions create sqlite:///./events.db mail --source '$ce-invoice'

    Example: eskit subscriptions create URL payments --filter-by type --prefix Paid
    """
    settings = _settings(Settings(), message_timeout, max_retries, max_in_flight, strategy)
    kept = _filter(filter_by, prefix, regex)
    begin: str | int = int(start) if start.isdigit() else start
    if begin not in ("start", "end") and not isinstance(begin, int):
        raise typer.BadParameter("start, end, or a position", param_hint="--start")

    async def work() -> None:
        async with opened(url) as store:
            group = await Groups(store).create(
                name,
                Source.parse(source).filtered(kept),
                start=begin,  # type: ignore[arg-type]
                settings=settings,
            )
            shown = "" if group.source.filter is None else f" ({group.source.filter})"
            typer.echo(
                f"created group {group.name} over {group.source}{shown} from {group.checkpoint}"
            )

    run(work())


@app.command()
def update(
    url: Url,
    name: Name,
    message_timeout: Timeout = None,
    max_retries: Retries = None,
    max_in_flight: InFlight = None,
    strategy: Strategy = None,
) -> None:
    """Change a group's settings (those given).

    Example: eskit subscriptions update sqlite:///./events.db mail --max-retries 3
    """

    async def work() -> None:
        async with opened(url, create=False) as store:
            groups = Groups(store)
            group = await groups.get(name)
            settings = _settings(
                group.settings, message_timeout, max_retries, max_in_flight, strategy
            )
            await groups.update(name, settings)
            typer.echo(f"updated group {name}")

    run(work())


@app.command()
def delete(url: Url, name: Name) -> None:
    """Delete a group, its parked events and its replay records.

    Example: eskit subscriptions delete sqlite:///./events.db mail
    """

    async def work() -> None:
        async with opened(url, create=False) as store:
            await Groups(store).delete(name)
            typer.echo(f"deleted group {name}")

    run(work())


@app.command("list")
def list_(url: Url, as_json: AsJson = False) -> None:
    """Show every group: checkpoint, lag, in flight, waiting, parked, live consumers.

    Example: eskit subscriptions list sqlite:///./events.db
    """

    async def work() -> list[dict[str, object]]:
        async with opened(url, create=False) as store:
            head = await store.last_position()
            return [_record(g, head) for g in await Groups(store).list()]

    show_records(GROUP_COLUMNS, run(work()), title="consumer groups", as_json=as_json)


@app.command()
def parked(
    url: Url,
    name: Name,
    after: Annotated[int, typer.Option(help="Show entries after this parked seq.")] = 0,
    limit: Annotated[int, typer.Option(help="Entries at most.")] = 100,
    as_json: AsJson = False,
) -> None:
    """Show a group's parked events with their reasons, a page at a time.

    Example: eskit subscriptions parked sqlite:///./events.db mail --after 100
    """

    async def work() -> list[dict[str, object]]:
        async with opened(url, create=False) as store:
            entries = await Groups(store).parked(name, after=after, limit=limit)
            return [msgspec.structs.asdict(e) for e in entries]

    show_records(PARKED_COLUMNS, run(work()), title=f"parked in {name}", as_json=as_json)


@app.command()
def replay(
    url: Url,
    name: Name,
    up_to: Annotated[
        int | None, typer.Option(help="Replay the parked entries up to this seq (default: all).")
    ] = None,
    by: Annotated[str | None, typer.Option(help="Who asks (recorded; default: you).")] = None,
) -> None:
    """Hand a group's parked events out again (all, or up to a parked seq), with a
    progress bar. The group's checkpoint does not move.

    Example: eskit subscriptions replay sqlite:///./events.db mail --up-to 500
    """

    async def work() -> Replay:
        async with opened(url, create=False) as store:
            with progress_bar(f"replaying {name}") as bar:
                return await Groups(store).replay(
                    name, requested_by=by or getpass.getuser(), up_to=up_to, progress=bar
                )

    record = run(work())
    typer.echo(f"replayed {record.replayed} parked events of {name} (replay {record.id})")


@app.command()
def replays(url: Url, name: Name, as_json: AsJson = False) -> None:
    """Show who replayed a group's parked events, when, and how many.

    Example: eskit subscriptions replays sqlite:///./events.db mail
    """

    async def work() -> list[dict[str, object]]:
        async with opened(url, create=False) as store:
            return [msgspec.structs.asdict(r) for r in await Groups(store).replays(name)]

    show_records(REPLAY_COLUMNS, run(work()), title=f"replays of {name}", as_json=as_json)
