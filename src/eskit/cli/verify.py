"""``eskit verify``: prove that no event was altered or removed behind eskit's back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from eskit.cli.common import Url, fail, opened, out, progress_bar, run
from eskit.cli.records import Column, show_records
from eskit.store.audit import Anchors, AuditReport, load_anchors, save_anchors, verify

AnchorsFile = Annotated[
    Path | None,
    typer.Option(
        "--anchors",
        help="Anchors saved by an earlier run (--save-anchors): finds events cut off the end"
        " and a chain start that moved.",
    ),
]
SaveFile = Annotated[
    Path | None,
    typer.Option(
        "--save-anchors",
        help="Write where every stream ends now and the chain start, for the next run.",
    ),
]


def verify_command(url: Url, anchors: AnchorsFile = None, save: SaveFile = None) -> None:
    """Check every stream's hash chain (and, with --anchors, that no stream lost its end).

    Set ESKIT_AUDIT_KEY as the writers had it. Exit status 1 if anything was altered,
    moved or removed; each finding names the stream, version and position. What each
    combination of key and anchors detects: docs/security.md.

    Example: eskit verify sqlite:///./events.db --anchors anchors.jsonl
    """
    known = load_anchors(anchors) if anchors is not None else None
    with progress_bar("verifying") as bar:
        report = run(_verify(url, known, bar))
    if save is not None:
        save_anchors(save, report.anchors())
    show_report(url, report)
    if not report.ok:
        fail(f"{len(report.problems)} problem(s): the log was changed behind eskit's back")


async def _verify(
    url: str, anchors: Anchors | None, progress: Callable[[int, int], None]
) -> AuditReport:
    async with opened(url, readonly=True) as store:
        return await verify(store, anchors=anchors, progress=progress)


def show_report(url: str, report: AuditReport) -> None:
    console = out()
    counts = {
        "events": report.events,
        "streams": report.streams,
        "unlinked": report.unlinked,
        "problems": len(report.problems),
    }
    show_records(SUMMARY_COLUMNS, [counts], title=f"hash chains of {url}", as_json=False)
    if report.chain_start is not None:
        console.print(Text(f"the chain starts at position {report.chain_start.position}"))
    if report.removed:
        why = ", ".join(f"{count} {reason}" for reason, count in sorted(report.removed.items()))
        console.print(Text(f"{sum(report.removed.values())} events were scavenged ({why})"))
    if report.unlinked:
        console.print(Text(f"{report.unlinked} events predate the chain and were not checked"))
    if report.problems:
        found = [
            {"stream": p.stream, "version": p.version, "position": p.position, "what": p.what}
            for p in report.problems
        ]
        show_records(PROBLEM_COLUMNS, found, title="problems", as_json=False)


SUMMARY_COLUMNS = tuple(
    Column(key, right=True) for key in ("events", "streams", "unlinked", "problems")
)
PROBLEM_COLUMNS = (
    Column("stream", names=True),
    Column("version", right=True),
    Column("position", right=True),
    Column("what", names=True, style=lambda _: "bold red"),
)
