"""eskit's blocking face: the store, command bus, repository and projection runner for
Django, Flask, scripts and Celery tasks, with no event loop.

``open_store`` takes the URLs and options of ``eskit.open_store``. The store calls the
backend's engine in the caller's thread (``eskit.store.blocking``); one store is safe to share
between threads. ``CommandBus``, ``Repository`` and ``ProjectionRunner`` have the async ones'
constructors and methods, and run the same logic (``eskit.application.handling``,
``eskit.projections.engine``). ``scavenge``, ``archive``, ``restore`` and
``read_stream_through`` are those of ``eskit.store.scavenge`` and ``eskit.store.archive``
for a blocking store: the same procedures (``eskit.store.procedure``), run in the caller's
thread.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from typing import Any

from eskit.application.blocking import CommandBus, Repository
from eskit.projections.blocking import ProjectionRunner
from eskit.store import archive as _archive
from eskit.store import open_store as _open_async_store
from eskit.store import scavenge as _scavenge
from eskit.store.archive import ArchiveReport, RestoreReport
from eskit.store.blocking import SyncStore
from eskit.store.model import RecordedEvent
from eskit.store.procedure import run_blocking
from eskit.store.scavenge import Progress, ScavengeReport
from eskit.subscriptions.blocking import Groups

__all__ = [
    "CommandBus",
    "Groups",
    "ProjectionRunner",
    "Repository",
    "SyncStore",
    "archive",
    "open_store",
    "read_stream_through",
    "restore",
    "scavenge",
]


def open_store(url: str, **options: Any) -> SyncStore:
    """Create the blocking store named by ``url``; open it with ``with`` (or ``.open()``).

    URLs and options are those of ``eskit.open_store``; ``ValueError`` for a bad URL.
    """
    return SyncStore(_open_async_store(url, **options))


def scavenge(
    store: SyncStore,
    *,
    batch_size: int = 1000,
    removed_by: str = "eskit scavenge",
    progress: Progress | None = None,
    maintain: bool = True,
    full_vacuum: bool = False,
) -> ScavengeReport:
    """``eskit.store.scavenge.scavenge`` for a blocking store (open), in this thread."""
    steps = _scavenge.scavenging(store, batch_size, removed_by, progress, maintain, full_vacuum)
    return run_blocking(steps)


def archive(
    store: SyncStore,
    directory: str | os.PathLike[str],
    *,
    category: str,
    older_than: dt.timedelta,
    removed_by: str = "eskit archive",
    progress: Callable[[int], None] | None = None,
    events_per_file: int = _archive.EVENTS_PER_FILE,
) -> ArchiveReport:
    """``eskit.store.archive.archive`` for a blocking store (open), in this thread."""
    return run_blocking(
        _archive.archiving(
            store, directory, category, older_than, removed_by, progress, events_per_file
        )
    )


def restore(
    store: SyncStore,
    directory: str | os.PathLike[str],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> RestoreReport:
    """``eskit.store.archive.restore`` for a blocking store (open), in this thread."""
    return run_blocking(_archive.restoring(store, directory, progress))


def read_stream_through(
    store: SyncStore,
    stream: str,
    directory: str | os.PathLike[str],
    from_version: int | None = None,
) -> Iterator[RecordedEvent]:
    """``eskit.store.archive.read_stream_through`` for a blocking store: the archived
    events of ``stream`` (from ``from_version``) first, then the store's from the next
    version on."""
    first = _archive.first_version(from_version)
    manifest = _archive.load_manifest(directory)
    last = first - 1
    for event in _archive.archived_events(directory, manifest, stream):
        if event.version >= first:
            last = event.version
            yield event.recorded()
    yield from store.read_stream(stream, from_version=last + 1)
