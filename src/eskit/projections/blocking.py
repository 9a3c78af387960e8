"""The blocking projection runner (``eskit.sync.ProjectionRunner``), for scripts, Django,
Flask and Celery: the async runner's constructor and methods, over a blocking store.

It runs the same procedures as the async runner (``worker``), with the same engine: it
only performs their effects with blocking calls. ``run_until_caught_up``, ``wait_until``
(on a runner not started), ``rebuild`` and ``skip`` run in the caller's thread. ``start()``
follows the log live in one thread per projection (and one that waits for appends), until
``stop()``. A plain projection's handlers are coroutines, as in the async API: each batch
is handed to them in an event loop of their own (``asyncio.run``). Process managers send
commands through the async command bus: run them on the async runner.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

from eskit.errors import StoreClosed
from eskit.projections import state as st
from eskit.projections.database import BlockingDatabase, Database, SQLiteDatabase
from eskit.projections.engine import Steps, drive_blocking
from eskit.projections.process import ProcessManager
from eskit.projections.projection import AnyProjection, SQLProjection
from eskit.projections.steps import (
    Handle,
    Idle,
    LastPosition,
    Notify,
    Read,
    ReadPage,
    ResetTarget,
    Stopping,
    WaitForEvents,
    Write,
)
from eskit.projections.worker import BatchObserver, Progress, ProjectionStatus, Worker
from eskit.retry import backoff
from eskit.store.model import Page

if TYPE_CHECKING:
    from eskit.sync import SyncStore

log = logging.getLogger("eskit.projections")
T = TypeVar("T")
POLL = 1.0
"""Seconds a following thread waits for the watcher at most before it reads the log."""


class _Blockable(Protocol):
    def blocking(self) -> BlockingDatabase: ...


def blocking_database(database: Database | BlockingDatabase) -> BlockingDatabase:
    """The blocking face of ``database`` (one of eskit's ``Database``s, or one already
    blocking)."""
    face = getattr(database, "blocking", None)
    if face is None:
        return database  # type: ignore[return-value]
    blockable: _Blockable = database  # type: ignore[assignment]
    return blockable.blocking()


class ProjectionRunner:
    """Runs projections over a blocking store; use ``with`` or ``start()``/``stop()``, or
    ``run_until_caught_up()`` alone."""

    def __init__(
        self,
        store: SyncStore,
        projections: Sequence[AnyProjection],
        *,
        database: Database | BlockingDatabase | None = None,
        retries: int = 3,
        backoff: float = 0.1,
        stuck_poll: float = 0.5,
    ) -> None:
        names = [p.name for p in projections]
        if len(set(names)) != len(names):
            raise ValueError(f"projection names must be unique, got {names}")
        for projection in projections:
            if isinstance(projection, ProcessManager):
                raise ValueError(
                    f"process manager {projection.name} sends commands through the async"
                    " command bus: run it on eskit.ProjectionRunner"
                )
        self.store = store
        self.retries, self.backoff, self.stuck_poll = retries, backoff, stuck_poll
        self._own_databases: list[BlockingDatabase] = []
        self.database = (
            blocking_database(database) if database is not None else self._own(_database_of(store))
        )
        self.workers = {p.name: Worker(self, p, self._database_of(p)) for p in projections}
        self._progress = threading.Condition()
        self._stopping = threading.Event()
        self._heads = _Heads(store)
        self.observer: BatchObserver | None = None
        """Told of every committed batch, when set."""

    def _own(self, database: BlockingDatabase) -> BlockingDatabase:
        self._own_databases.append(database)
        return database

    def _database_of(self, projection: AnyProjection) -> BlockingDatabase:
        if isinstance(projection, SQLProjection) and projection.database is not None:
            return self._own(SQLiteDatabase(projection.database).blocking())
        return self.database

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start following, one thread per projection: each catches up, then goes live."""
        self._stopping.clear()
        self._heads.start(self._stopping)
        for worker in self.workers.values():
            if not worker.following:
                worker.thread = threading.Thread(
                    target=self._follow,
                    args=(worker,),
                    name=f"eskit-projection:{worker.projection.name}",
                    daemon=True,
                )
                worker.thread.start()

    def _follow(self, worker: Worker) -> None:
        try:
            self._drive(worker, worker.follow())
        except Exception:  # follow() deals with everything; this is a last word
            log.exception("projection %s stopped", worker.projection.name)

    def stop(self, grace: float = 10.0) -> None:
        """Let every projection finish the batch in hand, then stop (waiting at most
        ``grace`` seconds for each thread); close the databases it opened."""
        self._stopping.set()
        self._heads.wake()
        for worker in self.workers.values():
            if worker.thread is not None:
                worker.thread.join(grace)
                worker.thread = None
        for database in self._own_databases:
            database.close()

    def run(self) -> None:
        """Follow the log in this thread's stead until ``stop()`` is called (from another
        thread, a signal handler) or the program is interrupted."""
        self.start()
        try:
            self._stopping.wait()
        finally:
            self.stop()

    def run_until_caught_up(self) -> None:
        """Bring every projection up to the current head once, in this thread, without
        following. On a started runner, wait for its threads to get there instead."""
        head = self.store.last_position()
        if any(w.following for w in self.workers.values()):
            self.wait_until(head)
            return
        for worker in self.workers.values():
            self._drive(worker, worker.prepare())
            self._drive(worker, worker.catch_up(until=head))

    def wait_until(
        self, position: int, name: str | None = None, timeout: float | None = None
    ) -> None:
        """Return once the projection(s) applied every event up to ``position`` (read your
        own writes: pass an append's ``last_position``). Raises ``ProjectionError`` if one
        is stuck before it, ``TimeoutError`` after ``timeout`` seconds. On a runner not
        started, catches them up in this thread."""
        workers = [self.worker(name)] if name is not None else list(self.workers.values())
        deadline = None if timeout is None else time.monotonic() + timeout
        if any(w.following for w in workers):
            with self._progress:
                if not self._progress.wait_for(
                    lambda: all(w.reached_or_raise(position) for w in workers), timeout
                ):
                    raise TimeoutError(f"projections not at position {position} in {timeout} s")
            return
        for worker in workers:
            if worker.state is None:
                self._drive(worker, worker.prepare())
            while True:
                self._drive(worker, worker.catch_up(until=position))
                if worker.reached_or_raise(position):
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"projections not at position {position} in {timeout} s")
                time.sleep(0.01)  # not appended yet, or a rebuild elsewhere: look again

    def worker(self, name: str) -> Worker:
        try:
            return self.workers[name]
        except KeyError:
            raise ValueError(f"no projection named {name!r} in this runner") from None

    def status(self) -> list[ProjectionStatus]:
        head = self.store.written_position()  # the primary's: a replica's lag counts
        return [w.status(head) for w in self.workers.values()]

    def rebuild(self, name: str, progress: Progress | None = None) -> None:
        """Rebuild ``name`` beside its live tables and switch when caught up (no downtime)."""
        worker = self.worker(name)
        self._drive(worker, worker.rebuild(progress))

    def skip(self, name: str, reason: str) -> st.Skip:
        """Step a stuck projection over its failing event, recording who/why in ``reason``."""
        worker = self.worker(name)
        return self._drive(worker, worker.skip(reason))

    def notify(self) -> None:
        with self._progress:
            self._progress.notify_all()

    # -- performing the workers' effects ------------------------------------------------------

    def _drive(self, worker: Worker, steps: Steps[T]) -> T:
        return drive_blocking(steps, lambda effect: self._perform(worker, effect))

    def _perform(self, worker: Worker, effect: object) -> Any:
        store = self.store
        match effect:
            case Write(run):
                return worker.db.write(run)
            case Read(run):
                return worker.db.read(run)
            case ReadPage(after, limit, types):
                page: Page = store.read_page(after=after, limit=limit, types=types)
                return page
            case LastPosition():
                return store.last_position()
            case Notify():
                self.notify()
            case Stopping():
                return self._stopping.is_set()
            case Idle(seconds):
                self._stopping.wait(seconds)
            case WaitForEvents(after, timeout):
                self._heads.wait_past(after, timeout)
            case Handle(projection, events):
                _run_async(projection.handle_batch(events))
            case ResetTarget(projection):
                _run_async(projection.reset())
            case _:
                raise TypeError(f"no such effect: {effect!r}")
        return None


def _run_async(coro: Coroutine[Any, Any, None]) -> None:
    """Run a plain projection's handler coroutine to its end, from this thread (or, if
    this thread runs an event loop already, from a thread of its own)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    with concurrent.futures.ThreadPoolExecutor(1, "eskit-projection-handler") as thread:
        thread.submit(asyncio.run, coro).result()


def _database_of(store: SyncStore) -> BlockingDatabase:
    database = store.read_model_database()
    if database is None:
        raise ValueError(
            "projections over this store need a database for their checkpoints and read"
            " models: pass database=SQLiteDatabase('readmodels.db') to the runner"
        )
    return blocking_database(database)


class _Heads:
    """The store's head as one thread sees it wait for appends, for the following
    threads to wait on (a blocking ``wait_for_events`` cannot be cut short by a stop)."""

    def __init__(self, store: SyncStore) -> None:
        self.store = store
        self.head = -1
        self.closed = False
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, stopping: threading.Event) -> None:
        """Watch until ``stopping`` is set (a watcher still running is kept)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping = stopping
        self.closed = False
        self._thread = threading.Thread(
            target=self._watch, args=(stopping,), name="eskit-projection-heads", daemon=True
        )
        self._thread.start()

    def _watch(self, stopping: threading.Event) -> None:
        """Note the head after every append until stopped (noticed at the next append, or
        when the store closes) or the store closes; a store failing is retried."""
        failures = 0
        while not stopping.is_set():
            try:
                head = self.store.last_position()
                self._publish(head)
                self.store.wait_for_events(head)
                failures = 0
            except StoreClosed:
                break
            except Exception as error:
                failures += 1
                pause = backoff(0.1, failures)
                log.warning(
                    "projections: waiting for appends failed (%r); again in %.1f s", error, pause
                )
                stopping.wait(pause)
        with self._changed:
            self.closed = not stopping.is_set()
            self._changed.notify_all()

    def _publish(self, head: int) -> None:
        with self._changed:
            self.head = max(self.head, head)
            self._changed.notify_all()

    def wake(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait_past(self, after: int, timeout: float | None) -> None:
        """Until the head is past ``after``, a stop, or ``timeout`` seconds; a second at
        most, so a follower looks at the log itself now and then should the watcher be
        gone (the store failing, or a restart racing with its end)."""
        within = POLL if timeout is None else min(timeout, POLL)
        with self._changed:
            self._changed.wait_for(
                lambda: self.head > after or self._stopping.is_set() or self.closed, within
            )
