"""Operator commands; each one is a thin shell over the library with an example in --help."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

import eskit

app = typer.Typer(help="eskit: inspect and operate an event store.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")


@app.callback()
def _root() -> None:
    """eskit: inspect and operate an event store."""


@app.command()
def info(url: str = typer.Argument(..., help="Store URL, e.g. sqlite:///./events.db")) -> None:
    """Show the size of a store.

    Example: eskit info sqlite:///./events.db
    """
    position = run(_last_position(url))
    table = Table(title=url)
    table.add_column("store")
    table.add_column("last position", justify="right")
    table.add_row(url, str(position))
    console.print(table)


def run(work: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; show eskit's and input errors as one clear line."""
    try:
        return asyncio.run(work)
    except (ValueError, eskit.EskitError) as error:
        err_console.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from error


async def _last_position(url: str) -> int:
    async with eskit.open_store(url) as store:
        return await store.last_position()


def main() -> None:
    app()
