"""``eskit migrate-events``: copy a store into a new one through a migration's function
(``eskit.migration``), for a blue/green switch."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from eskit.cli.common import Phase, err, fail, import_attribute, opened, out, progress_bars, run
from eskit.cli.copy import Source, Target, shown_url
from eskit.migration import EventMigration, Migrated, migrate_events

MigrationSpec = Annotated[
    str,
    typer.Option(
        "--app",
        help="module:attribute holding the EventMigration (e.g. myapp.migrations:v2).",
        show_default=False,
    ),
]


def migrate_events_command(source: Source, target: Target, spec: MigrationSpec) -> None:
    """Copy every event of one store into another through a migration's function, which
    keeps, changes, renames, splits or drops each one; then check the target (count and
    digest) and record the migration in it (EventsMigrated in eskit.migration-NAME).

    The target must be empty or hold an earlier run of the same migration: running it
    again (after a crash, or once the source gained events) appends only what is missing.
    Projections are not copied: rebuild them on the target.

    Example: eskit migrate-events sqlite:///./blue.db sqlite:///./green.db --app app.migrations:v2
    """
    migration = _migration(spec)
    if source == target:
        fail("the source and the target are the same store: migrate into a new one")
    with progress_bars("migrating", "verifying") as (migrating, verifying):
        done = run(_migrate(source, target, migration, migrating, verifying))
    console = out()
    lines = [
        f"migrated {done.read.count} events into {done.written.count}"
        f" ({done.appended} appended now): {done.kept} kept, {done.changed} changed,"
        f" {done.split} split into {done.split_off} more, {done.dropped} dropped",
        f"source: {done.read.count} events, last position {done.source_position},"
        f" digest sha256:{done.read.digest}",
        f"target: {done.written.count} events, last position {done.target_position},"
        f" digest sha256:{done.written.digest}",
        "the target holds what the migration wrote; "
        + (
            f"recorded in {migration.record_stream}"
            if done.recorded
            else f"already recorded in {migration.record_stream}"
        ),
    ]
    for line in lines:
        console.print(Text(line), soft_wrap=True)
    err().print(
        Text.assemble(
            ("note: ", "bold yellow"),
            "projections and read models are not copied; rebuild each one on the target:\n"
            f"  eskit projections rebuild {shown_url(target)} NAME --app module:attribute",
        ),
        soft_wrap=True,
    )


def _migration(spec: str) -> EventMigration:
    try:
        found = import_attribute(spec)
    except ValueError as error:
        fail(str(error))
    if not isinstance(found, EventMigration):
        fail(f"--app {spec}: expected an eskit.migration.EventMigration, got {found!r:.60}")
    return found


async def _migrate(
    source: str, target: str, migration: EventMigration, migrating: Phase, verifying: Phase
) -> Migrated:
    async with opened(source, readonly=True) as reader, opened(target) as writer:
        return await migrate_events(reader, writer, migration, migrating, verify_progress=verifying)
