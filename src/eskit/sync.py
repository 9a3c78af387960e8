"""eskit's blocking face: the store, command bus, repository and projection runner for
Django, Flask, scripts and Celery tasks, with no event loop.

``open_store`` takes the URLs and options of ``eskit.open_store``. The store calls the
backend's engine in the caller's thread (``eskit.store.blocking``); one store is safe to share
between threads. ``CommandBus``, ``Repository`` and ``ProjectionRunner`` have the async ones'
constructors and methods, and run the same logic (``eskit.application.handling``,
``eskit.projections.engine``).
"""

from __future__ import annotations

from typing import Any

from eskit.application.blocking import CommandBus, Repository
from eskit.projections.blocking import ProjectionRunner
from eskit.store import open_store as _open_async_store
from eskit.store.blocking import SyncStore
from eskit.subscriptions.blocking import Groups

__all__ = ["CommandBus", "Groups", "ProjectionRunner", "Repository", "SyncStore", "open_store"]


def open_store(url: str, **options: Any) -> SyncStore:
    """Create the blocking store named by ``url``; open it with ``with`` (or ``.open()``).

    URLs and options are those of ``eskit.open_store``; ``ValueError`` for a bad URL.
    """
    return SyncStore(_open_async_store(url, **options))
