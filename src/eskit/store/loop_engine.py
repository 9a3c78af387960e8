"""An engine over a backend that has none yet: its async primitives, run on a loop thread.

A stopgap for the blocking face (``blocking.SyncStore``) over a backend whose IO is still
async-only: each call is submitted to one event loop running in a background thread and
waited for, which costs thread hand-offs the real engines do not. Events committed by
another process are found by polling (``poll_interval``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import threading
import uuid
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from eskit.errors import StoreClosed
from eskit.store.chain import ChainRow, ChainStart
from eskit.store.engine import Engine
from eskit.store.model import (
    AppendResult,
    ExpectedVersion,
    RecordedEvent,
    Snapshot,
    StreamInfo,
    StreamMetadata,
)
from eskit.store.rules import PreparedAppend, PreparedSnapshot

if TYPE_CHECKING:
    from eskit.store.base import EventStore

T = TypeVar("T")


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


class LoopEngine(Engine):
    """The primitives of ``store`` (an async backend without an engine), blocking."""

    def __init__(self, store: EventStore) -> None:
        super().__init__(clock=store.clock, readonly=store.readonly)
        self._store = store
        self._thread: _LoopThread | None = None

    def open(self) -> None:
        thread = _LoopThread()
        try:
            thread.call(self._store.open())
        except BaseException:
            thread.stop()
            raise
        self._thread = thread

    def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            try:
                thread.call(self._store.close())
            finally:
                thread.stop()
                self.committed()  # waiting subscriptions see the store close

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        thread = self._thread
        if thread is None:
            coro.close()
            raise StoreClosed("the store is not open: use `with eskit.sync.open_store(url)`")
        return thread.call(coro)

    def append_many(self, appends: list[PreparedAppend]) -> list[AppendResult]:
        results = self._call(self._store._append_many(appends))
        self.committed()
        return results

    def delete(self, stream: str, expected: ExpectedVersion, hard: bool) -> None:
        self._call(self._store._delete(stream, expected, hard))

    def set_metadata(self, stream: str, metadata: StreamMetadata) -> None:
        self._call(self._store._set_metadata(stream, metadata))

    def save_snapshot(self, snapshot: PreparedSnapshot, recorded_at: dt.datetime) -> None:
        self._call(self._store._save_snapshot(snapshot, recorded_at))

    def get_metadata(self, stream: str) -> StreamMetadata:
        return self._call(self._store._get_metadata(stream))

    def load_snapshot(
        self, stream: str, snapshot_version: int, max_version: int
    ) -> Snapshot | None:
        return self._call(self._store._load_snapshot(stream, snapshot_version, max_version))

    def snapshot_and_page(
        self, stream: str, snapshot_version: int, max_version: int, count: int
    ) -> tuple[Snapshot | None, list[RecordedEvent]]:
        return self._call(
            self._store._snapshot_and_page(stream, snapshot_version, max_version, count)
        )

    def stream_version(self, stream: str) -> int | None:
        return self._call(self._store._stream_version(stream))

    def last_position(self) -> int:
        return self._call(self._store._last_position())

    def find_event(self, event_id: uuid.UUID) -> RecordedEvent | None:
        return self._call(self._store._find_event(event_id))

    def list_streams(self, category: str | None, after: str | None, limit: int) -> list[StreamInfo]:
        return self._call(self._store._list_streams(category, after, limit))

    def read_stream_page(
        self, stream: str, from_version: int | None, backwards: bool, count: int
    ) -> list[RecordedEvent]:
        return self._call(self._store._read_stream_page(stream, from_version, backwards, count))

    def read_all_page(
        self, after: int, count: int, types: tuple[str, ...] | None, category: str | None
    ) -> tuple[list[RecordedEvent], int]:
        return self._call(self._store._read_all_page(after, count, types, category))

    def chain_page(self, after: int, limit: int) -> list[ChainRow]:
        return self._call(self._store._chain_page(after, limit))

    def chain_start(self) -> ChainStart | None:
        return self._call(self._store._chain_start())
