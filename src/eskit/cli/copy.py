"""``eskit copy``: one store's log into another (SQLite to PostgreSQL, and back)."""

from __future__ import annotations

import shlex
import urllib.parse
from typing import Annotated

import typer
from rich.text import Text

from eskit.cli.common import err, opened, out, progress_bar, run
from eskit.store.copy import Copied, copy_store
from eskit.store.transfer import Progress

Source = Annotated[
    str,
    typer.Argument(help="The store to copy from, e.g. sqlite:///./events.db", show_default=False),
]
Target = Annotated[
    str,
    typer.Argument(
        help="The store to copy into: empty, or holding an earlier copy of the source, e.g."
        " postgresql://postgres@localhost/app",
        show_default=False,
    ),
]


def copy(source: Source, target: Target) -> None:
    """Copy every event of one store into another, keeping ids, streams, versions, metadata
    and order, then compare both logs (count and digest).

    The target must be empty or hold an earlier copy of the source: copying again adds only
    what is missing. Projections are not copied: rebuild them on the target.

    Example: eskit copy sqlite:///./events.db postgresql://postgres@localhost/app
    """
    with progress_bar("copying") as bar:
        copied, apart = run(_copy(source, target, bar))
    console = out()
    console.print(
        Text(f"copied {copied.count} events ({copied.copied} appended now)"), soft_wrap=True
    )
    for side, position in (("source", copied.source_position), ("target", copied.target_position)):
        console.print(
            Text(
                f"{side}: {copied.count} events, last position {position},"
                f" digest sha256:{copied.digest}"
            ),
            soft_wrap=True,
        )
    console.print(Text("the target's log matches the source's"), soft_wrap=True)
    database = " --database read_models.db" if apart else ""
    err().print(
        Text.assemble(
            ("note: ", "bold yellow"),
            "projections and read models are not copied; rebuild each one on the target:\n"
            f"  eskit projections rebuild {_shown(target)} NAME --app module:attribute{database}",
            (
                "\n(read models in PostgreSQL are not implemented yet: keep them in a SQLite"
                " file with --database)"
                if apart
                else ""
            ),
        ),
        soft_wrap=True,
    )


async def _copy(source: str, target: str, bar: Progress) -> tuple[Copied, bool]:
    """Copy with one bar for both phases: the copy fills its first half (source positions),
    the final read of the target its second half (target positions). Also whether the
    target's own read models are not in SQLite (``read_models_in_sqlite``), for the note."""
    head = 0

    def copying(done: int, total: int) -> None:
        nonlocal head
        head = total
        bar(done, 2 * total)

    def verifying(done: int, total: int) -> None:
        bar(head + done, head + total)

    async with opened(source, readonly=True) as reader, opened(target) as writer:
        copied = await copy_store(reader, writer, copying, verify_progress=verifying)
        return copied, not writer.read_models_in_sqlite


def _shown(url: str) -> str:
    """The URL as a shell argument, its password hidden."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        url = urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    return shlex.quote(url)
