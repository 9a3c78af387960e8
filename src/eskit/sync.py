"""A blocking event store for scripts, Django and notebooks, over the one async implementation.

Each ``SyncStore`` runs one asyncio event loop in a background thread, and the async store
is opened, used and closed on that loop (backends bind to the loop that opened them). A call
submits the store's coroutine there and blocks on its outcome, so results and exceptions
arrive unchanged. Async iterators run on the loop at most a chunk ahead of the reader
(``_Pump``): constant memory for millions of events, live events handed over at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Generator, Iterable, Sequence
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from eskit.errors import StoreClosed
from eskit.store import EventStore
from eskit.store import open_store as _open_async_store
from eskit.store.migrations import Migrated
from eskit.store.model import (
    ANY,
    Append,
    AppendResult,
    ExpectedVersion,
    NewEvent,
    Page,
    RecordedEvent,
    Snapshot,
    StreamInfo,
    StreamMetadata,
)

__all__ = ["SyncStore", "open_store"]

T = TypeVar("T")


def open_store(url: str, **options: Any) -> SyncStore:
    """Create the blocking store named by ``url``; open it with ``with`` (or ``.open()``).

    URLs and options are those of ``eskit.open_store``; ``ValueError`` for a bad URL.
    """
    return SyncStore(_open_async_store(url, **options))


class _LoopThread:
    """An asyncio event loop running in its own daemon thread until ``stop()``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._stopped = False
        self._lock = threading.Lock()  # no call slips in behind stop(): it would never end
        # A daemon, so that a store the program forgot to close does not keep it running.
        self._thread = threading.Thread(target=self._run, name="eskit-sync-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # The Runner tears the loop down as asyncio.run() does: tasks still pending are
        # cancelled and the default executor's threads joined, so no thread outlives stop().
        with asyncio.Runner(loop_factory=lambda: self.loop) as runner:
            runner.get_loop().run_forever()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and block until it returns or raises."""
        with self._lock:
            if self._stopped:
                coro.close()  # never started: no "coroutine was never awaited" warning
                raise StoreClosed("the store is closed")
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError:  # the loop stopped under the call
            raise StoreClosed("the store closed during the call") from None
        except BaseException:  # e.g. KeyboardInterrupt here: do not leave the call running
            future.cancel()
            raise

    def stop(self) -> None:
        """Stop the loop (calls still running there are cancelled) and join its thread."""
        with self._lock:
            self._stopped = True
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()


class _Pump(Generic[T]):
    """Iterates an async iterator on the loop into a buffer of at most ``size`` items.

    The reader takes everything buffered in one round trip, so a catch-up read costs one
    round trip per chunk while a live item is handed over the moment it is buffered; the
    filler waits when the buffer is full, so memory stays bounded however long the source.
    """

    def __init__(self, source: AsyncIterator[T], size: int, running: set[_Pump[Any]]) -> None:
        self._source = source
        self._size = size
        self._running = running
        self._buffer: list[T] = []
        self._done = False
        self._error: BaseException | None = None
        self._stopping = False
        self._ready = asyncio.Event()  # something to take, or the end
        self._room = asyncio.Event()  # the reader emptied the buffer, or stop() was called
        self._task: asyncio.Task[None] | None = None

    async def take(self) -> list[T]:
        """Wait for items or the end; return every buffered item, ``[]`` at the end.

        Raises whatever the source raised.
        """
        if self._task is None:
            self._running.add(self)
            self._task = asyncio.create_task(self._fill())
        while not self._buffer and not self._done:
            self._ready.clear()
            await self._ready.wait()
        items, self._buffer = self._buffer, []
        self._room.set()
        if not items and self._error is not None:
            raise self._error
        return items

    async def _fill(self) -> None:
        self._error = StoreClosed("the store closed during the iteration")  # until it ends
        try:
            async for item in self._source:
                self._buffer.append(item)
                self._ready.set()
                while len(self._buffer) >= self._size:
                    if self._stopping:
                        return  # ends with StoreClosed: nobody is taking, and never will
                    self._room.clear()
                    await self._room.wait()
            self._error = None
        except Exception as error:
            self._error = error
        finally:
            self._done = True
            self._ready.set()
            self._running.discard(self)
            if isinstance(self._source, AsyncGenerator):  # left suspended at a yield
                await self._source.aclose()

    async def stop(self) -> None:
        """Let the source end by itself (the store closed), but stop it if it must wait for
        the reader: a subscription then ends as it does in the async API."""
        self._stopping = True
        self._room.set()
        if self._task is not None:
            await asyncio.wait([self._task])

    async def cancel(self) -> None:
        """The reader stopped early: cancel the source and wait until it is released."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])


class SyncStore:
    """The ``EventStore`` API, blocking: every method runs the async store's method on a
    background event loop and returns (or raises) what it returned (or raised).

    Safe to use from several threads at once. Reads and subscriptions are ordinary
    iterators; leave one early with ``break`` (or ``.close()``) to release it at once.
    Closing the store ends a subscription that is waiting for events, as in the async API;
    any other use of a closed store raises ``StoreClosed``.
    """

    chunk_size: int = 500
    """Items an iterator fetches per round trip, and at most buffers ahead of its reader."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._thread: _LoopThread | None = None
        self._lock = threading.Lock()  # serialises open() and close()
        self._pumps: set[_Pump[Any]] = set()  # only touched on the loop

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Start the loop thread and open the store on it. Opening twice is harmless."""
        with self._lock:
            if self._thread is not None:
                return
            thread = _LoopThread()
            try:
                thread.call(self._store.open())
            except BaseException:
                thread.stop()
                raise
            self._thread = thread

    def close(self) -> None:
        """Close the store, end its iterators, stop the loop and join its thread.

        Closing twice is harmless.
        """
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                try:
                    thread.call(self._shutdown())
                finally:
                    thread.stop()

    async def _shutdown(self) -> None:
        """Close the store first, so iterators end as they would in the async API."""
        try:
            await self._store.close()  # ends subscriptions, finishes pending appends
        finally:
            await asyncio.gather(*(pump.stop() for pump in list(self._pumps)))

    @property
    def is_open(self) -> bool:
        """Whether ``open()`` ran and ``close()`` did not since."""
        return self._thread is not None

    def migrate(self, app_role: str | None = None, login: bool = False) -> Migrated | None:
        """Blocking ``EventStore.migrate``; the store need not be open."""
        if self._thread is None:
            return asyncio.run(self._store.migrate(app_role, login))
        return self._call(self._store.migrate(app_role, login))

    # -- the generic drivers ----------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one of the store's coroutines on the loop and block on its outcome."""
        thread = self._thread
        if thread is None:
            coro.close()
            raise StoreClosed("the store is not open: use `with eskit.sync.open_store(url)`")
        return thread.call(coro)

    def _iterate(self, source: AsyncIterator[T]) -> Generator[T, None, None]:
        """Iterate one of the store's async iterators from this thread, a chunk at a time.

        Leaving the loop early cancels the source on the loop and waits until it is gone.
        """
        thread = self._thread
        if thread is None:
            raise StoreClosed("the store is not open: use `with eskit.sync.open_store(url)`")
        pump = _Pump(source, self.chunk_size, self._pumps)
        try:
            while chunk := thread.call(pump.take()):
                yield from chunk
        finally:
            with contextlib.suppress(StoreClosed):  # closed: the loop released it already
                thread.call(pump.cancel())

    # -- the store API, blocking (same names, parameters and defaults as EventStore) -------

    def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: ExpectedVersion = ANY,
    ) -> AppendResult:
        """Blocking ``EventStore.append``."""
        return self._call(self._store.append(stream, events, expected_version))

    def append_many(self, appends: Sequence[Append]) -> list[AppendResult]:
        """Blocking ``EventStore.append_many``."""
        return self._call(self._store.append_many(appends))

    def delete_stream(self, stream: str, expected_version: ExpectedVersion = ANY) -> None:
        """Blocking ``EventStore.delete_stream``."""
        return self._call(self._store.delete_stream(stream, expected_version))

    def tombstone_stream(self, stream: str, expected_version: ExpectedVersion = ANY) -> None:
        """Blocking ``EventStore.tombstone_stream``."""
        return self._call(self._store.tombstone_stream(stream, expected_version))

    def set_stream_metadata(self, stream: str, metadata: StreamMetadata) -> None:
        """Blocking ``EventStore.set_stream_metadata``."""
        return self._call(self._store.set_stream_metadata(stream, metadata))

    def get_stream_metadata(self, stream: str) -> StreamMetadata:
        """Blocking ``EventStore.get_stream_metadata``."""
        return self._call(self._store.get_stream_metadata(stream))

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Blocking ``EventStore.save_snapshot``."""
        return self._call(self._store.save_snapshot(snapshot))

    def load_snapshot(
        self, stream: str, snapshot_version: int, max_version: int | None = None
    ) -> Snapshot | None:
        """Blocking ``EventStore.load_snapshot``."""
        return self._call(self._store.load_snapshot(stream, snapshot_version, max_version))

    def stream_version(self, stream: str) -> int | None:
        """Blocking ``EventStore.stream_version``."""
        return self._call(self._store.stream_version(stream))

    def find_event(self, event_id: uuid.UUID) -> RecordedEvent | None:
        """Blocking ``EventStore.find_event``."""
        return self._call(self._store.find_event(event_id))

    def last_position(self) -> int:
        """Blocking ``EventStore.last_position``."""
        return self._call(self._store.last_position())

    def list_streams(
        self, category: str | None = None, after: str | None = None, limit: int = 100
    ) -> list[StreamInfo]:
        """Blocking ``EventStore.list_streams``."""
        return self._call(self._store.list_streams(category, after, limit))

    def read_page(
        self,
        after: int = 0,
        limit: int | None = None,
        types: Iterable[str] | None = None,
        category: str | None = None,
    ) -> Page:
        """Blocking ``EventStore.read_page``."""
        return self._call(self._store.read_page(after, limit, types, category))

    def wait_for_events(self, after: int) -> None:
        """Blocking ``EventStore.wait_for_events``."""
        return self._call(self._store.wait_for_events(after))

    def read_stream(
        self,
        stream: str,
        from_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> Generator[RecordedEvent, None, None]:
        """Blocking ``EventStore.read_stream``; errors surface at the first ``next()``."""
        return self._iterate(self._store.read_stream(stream, from_version, backwards, limit))

    def read_from_snapshot(
        self, stream: str, snapshot_version: int, max_version: int | None = None
    ) -> tuple[Snapshot | None, Generator[RecordedEvent, None, None]]:
        """Blocking ``EventStore.read_from_snapshot``: the snapshot, and the events after it."""
        snapshot, events = self._call(
            self._store.read_from_snapshot(stream, snapshot_version, max_version)
        )
        return snapshot, self._iterate(events)

    def read_all(
        self,
        after: int = 0,
        limit: int | None = None,
        types: Iterable[str] | None = None,
        category: str | None = None,
    ) -> Generator[RecordedEvent, None, None]:
        """Blocking ``EventStore.read_all``; errors surface at the first ``next()``."""
        return self._iterate(self._store.read_all(after, limit, types, category))

    def subscribe(
        self,
        after: int = 0,
        types: Iterable[str] | None = None,
        category: str | None = None,
    ) -> Generator[RecordedEvent, None, None]:
        """Blocking ``EventStore.subscribe``: catches up, then yields live events as they
        are committed, until the store closes or the caller leaves the loop."""
        return self._iterate(self._store.subscribe(after, types, category))


# The application layer's blocking face; imported last, as it needs ``SyncStore`` above.
from eskit.application.blocking import CommandBus, Repository  # noqa: E402

__all__ += ["CommandBus", "Repository"]
