"""``eskit archive`` and ``eskit restore``: whole streams to compressed files and back."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from eskit.cli.common import Phase, Url, fail, opened, progress_bar, run
from eskit.cli.records import AsJson, Column, show_records
from eskit.store.archive import ArchiveReport, RestoreReport, archive, parse_age, restore

Directory = Annotated[Path, typer.Argument(help="The archive's directory.", show_default=False)]
Category = Annotated[str, typer.Option("--category", help="The category to archive.")]
PerFile = Annotated[
    int, typer.Option("--events-per-file", min=1, help="Close a file after this many events.")
]
OlderThan = Annotated[
    str,
    typer.Option("--older-than", help="Archive streams whose last event is older: 365d, 12h, 2w."),
]


def archive_command(
    url: Url,
    directory: Directory,
    category: Category,
    older_than: OlderThan,
    events_per_file: PerFile = 100_000,
    as_json: AsJson = False,
) -> None:
    """Write whole streams of a category whose last event is older than --older-than to
    compressed files in DIRECTORY (new or empty), with a manifest and SHA-256 digests, then
    scavenge them from the store (recorded as archived). Bring them back with
    `eskit restore`; see docs/lifecycle.md.

    Example: eskit archive sqlite:///./events.db --category order --older-than 365d ./2025
    """
    try:
        age = parse_age(older_than)
    except ValueError as error:
        fail(str(error))
    with progress_bar("archiving") as bar:
        report = run(_archive(url, directory, category, age, events_per_file, bar))
    record = {
        "streams": report.streams,
        "events": report.events,
        "removed": report.removed,
        "kept": len(report.kept),
        "files": report.files,
        "seconds": round(report.seconds, 3),
    }
    columns = [Column(key, right=True) for key in record]
    title = f"archive of {category} into {directory}"
    show_records(columns, [record], title=title, as_json=as_json)


async def _archive(
    url: str, directory: Path, category: str, age: dt.timedelta, per_file: int, bar: Phase
) -> ArchiveReport:
    async with opened(url, create=False) as store:
        return await archive(
            store,
            directory,
            category=category,
            older_than=age,
            progress=lambda n: bar(n, n),
            events_per_file=per_file,
        )


def restore_command(url: Url, directory: Directory, as_json: AsJson = False) -> None:
    """Bring an archive back: its events return at their original positions, with their
    ids, links and times, once every file's digest is checked. Live subscribers past those
    positions are not sent them again; a rebuild sees them. Running it again changes nothing.

    Example: eskit restore sqlite:///./events.db ./2025
    """
    with progress_bar("restoring") as bar:
        report = run(_restore(url, directory, bar))
    record = {"events": report.events, "present": report.present, "files": report.files}
    columns = [Column(key, right=True) for key in record]
    show_records(columns, [record], title=f"restore of {directory}", as_json=as_json)


async def _restore(url: str, directory: Path, bar: Phase) -> RestoreReport:
    async with opened(url, create=False) as store:
        return await restore(store, directory, progress=bar)
