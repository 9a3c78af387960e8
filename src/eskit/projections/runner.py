"""The projection runner: catches each projection up, then follows the log live.

One task per projection. Each reads the event types its projection handles, a batch at a
time, and commits the batch with the checkpoint (SQL read models: one transaction). A
handler that raises is retried event by event with backoff; if it keeps failing, the
projection stops at that event with status ``stuck`` and the error, and the others go on.
An operator's ``skip`` (here or from another process) lets it continue. ``stop()`` lets
each task finish the batch it is committing.

The procedures are written once, without IO, in ``worker`` (with the engine's batch, retry
and stuck loop, ``engine``), and shared with the blocking runner (``blocking``): this
module performs their effects with coroutines.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from eskit.projections import state as st
from eskit.projections.database import Database, SQLiteDatabase, database_for
from eskit.projections.engine import Steps, drive
from eskit.projections.process import tick
from eskit.projections.projection import AnyProjection, SQLProjection
from eskit.projections.service import Service
from eskit.projections.steps import (
    Handle,
    Idle,
    LastPosition,
    Notify,
    Read,
    ReadPage,
    ResetTarget,
    Stopping,
    Tick,
    WaitForEvents,
    Write,
)
from eskit.projections.worker import (
    BatchObserver,
    Progress,
    ProjectionStatus,
    Worker,
    apply_to_head,
    now,
)
from eskit.store.base import EventStore

__all__ = [
    "BatchObserver",
    "Progress",
    "ProjectionRunner",
    "ProjectionStatus",
    "apply_to_head",
    "now",
]
T = TypeVar("T")


class ProjectionRunner(Service):
    """Runs projections over a store; use ``async with`` or ``start()``/``stop()``."""

    def __init__(
        self,
        store: EventStore,
        projections: Sequence[AnyProjection],
        *,
        database: Database | None = None,
        retries: int = 3,
        backoff: float = 0.1,
        stuck_poll: float = 0.5,
    ) -> None:
        names = [p.name for p in projections]
        if len(set(names)) != len(names):
            raise ValueError(f"projection names must be unique, got {names}")
        self.store = store
        self.retries, self.backoff, self.stuck_poll = retries, backoff, stuck_poll
        self._own_databases: list[Database] = []
        self.database = database or self._own(database_for(store))
        self.workers = {p.name: Worker(self, p, self._database_of(p)) for p in projections}
        self._progress = asyncio.Condition()
        self._stopping = asyncio.Event()
        self.observer: BatchObserver | None = None
        """Told of every committed batch, when set (``eskit.observability.instrument``)."""

    def _own(self, database: Database) -> Database:
        self._own_databases.append(database)
        return database

    def _database_of(self, projection: AnyProjection) -> Database:
        if isinstance(projection, SQLProjection) and projection.database is not None:
            return self._own(SQLiteDatabase(projection.database))
        return self.database

    async def start(self) -> None:
        """Start following: every projection catches up, then goes live."""
        self._stopping.clear()
        for worker in self.workers.values():
            if not worker.following:
                name = f"projection:{worker.projection.name}"
                worker.task = asyncio.create_task(self._drive(worker, worker.follow()), name=name)

    async def stop(self, grace: float = 10.0) -> None:
        """Let every projection finish the batch in hand, then stop (cancel after ``grace``
        seconds)."""
        self._stopping.set()
        tasks = [w.task for w in self.workers.values() if w.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for worker in self.workers.values():
            worker.task = None
        for database in self._own_databases:
            await database.close()
        self._own_databases.clear()

    async def run_until_caught_up(self) -> None:
        """Bring every projection up to the current head once, without following. On a
        started runner, wait for its tasks to get there instead: a second reader of the same
        batches would hand a plain projection's handlers each event twice."""
        head = await self.store.last_position()
        if any(w.following for w in self.workers.values()):
            await self.wait_until(head)
            return
        for worker in self.workers.values():
            await self._drive(worker, worker.prepare())
            await self._drive(worker, worker.catch_up(until=head))

    async def wait_until(self, position: int, name: str | None = None) -> None:
        """Return once the projection(s) applied every event up to ``position`` (read your
        own writes: pass an append's ``last_position``). Raises ``ProjectionError`` if one
        is stuck before it; bound it with ``asyncio.timeout``."""
        workers = [self.worker(name)] if name is not None else list(self.workers.values())
        async with self._progress:
            await self._progress.wait_for(
                lambda: all(w.reached_or_raise(position) for w in workers)
            )

    def worker(self, name: str) -> Worker:
        try:
            return self.workers[name]
        except KeyError:
            raise ValueError(f"no projection named {name!r} in this runner") from None

    async def status(self) -> list[ProjectionStatus]:
        head = await self.store.written_position()  # the primary's: a replica's lag counts
        return [w.status(head) for w in self.workers.values()]

    async def rebuild(self, name: str, progress: Progress | None = None) -> None:
        """Rebuild ``name`` beside its live tables and switch when caught up (no downtime)."""
        worker = self.worker(name)
        await self._drive(worker, worker.rebuild(progress))

    async def skip(self, name: str, reason: str) -> st.Skip:
        """Step a stuck projection over its failing event, recording who/why in ``reason``."""
        worker = self.worker(name)
        return await self._drive(worker, worker.skip(reason))

    async def notify(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    async def _drive(self, worker: Worker, steps: Steps[T]) -> T:
        """Run one of ``worker``'s procedures, its effects performed here."""
        return await drive(steps, _Perform(self, worker))

    async def _until_stopped(self, waiting: Awaitable[object]) -> None:
        """Await ``waiting`` unless the runner is asked to stop first."""
        wait = asyncio.ensure_future(waiting)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({wait, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (wait, stop):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(wait, stop, return_exceptions=True)


class _Perform:
    """Performs a worker's effects with coroutines (``steps``)."""

    def __init__(self, runner: ProjectionRunner, worker: Worker) -> None:
        self.runner, self.worker = runner, worker

    async def __call__(self, effect: object) -> Any:
        runner, worker, store = self.runner, self.worker, self.runner.store
        match effect:
            case Write(run):
                return await worker.db.write(run)
            case Read(run):
                return await worker.db.read(run)
            case ReadPage(after, limit, types):
                return await store.read_page(after=after, limit=limit, types=types)
            case LastPosition():
                return await store.last_position()
            case Notify():
                await runner.notify()
            case Stopping():
                return runner._stopping.is_set()
            case Idle(seconds):
                await runner._until_stopped(asyncio.sleep(seconds))
            case WaitForEvents(after, timeout):
                await runner._until_stopped(store.wait_for_events(after, timeout))
            case Handle(projection, events):
                await projection.handle_batch(events)
            case ResetTarget(projection):
                await projection.reset()
            case Tick(manager, state):
                return await tick(manager, worker.db, state)
            case _:
                raise TypeError(f"no such effect: {effect!r}")
        return None
