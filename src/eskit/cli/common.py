"""What every command shares: consoles, running a coroutine with clear errors, opening the
store, progress bars, times for people (tables: ``records``)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

import eskit

T = TypeVar("T")

Url = Annotated[
    str, typer.Argument(help="Store URL, e.g. sqlite:///./events.db", show_default=False)
]


def out() -> Console:
    """The console for results (stdout). Made per call so that it sizes itself to the
    terminal (or ``COLUMNS``) of this invocation."""
    return Console(highlight=False)


def err() -> Console:
    """The console for progress and errors (stderr), so results can be piped."""
    return Console(stderr=True, highlight=False)


def run(work: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; show eskit's, input and file errors as one red line."""
    try:
        return asyncio.run(work)
    except (ValueError, OSError, eskit.EskitError) as error:
        fail(str(error) or type(error).__name__)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def fail(message: str) -> NoReturn:
    """Print ``message`` as one red error line and exit with status 1."""
    err().print(Text.assemble(("error: ", "bold red"), (message, "red")), soft_wrap=True)
    raise typer.Exit(1)


@contextlib.asynccontextmanager
async def opened(
    url: str, *, readonly: bool = False, create: bool = True
) -> AsyncIterator[eskit.EventStore]:
    """The store at ``url``, open for the block. Only the commands meant to fill a store
    create one: those that look (``readonly``) or work on what is there (``create=False``)
    say ``no such store: PATH`` for a mistyped path and leave nothing behind."""
    if not (create or readonly):
        await _must_exist(url)
    async with eskit.open_store(url, readonly=readonly) as store:
        yield store


async def _must_exist(url: str) -> None:
    """Raise ``StoreNotFound`` unless there is a store at ``url``; one whose schema needs an
    upgrade is there (the writable open that follows upgrades it)."""
    try:
        async with eskit.open_store(url, readonly=True):
            pass
    except eskit.StoreNotFound:
        raise
    except eskit.StoreError:
        pass


class _Rate(ProgressColumn):
    """Items per second, as ``TransferSpeedColumn`` shows bytes per second."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None and task.finished and task.elapsed:  # too quick to sample: average
            speed = task.completed / task.elapsed
        shown = "?" if speed is None else f"{speed:,.0f}"
        return Text(f"{shown} {self.unit}/s", style="progress.data.speed")


class _Counts(ProgressColumn):
    """A phase's progress in the unit of its task (``unit`` field): sizes and a transfer
    speed for bytes, counts and a rate for anything else."""

    def render(self, task: Task) -> Text:
        unit = str(task.fields["unit"])
        if unit == "bytes":
            done, speed = DownloadColumn().render(task), TransferSpeedColumn().render(task)
        else:
            done, speed = MofNCompleteColumn().render(task), _Rate(unit).render(task)
        return Text.assemble(done, " ", speed)


Phase = Callable[[int, int], None]


@contextlib.contextmanager
def progress_bars(
    *phases: str, unit: str = "events", units: dict[str, str] | None = None
) -> Iterator[list[Phase]]:
    """Progress bars on stderr with rate and time left, one per phase of an operation; yields
    the ``(done, total)`` callbacks the library's long operations take, one per phase.
    ``units`` gives a phase a unit of its own (``"bytes"``: sizes and a transfer speed).

    A phase's bar appears on its first callback: a command that fails before any work (a
    missing store) draws none, and one that fails midway takes its bars down, so an error
    line is never followed by a bar."""
    units = units or {}
    counts: list[ProgressColumn]
    if units:
        counts = [_Counts()]
    elif unit == "bytes":
        counts = [DownloadColumn(), TransferSpeedColumn()]
    else:
        counts = [MofNCompleteColumn(), _Rate(unit)]
    columns = [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(bar_width=None),  # what the counts leave: they stay whole at 80 columns
        TaskProgressColumn(),
        *counts,
        TimeRemainingColumn(),
    ]
    bar = Progress(*columns, console=err())
    tasks: dict[str, TaskID] = {}

    def phase(description: str) -> Phase:
        def update(done: int, total: int) -> None:
            if not tasks:
                bar.start()
            if description not in tasks:
                tasks[description] = bar.add_task(
                    description, total=total, unit=units.get(description, unit)
                )
            bar.update(tasks[description], completed=done, total=total)

        return update

    try:
        yield [phase(description) for description in phases]
    except BaseException:
        if tasks:  # an error ends the work: take the bars down, print nothing more
            bar.live.transient = True
            bar.live.stop()
        raise
    if tasks:  # never started: nothing to stop (stopping prints a line when piped)
        bar.stop()


@contextlib.contextmanager
def progress_bar(description: str, unit: str = "events") -> Iterator[Phase]:
    """One progress bar (see ``progress_bars``)."""
    with progress_bars(description, unit=unit) as (update,):
        yield update


def when(moment: dt.datetime | int | None) -> str:
    """A time for people: UTC, to the second (``int``: microseconds since 1970)."""
    if moment is None:
        return ""
    if isinstance(moment, int):
        moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=moment)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def import_attribute(spec: str) -> object:
    """What ``module:attribute`` (``--app``) names, importing the module as ``python -m``
    would from the current directory; ``ValueError`` saying what is wrong."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"--app must be module:attribute, got {spec!r}")
    if os.getcwd() not in sys.path:  # as `python -m` would: the project's own modules
        sys.path.insert(0, os.getcwd())
    try:
        found: object = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"--app {spec}: cannot import {module_name}: {error}") from error
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ValueError(f"--app {spec}: {module_name} has no attribute {attribute}") from None
    return found
