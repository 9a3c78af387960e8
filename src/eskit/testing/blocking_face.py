"""Run the async conformance suite through the blocking face (``eskit.sync.SyncStore``).

``through_blocking_face(store)`` wraps a store so that every public call goes through a
``SyncStore`` over the same backend, each in a worker thread (``asyncio.to_thread``): the
suite's concurrent tests then drive the blocking face from many threads at once, which is
how a WSGI server uses it::

    class TestSQLiteBlocking(EventStoreConformance):
        def make_store(self, tmp_path, **options):
            return through_blocking_face(eskit.open_store(f"sqlite:///{tmp_path}/e.db", **options))
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any

from eskit.store.base import EventStore
from eskit.store.blocking import SyncStore
from eskit.store.model import RecordedEvent, Snapshot

_END = object()


class _BlockingFaceStore(EventStore):
    """An ``EventStore`` whose public methods are those of a ``SyncStore``, off the loop."""

    def __init__(self, inner: EventStore) -> None:
        self.inner = inner
        super().__init__(
            max_event_size=inner.max_event_size, clock=inner.clock, readonly=inner.readonly
        )
        self.blocking = SyncStore(inner)

    # the settings a test changes are the inner store's, which the blocking face reads
    @property
    def readonly(self) -> bool:
        return self.inner.readonly

    @readonly.setter
    def readonly(self, value: bool) -> None:
        self.inner.readonly = value

    @property
    def page_size(self) -> int:
        return self.inner.page_size

    @page_size.setter
    def page_size(self, value: int) -> None:
        self.inner.page_size = value

    @property
    def poll_interval(self) -> float:
        return self.inner.poll_interval

    @poll_interval.setter
    def poll_interval(self, value: float) -> None:
        self.inner.poll_interval = value

    @property
    def is_open(self) -> bool:
        return self.blocking.is_open

    async def open(self) -> None:
        await asyncio.to_thread(self.blocking.open)

    async def close(self) -> None:
        await asyncio.to_thread(self.blocking.close)

    async def read_from_snapshot(
        self, stream: str, snapshot_version: int, max_version: int | None = None
    ) -> tuple[Snapshot | None, AsyncIterator[RecordedEvent]]:
        snapshot, events = await asyncio.to_thread(
            self.blocking.read_from_snapshot, stream, snapshot_version, max_version
        )
        return snapshot, _drain(events)


def _blocking(name: str) -> Callable[..., Any]:
    async def call(self: _BlockingFaceStore, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.blocking, name), *args, **kwargs)

    call.__name__ = name
    return call


def _iterating(name: str) -> Callable[..., AsyncIterator[Any]]:
    def iterate(self: _BlockingFaceStore, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        return _drain(getattr(self.blocking, name)(*args, **kwargs))

    iterate.__name__ = name
    return iterate


async def _drain(events: Generator[Any, None, None]) -> AsyncIterator[Any]:
    """A blocking generator as an async one, one item per hop (live events arrive at once)."""
    try:
        while (item := await asyncio.to_thread(next, events, _END)) is not _END:
            yield item
    finally:
        with contextlib.suppress(ValueError):  # still running in its thread: it ends there
            events.close()


for _name in (
    "append",
    "append_many",
    "delete_stream",
    "tombstone_stream",
    "set_stream_metadata",
    "get_stream_metadata",
    "save_snapshot",
    "load_snapshot",
    "stream_version",
    "find_event",
    "last_position",
    "list_streams",
    "read_page",
    "wait_for_events",
    "migrate",
):
    setattr(_BlockingFaceStore, _name, _blocking(_name))
for _name in ("read_stream", "read_all", "subscribe"):
    setattr(_BlockingFaceStore, _name, _iterating(_name))


def through_blocking_face(store: EventStore) -> EventStore:
    """``store``, reached through ``eskit.sync.SyncStore`` (see the module docstring)."""
    return _BlockingFaceStore(store)
