"""``eskit export`` and ``eskit import``: the log to and from a JSON Lines file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from eskit.cli.common import Url, opened, out, progress_bar, run
from eskit.store.transfer import (
    Imported,
    Progress,
    Summary,
    check_file,
    export_events,
    import_events,
)

File = Annotated[Path, typer.Argument(help="JSON Lines file, e.g. events.jsonl.", dir_okay=False)]


def export(url: Url, file: File) -> None:
    """Write every event of the store to a JSON Lines file, with a closing summary line.

    Example: eskit export sqlite:///./events.db backup.jsonl
    """
    with progress_bar("exporting") as bar:
        summary = run(_export(url, file, bar))
    _report("exported", summary, file)


def import_(url: Url, file: File) -> None:
    """Append an export file's events to a store, keeping ids, streams and versions.

    The whole file is checked first (every line, and its closing summary): a file cut
    short or edited is refused before anything is written, and no store is created for
    it. Every event is read back and checked; importing a file twice writes nothing twice.

    Example: eskit import sqlite:///./copy.db backup.jsonl
    """
    with progress_bar("checking", unit="bytes") as bar:
        checked = run(check_file(file, bar))
    with progress_bar("importing", unit="bytes") as bar:
        imported = run(_import(url, file, checked, bar))
    done = f"{imported.written} written, {imported.present} already present:"
    _report(done, imported, file)


async def _export(url: str, file: Path, progress: Progress) -> Summary:
    async with opened(url, readonly=True) as store:
        return await export_events(store, file, progress)


async def _import(url: str, file: Path, checked: Summary, progress: Progress) -> Imported:
    async with opened(url) as store:
        return await import_events(store, file, progress, checked=checked)


def _report(done: str, summary: Summary, file: Path) -> None:
    console = out()
    console.print(Text(f"{done} {summary.count} events ({file})"), soft_wrap=True)
    console.print(Text(f"digest sha256:{summary.digest}"), soft_wrap=True)
