"""The projection runner: catches each projection up, then follows the log live.

One task per projection. Each reads the event types its projection handles, a batch at a
time, and commits the batch with the checkpoint (SQL read models: one transaction). A
handler that raises is retried event by event with backoff; if it keeps failing, the
projection stops at that event with status ``stuck`` and the error, and the others go on.
An operator's ``skip`` (here or from another process) lets it continue. ``stop()`` lets
each task finish the batch it is committing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

import msgspec

from eskit.errors import ProjectionError, StoreClosed, Unavailable
from eskit.projections import leases
from eskit.projections import state as st
from eskit.projections.database import Database, SQLiteDatabase, database_for
from eskit.projections.failure import describe, log_failure
from eskit.projections.process import ProcessManager, tick
from eskit.projections.projection import (
    AnyProjection,
    Projection,
    SQLProjection,
    apply,
    physical_names,
)
from eskit.projections.service import Service
from eskit.store.base import EventStore
from eskit.store.model import Page, RecordedEvent
from eskit.store.sqlite_writer import micros

log = logging.getLogger("eskit.projections")
Progress = Callable[[int, int], None]
"""Called with (position reached, head) as a rebuild advances."""


class ProjectionStatus(msgspec.Struct, frozen=True):
    """How a projection is doing, as the runner, the CLI and the admin UI show it."""

    name: str
    version: int
    position: int
    head: int
    status: str  # starting | running | failing | stuck | rebuilding | stopped
    error: str | None = None
    error_position: int | None = None
    error_type: str | None = None
    error_event: str | None = None
    rebuild_position: int | None = None

    @property
    def lag(self) -> int:
        return max(0, self.head - self.position)


class BatchObserver(Protocol):
    """Told of every batch a projection committed (metrics, traces)."""

    def batched(self, projection: str, events: Sequence[RecordedEvent], started: int) -> None:
        """``started``: when the batch began, in nanoseconds since 1970."""


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
        self.workers = {p.name: _Worker(self, p, self._database_of(p)) for p in projections}
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
            worker.start()

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
        if any(w.task is not None and not w.task.done() for w in self.workers.values()):
            await self.wait_until(head)
            return
        for worker in self.workers.values():
            await worker.prepare()
            await worker.catch_up(until=head)

    async def wait_until(self, position: int, name: str | None = None) -> None:
        """Return once the projection(s) applied every event up to ``position`` (read your
        own writes: pass an append's ``last_position``). Raises ``ProjectionError`` if one
        is stuck before it; bound it with ``asyncio.timeout``."""
        workers = [self.worker(name)] if name is not None else list(self.workers.values())
        async with self._progress:
            await self._progress.wait_for(
                lambda: all(w.reached_or_raise(position) for w in workers)
            )

    def worker(self, name: str) -> _Worker:
        try:
            return self.workers[name]
        except KeyError:
            raise ValueError(f"no projection named {name!r} in this runner") from None

    async def status(self) -> list[ProjectionStatus]:
        head = await self.store.last_position()
        return [w.status(head) for w in self.workers.values()]

    async def rebuild(self, name: str, progress: Progress | None = None) -> None:
        """Rebuild ``name`` beside its live tables and switch when caught up (no downtime)."""
        await self.worker(name).rebuild(progress)

    async def skip(self, name: str, reason: str) -> st.Skip:
        """Step a stuck projection over its failing event, recording who/why in ``reason``."""
        worker = self.worker(name)
        record = await worker.db.write(lambda c: st.skip(c, name, reason, now()))
        await worker.reload()
        await self.notify()
        return record

    async def notify(self) -> None:
        async with self._progress:
            self._progress.notify_all()


def now() -> int:
    return micros(dt.datetime.now(dt.UTC))


def apply_to_head(
    db: Database,
    conn: sqlite3.Connection,
    projection: SQLProjection,
    names: Mapping[str, str],
    after: int,
) -> int:
    """Apply every event past ``after`` to the tables ``names``, reading the log in the
    caller's transaction (when the log is in ``db``); the position searched up to."""
    while page := db.page_in(conn, after, projection.batch_size, projection.types):
        apply(projection, conn, names, page.events)
        after = page.next_after
        if len(page.events) < projection.batch_size:
            break
    return after


class _Worker:
    """One projection's loop: read a batch, apply it with the checkpoint, repeat."""

    def __init__(self, runner: ProjectionRunner, projection: AnyProjection, db: Database) -> None:
        self.runner, self.projection, self.db = runner, projection, db
        self.store = runner.store
        self.state: st.State | None = None
        self.reached = 0
        self.task: asyncio.Task[None] | None = None
        self.rebuilding: st.Rebuild | None = None
        self.failure: Exception | None = None
        """Why it cannot go on: stuck on an event, or a setup it can never complete."""

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self.run(), name=f"projection:{self.projection.name}")

    async def run(self) -> None:
        """Follow the log until the runner stops. Handler errors are dealt with in
        ``_apply``; anything else (a database that went away for a moment) is logged and
        retried with a capped backoff, so the projection never dies silently."""
        failures = 0
        while not self.runner._stopping.is_set():
            try:
                if self.state is None:
                    await self.prepare()
                if self._state.status == st.STUCK:
                    await self._wait_while_stuck()
                    continue
                full = await self._step()
                await self._tick()
                if not full:
                    await self._persist_reached()
                    await self._until_stopped(self._wait_for_events())
                failures = 0
            except st.ProjectionMoved:  # rebuilt, reset or skipped elsewhere: start from there
                await self.reload()
            except StoreClosed:
                return
            except ValueError as error:  # a definition the database refuses: retrying won't help
                self.failure = error
                log.error("projection %s cannot start: %s", self.projection.name, describe(error))
                await self.runner.notify()
                return
            except Exception as error:
                failures += 1
                pause = min(30.0, self.runner.backoff * 2**failures)
                name = self.projection.name
                if isinstance(error, Unavailable):  # expected in an outage: one line each
                    text = describe(error)
                    log.warning("projection %s: %s; retrying in %.1f s", name, text, pause)
                else:
                    log_failure(log, "projection %s: retrying in %.1f s", name, pause, error=error)
                await self._until_stopped(asyncio.sleep(pause))

    async def prepare(self) -> None:
        """Load (or create) the projection's state; rebuild first if its version changed."""
        projection = self.projection
        self.state = await self.db.write(lambda c: st.setup(c, projection, now()))
        if await self.db.read(lambda c: leases.partitions(c, projection.name)):
            raise ValueError(  # both would apply the same events
                f"projection {projection.name} is run by partitioned workers"
                " (eskit projections work); a runner may rebuild it, not follow it"
            )
        if self.state.version != projection.version:
            if isinstance(projection, SQLProjection):
                await self.rebuild(None)  # the old build keeps serving reads meanwhile
            else:
                await self.reset()
        self.reached = self._state.position

    @property
    def _state(self) -> st.State:
        assert self.state is not None, "prepare() first"
        return self.state

    async def reload(self) -> None:
        """Take the state as stored (after a rebuild, reset or skip by anyone)."""
        projection = self.projection
        self.state = await self.db.write(lambda c: st.setup(c, projection, now()))
        self.reached = self.state.position
        self.failure = None

    async def reset(self) -> None:
        if isinstance(self.projection, Projection):
            await self.projection.reset()
        name = self.projection.name
        await self.db.write(lambda c: st.reset(c, name))
        await self.reload()

    # -- following --------------------------------------------------------------------------

    async def catch_up(self, until: int) -> None:
        """Apply every event up to ``until`` (another runner may be doing the same: its
        batches then win, and this one reloads and goes on from there)."""
        while self.reached < until and self._state.status != st.STUCK:
            try:
                if not await self._step():
                    break
            except st.ProjectionMoved:
                await self.reload()
        try:
            await self._persist_reached()
        except st.ProjectionMoved:
            await self.reload()

    async def _step(self) -> bool:
        """Read and apply one batch; True if the batch was full (more may follow)."""
        projection = self.projection
        if isinstance(projection, SQLProjection) and self.db.holds_log:
            try:
                return await self._step_in_one_transaction(projection)
            except (st.ProjectionMoved, StoreClosed, Unavailable):
                raise  # not the handler's fault: the run loop reloads or backs off
            except Exception as error:  # a handler failed: event by event, with retries
                log.warning(
                    "projection %s: batch after %d failed (%s); retrying event by event",
                    projection.name,
                    self.reached,
                    describe(error),
                )
                return await self._read_then_apply(batch_failed=True)
        return await self._read_then_apply()

    async def _step_in_one_transaction(self, projection: SQLProjection) -> bool:
        """Read the batch, apply it and move the checkpoint in one write transaction: one
        visit to the write connection instead of a read and then a write."""
        state, after, at = self._state, self.reached, now()
        names = physical_names(state.tables, state.generation)
        started = time.time_ns()

        def run(conn: sqlite3.Connection) -> Page | None:
            page = self.db.page_in(conn, after, projection.batch_size, projection.types)
            if page is not None and page.events:
                st.advance(conn, state.name, state, page.next_after, at)
                apply(projection, conn, names, page.events)
            return page

        page = await self.db.write(run)
        assert page is not None, "the database holds the log"
        self._committed(state, page.next_after, stored=bool(page.events))
        self._observe(page.events, started)
        await self.runner.notify()
        return len(page.events) == projection.batch_size

    async def _read_then_apply(self, batch_failed: bool = False) -> bool:
        projection, loaded = self.projection, self.state
        page = await self.store.read_page(
            after=self.reached, limit=projection.batch_size, types=projection.types
        )
        if self.state is not loaded:  # rebuilt, reloaded or skipped meanwhile: read again
            return True
        if page.events and batch_failed:
            await self._apply_one_by_one(page.events, page.next_after)
        elif page.events:
            await self._apply(page.events, page.next_after)
        else:
            self.reached = max(self.reached, page.next_after)
        await self.runner.notify()
        return len(page.events) == projection.batch_size

    async def _tick(self) -> None:
        """Let a process manager send what its state says is due (``process.tick``)."""
        projection, state = self.projection, self._state
        if isinstance(projection, ProcessManager) and state.status == st.RUNNING:
            error = await tick(projection, self.db, state)
            if self.state is state and error != state.error:  # not replaced meanwhile
                self.state = msgspec.structs.replace(state, error=error)

    async def _wait_for_events(self) -> None:
        waiting = self.store.wait_for_events(self.reached)
        if isinstance(self.projection, ProcessManager):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.projection.tick_every):
                    await waiting
        else:
            await waiting

    async def _persist_reached(self) -> None:
        """Store a checkpoint moved past events this projection does not handle."""
        if self.reached > self._state.position and self._state.status == st.RUNNING:
            await self._commit([], self.reached)

    async def _apply(self, events: list[RecordedEvent], position: int) -> None:
        try:
            await self._commit(events, position)
        except st.ProjectionMoved:
            await self.reload()
        except (StoreClosed, Unavailable):
            raise  # a database or broker, not the handler: the run loop backs off and retries
        except Exception as error:
            log.warning(
                "projection %s: batch up to %d failed (%s); retrying event by event",
                self.projection.name,
                position,
                describe(error),
            )
            await self._apply_one_by_one(events, position)

    async def _apply_one_by_one(self, events: list[RecordedEvent], position: int) -> None:
        for event in events:
            for attempt in range(self.runner.retries + 1):
                try:
                    await self._commit([event], event.position)
                    break
                except st.ProjectionMoved:
                    await self.reload()
                    return
                except (StoreClosed, Unavailable):
                    raise  # never blame an event for a database or broker that went away
                except Exception as error:
                    if attempt == self.runner.retries:
                        await self._stuck(event, error)
                        return
                    pause = self.runner.backoff * 2**attempt * (0.5 + random.random())
                    await asyncio.sleep(pause)
        await self._commit([], position)

    async def _commit(self, events: list[RecordedEvent], position: int) -> None:
        """Apply ``events`` and move the checkpoint to ``position``: one transaction for a
        SQL projection; handlers first, then the checkpoint, for any other."""
        projection, state = self.projection, self._state
        name, at, started = state.name, now(), time.time_ns()
        if isinstance(projection, SQLProjection):
            names = physical_names(state.tables, state.generation)

            def run(conn: sqlite3.Connection) -> None:
                st.advance(conn, name, state, position, at)
                if events:
                    apply(projection, conn, names, events)

            await self.db.write(run)
        else:
            if events:
                await projection.handle_batch(events)
            await self.db.write(lambda c: st.advance(c, name, state, position, at))
        self._committed(state, position, stored=True)
        self._observe(events, started)

    def _observe(self, events: list[RecordedEvent], started: int) -> None:
        observer = self.runner.observer
        if observer is not None and events:
            observer.batched(self.projection.name, events, started)

    def _committed(self, loaded: st.State, position: int, stored: bool) -> None:
        """Take note that everything up to ``position`` is applied (and the checkpoint
        stored there, if ``stored``) for the state the batch was read with; ignore it if a
        rebuild's switch or a reload replaced that state meanwhile."""
        if self.state is not loaded:
            return
        if stored:
            self.state = msgspec.structs.replace(loaded, position=position)
        self.reached = max(self.reached, position)

    async def _stuck(self, event: RecordedEvent, error: Exception) -> None:
        text = describe(error)
        state = self._state
        try:
            await self.db.write(
                lambda c: st.mark_stuck(c, state.name, state.generation, event, text, now())
            )
        except st.ProjectionMoved:
            await self.reload()
            return
        self.state = msgspec.structs.replace(
            state,
            status=st.STUCK,
            error=text,
            error_position=event.position,
            error_event=str(event.id),
            error_type=event.type,
        )
        self.failure = ProjectionError(state.name, event.position, event.type, str(event.id), text)
        log.error("%s", self.failure)
        await self.runner.notify()

    async def _wait_while_stuck(self) -> None:
        """Poll the stored state until an operator skips the event (maybe from the CLI)."""
        await self._until_stopped(asyncio.sleep(self.runner.stuck_poll))
        name = self.projection.name
        stored = await self.db.read(lambda c: st.load(c, name))
        if (
            stored is None
            or stored.status != st.STUCK
            or stored.generation != self._state.generation
        ):
            await self.reload()
            await self.runner.notify()

    async def _until_stopped(self, waiting: Awaitable[object]) -> None:
        """Await ``waiting`` unless the runner is asked to stop first."""
        wait = asyncio.ensure_future(waiting)
        stop = asyncio.ensure_future(self.runner._stopping.wait())
        try:
            await asyncio.wait({wait, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (wait, stop):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(wait, stop, return_exceptions=True)

    # -- rebuilds ---------------------------------------------------------------------------

    async def rebuild(self, progress: Progress | None) -> None:
        projection = self.projection
        if not isinstance(projection, SQLProjection):
            await self.reset()  # a target eskit does not own: cleared, then replayed live
            return
        rebuild = await self.db.write(lambda c: st.start_rebuild(c, projection, now()))
        self.rebuilding = rebuild
        names = physical_names(projection.tables, rebuild.generation)
        position = rebuild.position
        while True:
            head = await self.store.last_position()
            page = await self.store.read_page(
                after=position, limit=projection.batch_size, types=projection.types
            )
            done = page.next_after

            def run(
                conn: sqlite3.Connection,
                events: list[RecordedEvent] = page.events,
                done: int = done,
            ) -> None:
                st.advance_rebuild(conn, projection.name, rebuild.generation, done)
                apply(projection, conn, names, events)

            await self.db.write(run)
            position = done
            self.rebuilding = msgspec.structs.replace(rebuild, position=position)
            if progress is not None:
                progress(position, max(head, position))
            if len(page.events) < projection.batch_size:
                break
        self.state = await self.db.write(lambda c: self._switch(c, position))
        self.reached = self.state.position
        self.rebuilding = None
        await self.runner.notify()

    def _switch(self, conn: sqlite3.Connection, position: int) -> st.State:
        """In one transaction: apply what was appended since the last batch (when the log is
        in this database, so the new build is exactly at the head), then switch."""
        projection = self.projection
        assert isinstance(projection, SQLProjection)
        rebuild = st.load_rebuild(conn, projection.name)
        if rebuild is None:
            raise st.ProjectionMoved(projection.name)
        names = physical_names(projection.tables, rebuild.generation)
        position = apply_to_head(self.db, conn, projection, names, position)
        rebuild = msgspec.structs.replace(rebuild, position=position)
        return st.switch(conn, projection, rebuild, now())

    # -- status -----------------------------------------------------------------------------

    def reached_or_raise(self, position: int) -> bool:
        if self.state is not None and self.reached >= position:
            return True
        if self.failure is not None:
            raise self.failure
        return False

    def status(self, head: int) -> ProjectionStatus:
        state = self.state
        running = self.task is not None and not self.task.done()
        if state is None:  # its state is not loaded yet
            status = "starting" if running else "stopped"
            return ProjectionStatus(self.projection.name, self.projection.version, 0, head, status)
        status = st.shown_status(state)
        if self.rebuilding is not None:
            status = "rebuilding"
        elif state.status == st.RUNNING and not running:
            status = "stopped"
        return ProjectionStatus(
            state.name,
            state.version,
            self.reached,
            head,
            status,
            state.error,
            state.error_position,
            state.error_type,
            state.error_event,
            None if self.rebuilding is None else self.rebuilding.position,
        )
