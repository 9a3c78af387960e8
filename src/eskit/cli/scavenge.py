"""``eskit scavenge``: physically remove the events reads no longer show, online."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from eskit.cli.common import Phase, Url, opened, out, progress_bar, run
from eskit.cli.records import AsJson, Column, show_records
from eskit.store.scavenge import ScavengeReport, scavenge

BatchSize = Annotated[
    int,
    typer.Option(
        "--batch-size", min=1, help="Events removed per transaction (appends wait at most one)."
    ),
]
FullVacuum = Annotated[
    bool,
    typer.Option(
        "--full-vacuum",
        help="SQLite: VACUUM the whole file once (blocks writers while it runs) so that it"
        " gives space back incrementally from then on; PostgreSQL: VACUUM FULL (locks the"
        " tables).",
    ),
]
NoMaintenance = Annotated[
    bool, typer.Option("--no-vacuum", help="Remove events only; give no space back.")
]


def scavenge_command(
    url: Url,
    batch_size: BatchSize = 1000,
    full_vacuum: FullVacuum = False,
    no_vacuum: NoMaintenance = False,
    as_json: AsJson = False,
) -> None:
    """Remove for good the events of deleted and tombstoned streams and those past their
    max-count, max-age or truncate-before, while the store is in use.

    Each removal is recorded (position, id, reason, link) in the transaction that deletes
    the event; streams keep their heads, so versions continue, retries are still recognised
    and `eskit verify` still checks. Nothing a registered consumer (projection, relay,
    subscription group) has not passed is removed. On PostgreSQL, connect as the tables'
    owner. See docs/lifecycle.md.

    Example: eskit scavenge sqlite:///./events.db
    """
    with progress_bar("scavenging", unit="streams") as bar:
        report = run(_scavenge(url, batch_size, not no_vacuum, full_vacuum, bar))
    _show(url, report, as_json)


async def _scavenge(
    url: str, batch_size: int, maintain: bool, full: bool, bar: Phase
) -> ScavengeReport:
    async with opened(url, create=False) as store:
        return await scavenge(
            store,
            batch_size=batch_size,
            maintain=maintain,
            full_vacuum=full,
            progress=lambda done, total, _removed: bar(done, total),
        )


def _show(url: str, report: ScavengeReport, as_json: bool) -> None:
    record = {
        "streams": report.streams,
        "removed": report.total,
        **{f"removed_{why}": count for why, count in report.removed.items()},
        "size_before": report.size_before,
        "size_after": report.size_after,
        "seconds": round(report.seconds, 3),
    }
    columns = [Column(key, right=True) for key in record]
    show_records(columns, [record], title=f"scavenge of {url}", as_json=as_json)
    if report.maintenance and not as_json:
        out().print(Text(report.maintenance))
