"""SQLite reader threads: each owns a read-only connection and answers reads in batches.

Reads wait on SQLite in these threads, never in the event loop. A thread takes every read
waiting in the shared queue and hands all their results back to the loop in one call, so a
burst of concurrent reads (many commands loading their aggregates at once) costs one
loop wake-up, not one per read.
"""

from __future__ import annotations

import concurrent.futures
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Final

from eskit.store.sqlite_writer import STOP, Operation, Outcome, answer, connect

MAX_BATCH: Final = 64


class Reader(threading.Thread):
    """One reader: its connection, then reads from ``requests`` until it takes a STOP."""

    def __init__(
        self,
        path: str,
        requests: queue.SimpleQueue[Operation | object],
        setup: Callable[[], None],
    ) -> None:
        super().__init__(name=f"eskit-sqlite-reader:{path}", daemon=True)
        self.requests = requests
        self.ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._path = path
        self._setup = setup  # per-thread state of the store (its row decoder)

    def run(self) -> None:
        try:
            conn = connect(self._path, readonly=True)
            self._setup()
        except Exception as error:  # reported to open()
            self.ready.set_exception(error)
            return
        self.ready.set_result(None)
        try:
            self._serve(conn)
        finally:
            conn.close()

    def _serve(self, conn: sqlite3.Connection) -> None:
        while True:
            first = self.requests.get()
            if not isinstance(first, Operation):
                return  # a STOP: each reader takes exactly one
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    item = self.requests.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(item, Operation):
                    stop = True
                    break
                batch.append(item)
            outcomes: list[Outcome] = []
            for op in batch:
                try:
                    outcomes.append((op, op.run(conn), None))
                except Exception as error:
                    outcomes.append((op, None, error))
            answer(outcomes)
            if stop:
                return


def stop(requests: queue.SimpleQueue[Operation | object], readers: int) -> None:
    """Ask every reader to finish (after the reads queued before)."""
    for _ in range(readers):
        requests.put(STOP)
