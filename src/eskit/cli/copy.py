"""``eskit copy``: one store's log into another (SQLite to PostgreSQL, and back)."""

from __future__ import annotations

import shlex
import urllib.parse
from typing import Annotated

import typer
from rich.text import Text

from eskit.cli.common import Phase, err, opened, out, progress_bars, run
from eskit.store.copy import Copied, copy_store

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
    with progress_bars("copying", "verifying") as (copying, verifying):
        copied = run(_copy(source, target, copying, verifying))
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
    err().print(
        Text.assemble(
            ("note: ", "bold yellow"),
            "projections and read models are not copied; rebuild each one on the target:\n"
            f"  eskit projections rebuild {shown_url(target)} NAME --app module:attribute",
        ),
        soft_wrap=True,
    )


async def _copy(source: str, target: str, copying: Phase, verifying: Phase) -> Copied:
    """Copy, then read the target back: two phases, each with its own bar."""
    async with opened(source, readonly=True) as reader, opened(target) as writer:
        return await copy_store(reader, writer, copying, verify_progress=verifying)


def shown_url(url: str) -> str:
    """The URL as a shell argument, its password hidden."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        url = urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    return shlex.quote(url)
