"""``eskit backup`` and ``eskit restore-backup``: a whole store to one file and back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

import eskit
from eskit.cli.common import Phase, Url, fail, opened, out, progress_bars, run
from eskit.cli.forget import keystore_at
from eskit.cli.records import Column, show_records
from eskit.cli.verify import AnchorsFile, SaveFile, show_report
from eskit.store.audit import Anchors, load_anchors, save_anchors
from eskit.store.backup import Manifest, Phases, Restored, backup, restore_backup

if TYPE_CHECKING:
    from eskit.privacy import KeyStore

File = Annotated[Path, typer.Argument(help="Backup file, e.g. events.backup.", dir_okay=False)]
Keys = Annotated[
    str | None,
    typer.Option(
        "--keys",
        help="Key store URL: record (backup) or compare (restore) how many subject keys each"
        " master key wraps. No key is ever put in the backup.",
        show_default=False,
    ),
]


def backup_command(url: Url, file: File, keys: Keys = None) -> None:
    """Write a consistent copy of the whole store to one file, while it is in use.

    Everything in the store's file or schema: the log, stream metadata and tombstones,
    snapshots, projection checkpoints and read models, subscription groups. SQLite: its
    online backup API; PostgreSQL: pg_dump of the store's schema (pg_dump must be on PATH).
    The file appears only when whole, sealed with a digest of every table.

    Example: eskit backup sqlite:///./events.db events.backup
    """
    units = {"copying": _steps(url), "writing": "bytes"}
    with progress_bars("copying", "writing", units=units) as bars:
        manifest = run(_backup(url, file, keys, _phases(("copying", "writing"), bars)))
    snapshot = manifest.snapshot
    out().print(
        Text(
            f"backed up {snapshot.events} events (head {snapshot.head}) and"
            f" {len(snapshot.tables)} tables to {file} ({manifest.payload_size} bytes)"
        ),
        soft_wrap=True,
    )
    out().print(Text(f"sha256:{manifest.payload_sha256}"), soft_wrap=True)


def restore_command(
    file: File,
    url: Url,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a store that is not empty.")
    ] = False,
    anchors: AnchorsFile = None,
    save: SaveFile = None,
    keys: Keys = None,
) -> None:
    """Restore a backup into a store, then prove it identical to what was backed up.

    The whole file is checked first (a file cut short or altered is refused); a store that
    holds anything is refused unless --force. The restore runs in one transaction: killed
    midway, it leaves the store as it was. Then every table's digest is compared with the
    backup's and `eskit verify` runs on the result (with --anchors, if given). Exit status 1
    if anything differs.

    Example: eskit restore-backup events.backup sqlite:///./restored.db --anchors anchors.jsonl
    """
    known = load_anchors(anchors) if anchors is not None else None
    names = ("checking", "restoring", "verifying")
    units = {"checking": "bytes", "restoring": _steps(url)}
    with progress_bars(*names, units=units) as bars:
        restored = run(_restore(file, url, force, known, keys, _phases(names, bars)))
    if save is not None:
        save_anchors(save, restored.report.anchors())
    _show(file, url, restored)
    if not restored.report.ok:
        fail(f"{len(restored.report.problems)} problem(s) in the restored store's chains")


def _steps(url: str) -> str:
    """What the store's copy and restore count (its capability; "steps" if it has none)."""
    try:
        engine = eskit.open_store(url).backup_engine()  # not opened: nothing is connected
    except ValueError:  # a URL eskit cannot open: the command itself says so
        return "steps"
    return "steps" if engine is None else engine.steps


def _phases(names: tuple[str, ...], bars: list[Phase]) -> Phases:
    by_name = dict(zip(names, bars, strict=True))

    def update(name: str, done: int, total: int) -> None:
        by_name[name](done, total)

    return update


async def _backup(url: str, file: Path, keys: str | None, progress: Phases) -> Manifest:
    with _keys(keys) as keystore:
        async with opened(url, readonly=True) as store:
            return await backup(store, file, keys=keystore, progress=progress)


async def _restore(
    file: Path,
    url: str,
    force: bool,
    anchors: Anchors | None,
    keys: str | None,
    progress: Phases,
) -> Restored:
    with _keys(keys) as keystore:
        return await restore_backup(
            file, url, force=force, anchors=anchors, keys=keystore, progress=progress
        )


@contextlib.contextmanager
def _keys(url: str | None) -> Iterator[KeyStore | None]:
    if url is None:
        yield None
        return
    with keystore_at(url) as keystore:
        yield keystore


def _show(file: Path, url: str, restored: Restored) -> None:
    snapshot = restored.manifest.snapshot
    record = {
        "events": snapshot.events,
        "head": snapshot.head,
        "tables": len(snapshot.tables),
        "backed_up": restored.manifest.created_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
    show_records(RESTORED_COLUMNS, [record], title=f"{file} restored into {url}", as_json=False)
    out().print(Text("every table matches the backup's digest"))
    for master in restored.keys_missing:
        out().print(
            Text(
                f"the key store has no subject key wrapped by master key {master} any more:"
                " their subjects' fields read as masks",
                style="yellow",
            ),
            soft_wrap=True,
        )
    show_report(url, restored.report)


RESTORED_COLUMNS = (
    Column("events", right=True),
    Column("head", right=True),
    Column("tables", right=True),
    Column("backed_up", "backed up", names=True),
)
