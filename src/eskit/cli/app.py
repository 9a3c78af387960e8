"""The root of the ``eskit`` command: each command is a thin shell over the library with an
example in its help; errors are one red line and exit status 1."""

from __future__ import annotations

import typer

from eskit.cli import (
    backup,
    copy,
    events,
    forget,
    migrate,
    migrate_events,
    projections,
    relay,
    serve,
    streams,
    subscriptions,
    tokens,
    transfer,
)
from eskit.cli.archive import archive_command, restore_command
from eskit.cli.common import Url, opened, run
from eskit.cli.grpc_serve import grpc_command
from eskit.cli.records import AsJson, Column, show_records
from eskit.cli.scavenge import scavenge_command
from eskit.cli.trace import trace_command
from eskit.cli.verify import verify_command

app = typer.Typer(
    help="eskit: inspect and operate an event store.",
    no_args_is_help=True,
    # plain click help: typer's rich help shows a flag with a value type (`--help <bool>`)
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,  # a crash's locals may hold decrypted personal data
)


@app.callback()
def _root() -> None:
    """eskit: inspect and operate an event store."""


@app.command()
def info(url: Url, as_json: AsJson = False) -> None:
    """Show the size of a store.

    Example: eskit info sqlite:///./events.db
    """
    position = run(_last_position(url))
    record = {"store": url, "last_position": position}
    show_records(INFO_COLUMNS, [record], title=url, as_json=as_json)


INFO_COLUMNS = (Column("store", names=True), Column("last_position", right=True))


async def _last_position(url: str) -> int:
    async with opened(url, readonly=True) as store:
        return await store.last_position()


app.add_typer(streams.app, name="streams")
app.add_typer(events.app, name="events")
app.add_typer(projections.app, name="projections")
app.add_typer(subscriptions.app, name="subscriptions")
app.command("trace")(trace_command)
app.command("verify")(verify_command)
app.command("scavenge")(scavenge_command)
app.command("archive")(archive_command)
app.command("restore")(restore_command)
app.command("export")(transfer.export)
app.command("import")(transfer.import_)
app.command("backup")(backup.backup_command)
app.command("restore-backup")(backup.restore_command)
app.command("copy")(copy.copy)
app.command("migrate")(migrate.migrate)
app.command("migrate-events")(migrate_events.migrate_events_command)
app.command("relay")(relay.relay)
app.command("serve")(serve.serve)
app.command("grpc")(grpc_command)
app.add_typer(tokens.app, name="tokens")
app.command("forget")(forget.forget_command)
app.add_typer(forget.app, name="keys")


def main() -> None:
    app()
