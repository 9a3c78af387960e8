"""``eskit projections``: status, run, rebuild, reset and skip, over the projection state kept
in the store's own SQLite file (or ``--database``)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.text import Text

import eskit
from eskit.cli.common import (
    Url,
    err,
    fail,
    import_attribute,
    opened,
    out,
    progress_bar,
    run,
    when,
)
from eskit.cli.records import AsJson, Column, show_records
from eskit.projections import (
    Database,
    PartitionedWorker,
    Projection,
    ProjectionRunner,
    ProjectionStatus,
    SQLProjection,
    database_for,
    leases,
)
from eskit.projections import state as st
from eskit.projections.failure import describe
from eskit.projections.runner import now
from eskit.projections.status import Status, read_stored, statuses

app = typer.Typer(
    help="Operate projections (read models).\n\n"
    "Example: eskit projections status sqlite:///./events.db",
    no_args_is_help=True,
)
T = TypeVar("T")

Name = Annotated[str, typer.Argument(help="Projection name, e.g. invoice_totals.")]
AppSpec = Annotated[
    str,
    typer.Option(
        "--app",
        help="module:attribute holding the projections, or a function of the store returning"
        " them (e.g. myapp.read:projections).",
        show_default=False,
    ),
]
DatabasePath = Annotated[
    str | None,
    typer.Option(
        "--database", help="SQLite file holding the projection state (default: the store's)."
    ),
]


# -- reading and changing the stored state ----------------------------------------------------


@contextlib.asynccontextmanager
async def _database(
    url: str, path: str | None, *, readonly: bool = False
) -> AsyncIterator[tuple[eskit.EventStore, Database]]:
    """The store and the database its projections keep their state in."""
    if path is not None and not await asyncio.to_thread(Path(path).exists):
        raise ValueError(f"no projection database at {path}")
    async with opened(url, readonly=readonly, create=False) as store:
        database = database_for(store, path)
        try:
            yield store, database
        finally:
            await database.close()


async def _on_database(url: str, path: str | None, work: Callable[[sqlite3.Connection], T]) -> T:
    async with _database(url, path) as (_, database):
        return await database.write(work)


@app.command()
def status(url: Url, database: DatabasePath = None, as_json: AsJson = False) -> None:
    """Show every projection: checkpoint, lag behind the log, status, rebuild progress, skips,
    when it was last rebuilt.

    Example: eskit projections status sqlite:///./events.db
    """
    head, rows = run(_status(url, database))
    if not rows and not as_json:
        out().print(Text(f"no projections have run on {url}"))
        return
    records = []
    for row in rows:
        progress = ""
        if row.rebuild_position is not None:
            share = 100 * row.rebuild_position // head if head else 100
            progress = f"v{row.rebuild_version}: {row.rebuild_position}/{head} ({share}%)"
        records.append(
            {
                "name": row.name,
                "version": row.version,
                "position": row.position,
                "lag": row.lag,
                "status": row.status,
                "updated": row.updated_at,
                "rebuild": progress,
                "skips": row.skips,
                "partitions": f"{row.partitions} on {row.owners}" if row.partitions else "",
                "error": _shown_error(row),
                "last_rebuild": row.last_rebuild,
                "last_rebuild_events": row.last_rebuild_events,
                "last_rebuild_seconds": row.last_rebuild_seconds,
            }
        )
    title = f"projections of {url} (head {head})"
    show_records(STATUS_COLUMNS, records, title=title, as_json=as_json)


_COLOURS = {"running": "green", "stuck": "bold red", "failing": "red", "rebuilding": "yellow"}
_STATUS = Column("status", names=True, style=lambda s: _COLOURS.get(s, ""))
STATUS_COLUMNS = (
    Column("name", names=True),
    Column("version", "v", right=True),
    Column("position", right=True),
    Column("lag", right=True),
    _STATUS,
    Column("updated", optional=True, shown=when),
    Column("rebuild", optional=True),
    Column("skips", right=True, optional=True),
    Column("partitions", right=True, optional=True),
    Column("error", optional=True),
    Column("last_rebuild", optional=True, shown=when),
    Column("last_rebuild_events", in_table=False),
    Column("last_rebuild_seconds", in_table=False),
)
RUN_COLUMNS = (
    Column("name", names=True),
    Column("version", "v", right=True),
    Column("position", right=True),
    Column("lag", right=True),
    _STATUS,
    Column("error", optional=True),
)


async def _status(url: str, path: str | None) -> tuple[int, list[Status]]:
    async with _database(url, path, readonly=True) as (store, database):
        head = await store.written_position()
        return head, statuses(head, await database.read(read_stored))


def _shown_error(row: Status) -> str:
    """The error and its event; for stuck partitions, the one stuck earliest and how many
    are."""
    error = _error(row.error, row.error_position, row.error_type)
    if row.stuck_partition is None:
        return error
    stuck = f"{row.stuck_partitions} of {row.partitions} stuck"
    return f"partition {row.stuck_partition} {error} ({stuck})"


def _error(error: str | None, position: int | None, event_type: str | None) -> str:
    """The error and the event it is about (a failed tick is about none)."""
    if error is None or position is None:
        return error or ""
    about = f" ({event_type})" if event_type else ""
    return f"at {position}{about}: {error}"


@app.command()
def reset(
    url: Url,
    name: Name,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    database: DatabasePath = None,
) -> None:
    """Forget a projection: drop its tables and checkpoint; its next run starts over.

    Example: eskit projections reset sqlite:///./events.db invoice_totals --yes
    """
    if not yes:
        typer.confirm(
            f"Drop the tables and checkpoint of projection {name}? It is rebuilt from the"
            " start on its next run",
            abort=True,
        )
    if not run(_on_database(url, database, lambda c: st.reset(c, name))):
        fail(f"no projection named {name!r} in {url}")
    out().print(Text(f"projection {name} reset: it starts over on its next run"))


@app.command()
def skip(
    url: Url,
    name: Name,
    reason: Annotated[
        str, typer.Option(help="Why, and who decided (kept with the skip).", show_default=False)
    ],
    database: DatabasePath = None,
) -> None:
    """Step a stuck projection over the event it fails on (recorded, with the reason).

    A partitioned projection: every stuck partition steps over its event.

    Example: eskit projections skip sqlite:///./events.db invoice_totals --reason "bad data, #123"
    """
    for record in run(
        _on_database(url, database, lambda c: leases.skip_stuck(c, name, reason, now()))
    ):
        out().print(
            Text(
                f"projection {name} skipped event {record.event_id} ({record.event_type}) at"
                f" position {record.position}; it failed with: {record.error}"
            ),
            soft_wrap=True,
        )


# -- running the projections' code -------------------------------------------------------------


@app.command("run")
def run_projections(
    url: Url,
    spec: AppSpec,
    until_caught_up: Annotated[
        bool, typer.Option(help="Catch up to the current head once, then exit.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Run projections: catch up, then follow the log until Ctrl-C or SIGTERM.

    On a stop, each projection finishes the batch in hand first.

    Example: eskit projections run sqlite:///./events.db --app myapp.read:projections
    """
    statuses = run(_run(url, spec, until_caught_up))
    records = [
        {
            "name": s.name,
            "version": s.version,
            "position": s.position,
            "lag": s.lag,
            "status": s.status,
            "error": _error(s.error, s.error_position, s.error_type),
        }
        for s in statuses
    ]
    show_records(RUN_COLUMNS, records, title=f"projections of {url}", as_json=as_json)
    stuck = [s.name for s in statuses if s.status == "stuck"]
    if stuck:
        fail(f"stuck: {', '.join(stuck)} (see the error; fix the code, or skip the event)")


async def _run(url: str, spec: str, until_caught_up: bool) -> list[ProjectionStatus]:
    async with opened(url, create=False) as store:
        runner = ProjectionRunner(store, await load_projections(spec, store))
        try:
            if until_caught_up:
                await runner.run_until_caught_up()
            else:
                await _follow(runner)
        finally:
            await runner.stop()
        return await runner.status()


async def _follow(runner: ProjectionRunner) -> None:
    """Run until SIGINT or SIGTERM; say when every projection has caught up."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        head = await runner.store.last_position()
        names = ", ".join(runner.workers)
        err().print(Text(f"running {names}; Ctrl-C or SIGTERM stops them"), soft_wrap=True)
        await runner.start()
        caught_up = asyncio.ensure_future(runner.wait_until(head))
        stop = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({caught_up, stop}, return_when=asyncio.FIRST_COMPLETED)
        if caught_up.done():
            error = caught_up.exception()
            message = (
                f"caught up to position {head}; following the log"
                if error is None
                else (f"warning: {error}")
            )
            err().print(Text(message, style="yellow" if error else ""), soft_wrap=True)
        else:
            caught_up.cancel()
        await stop
        err().print(Text("stopping: finishing the batches in hand"))
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


@app.command()
def work(
    url: Url,
    name: Name,
    spec: AppSpec,
    partitions: Annotated[
        int, typer.Option(min=1, help="Partitions of the projection (fixed by its first worker).")
    ] = 16,
    lease: Annotated[
        float, typer.Option(min=0.1, help="Seconds a worker holds partitions without a heartbeat.")
    ] = 10.0,
) -> None:
    """Run one worker of a partitioned projection; start more, anywhere, to share the load.

    Each worker takes a fair share of the partitions (streams by hash) and keeps it with
    heartbeats; a worker that dies loses its share to the others after the lease. Stops on
    Ctrl-C or SIGTERM, giving its partitions back.

    Example: eskit projections work postgresql://db/app invoice_totals --app app:projections
    """
    rows = run(_work(url, name, spec, partitions, lease))
    records = [
        {"partition": row.partition, "position": row.position, "owner": row.owner or "free"}
        for row in rows
    ]
    show_records(PARTITION_COLUMNS, records, title=f"partitions of {name}", as_json=False)


PARTITION_COLUMNS = (
    Column("partition", right=True),
    Column("position", right=True),
    Column("owner", names=True),
)


async def _work(
    url: str, name: str, spec: str, partitions: int, lease: float
) -> list[leases.PartitionRow]:
    async with opened(url, create=False) as store:
        found = [p for p in await load_projections(spec, store) if p.name == name]
        if not found:
            raise ValueError(f"--app {spec} has no projection named {name!r}")
        worker = PartitionedWorker(store, found[0], partitions=partitions, lease=lease)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
        await worker.start()
        try:
            err().print(Text(f"worker {worker.worker} of {name}; Ctrl-C or SIGTERM stops it"))
            await stopping.wait()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            await worker.stop()
        database = database_for(store)
        try:  # as left: given back, for the next worker to take
            return await database.read(lambda c: leases.partitions(c, name))
        finally:
            await database.close()


@app.command()
def rebuild(url: Url, name: Name, spec: AppSpec) -> None:
    """Rebuild a projection beside the live one, switch to it, print its digest.

    Readers keep the old read model until the switch.

    Example: eskit projections rebuild sqlite:///./events.db invoice_totals --app app:projections
    """
    with progress_bar(f"rebuilding {name}") as bar:
        position, digest = run(_rebuild(url, name, spec, bar))
    console = out()
    console.print(Text(f"projection {name} rebuilt up to position {position}"))
    if digest is not None:
        console.print(Text(f"digest sha256:{digest}"))


async def _rebuild(
    url: str, name: str, spec: str, progress: Callable[[int, int], None]
) -> tuple[int, str | None]:
    async with opened(url, create=False) as store:
        runner = ProjectionRunner(store, await load_projections(spec, store))
        try:
            worker = runner.worker(name)
            try:
                await runner.rebuild(name, progress=progress)
            except Exception as error:  # a handler's may quote what it decrypted: redacted
                fail(f"rebuilding {name} failed: {describe(error)}")
            position = worker.reached
            projection = worker.projection
            if not isinstance(projection, SQLProjection):
                return position, None
            return position, await worker.db.read(lambda c: st.digest(c, projection.tables))
        finally:
            await runner.stop()


# -- loading the application's projections ----------------------------------------------------


async def load_projections(spec: str, store: eskit.EventStore) -> list[Projection | SQLProjection]:
    """The projections ``module:attribute`` names: a list of them, or a function (maybe
    async) of the store returning one."""
    found: Any = import_attribute(spec)
    if callable(found) and not isinstance(found, Projection | SQLProjection):
        found = found(store)
        if inspect.isawaitable(found):
            found = await found
    if isinstance(found, Projection | SQLProjection):
        found = [found]
    if not isinstance(found, list | tuple) or not found:
        raise ValueError(f"--app {spec}: expected a list of projections, got {found!r}")
    for item in found:
        if not isinstance(item, Projection | SQLProjection):
            raise ValueError(f"--app {spec}: {item!r} is not a Projection or SQLProjection")
    return list(found)
