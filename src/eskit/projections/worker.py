"""One projection's procedures, shared by the async and the blocking runner.

Each procedure (``prepare``, ``catch_up``, ``follow``, ``rebuild``...) is a generator
that yields what it needs done (``steps``' effects: a write transaction, a page of the
log, a pause) and is sent the outcome, or has the error thrown in. The async runner
performs the effects with coroutines, the blocking one with blocking calls: the logic,
and the engine's batch, retry and stuck loop within it, is written once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import msgspec

from eskit.errors import ProjectionError, StoreClosed, Unavailable
from eskit.projections import leases
from eskit.projections import state as st
from eskit.projections.engine import (
    Commit,
    MarkStuck,
    Outcome,
    Policy,
    Steps,
    apply_batch,
    translate,
)
from eskit.projections.failure import describe, log_failure
from eskit.projections.process import ProcessManager
from eskit.projections.projection import (
    AnyProjection,
    Projection,
    SQLProjection,
    apply,
    physical_names,
)
from eskit.projections.sql import Connection
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
from eskit.retry import backoff
from eskit.store.model import Page, RecordedEvent
from eskit.store.sqlite_writer import micros

log = logging.getLogger("eskit.projections")
Progress = Callable[[int, int], None]
"""Called with (position reached, head) as a rebuild advances."""


def now() -> int:
    return micros(dt.datetime.now(dt.UTC))


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


class Settings(Protocol):
    """What a worker reads from its runner (either face)."""

    retries: int
    backoff: float
    stuck_poll: float
    observer: BatchObserver | None


class LogDatabase(Protocol):
    """What a worker asks of its database beyond the effects: whether the log is there,
    and a page of it read in the caller's transaction."""

    holds_log: bool

    def page_in(
        self, conn: Connection, after: int, limit: int, types: tuple[str, ...] | None
    ) -> Page | None: ...


def apply_to_head(
    db: LogDatabase,
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


class Worker:
    """One projection's state and procedures: read a batch, apply it with the
    checkpoint, repeat."""

    def __init__(self, runner: Settings, projection: AnyProjection, db: Any) -> None:
        self.runner, self.projection, self.db = runner, projection, db
        self.state: st.State | None = None
        self.reached = 0
        self.task: asyncio.Task[None] | None = None
        """The async runner's task following the log, while it runs."""
        self.thread: threading.Thread | None = None
        """The blocking runner's thread following the log, while it runs."""
        self.rebuilding: st.Rebuild | None = None
        self.failure: Exception | None = None
        """Why it cannot go on: stuck on an event, or a setup it can never complete."""

    @property
    def following(self) -> bool:
        """Whether a task or thread follows the log for it now."""
        task, thread = self.task, self.thread
        return (task is not None and not task.done()) or (thread is not None and thread.is_alive())

    @property
    def policy(self) -> Policy:
        return Policy(self.runner.retries, self.runner.backoff)

    # -- lifecycle ------------------------------------------------------------------------

    def follow(self) -> Steps[None]:
        """Follow the log until the runner stops. Handler errors are dealt with by the
        engine; anything else (a database that went away for a moment) is logged and
        retried with backoff, so the projection never dies silently."""
        failures = 0
        while not (yield Stopping()):
            try:
                if self.state is None:
                    yield from self.prepare()
                if self._state.status == st.STUCK:
                    yield from self._wait_while_stuck()
                    continue
                full = yield from self.step()
                yield from self._tick()
                if not full:
                    yield from self._persist_reached()
                    timeout = None
                    if isinstance(self.projection, ProcessManager):
                        timeout = self.projection.tick_every
                    yield WaitForEvents(self.reached, timeout)
                failures = 0
            except st.ProjectionMoved:  # rebuilt, reset or skipped elsewhere: start from there
                yield from self.reload()
            except StoreClosed:
                return
            except ValueError as error:  # a definition the database refuses: retrying won't help
                self.failure = error
                log.error("projection %s cannot start: %s", self.projection.name, describe(error))
                yield Notify()
                return
            except Exception as error:
                failures += 1
                pause = backoff(self.runner.backoff, failures)
                name = self.projection.name
                if isinstance(error, Unavailable):  # expected in an outage: one line each
                    text = describe(error)
                    log.warning("projection %s: %s; retrying in %.1f s", name, text, pause)
                else:
                    log_failure(log, "projection %s: retrying in %.1f s", name, pause, error=error)
                yield Idle(pause)

    def prepare(self) -> Steps[None]:
        """Load (or create) the projection's state; rebuild first if its version changed."""
        projection = self.projection
        self.state = yield Write(lambda c: st.setup(c, projection, now()))
        if (yield Read(lambda c: leases.partitions(c, projection.name))):
            raise ValueError(  # both would apply the same events
                f"projection {projection.name} is run by partitioned workers"
                " (eskit projections work); a runner may rebuild it, not follow it"
            )
        if self._state.version != projection.version:
            if isinstance(projection, SQLProjection):
                yield from self.rebuild(None)  # the old build keeps serving reads meanwhile
            else:
                yield from self.reset()
        self.reached = self._state.position

    @property
    def _state(self) -> st.State:
        assert self.state is not None, "prepare() first"
        return self.state

    def reload(self) -> Steps[None]:
        """Take the state as stored (after a rebuild, reset or skip by anyone)."""
        projection = self.projection
        self.state = yield Write(lambda c: st.setup(c, projection, now()))
        self.reached = self._state.position
        self.failure = None

    def reset(self) -> Steps[None]:
        if isinstance(self.projection, Projection):
            yield ResetTarget(self.projection)
        name = self.projection.name
        yield Write(lambda c: st.reset(c, name))
        yield from self.reload()

    def skip(self, reason: str) -> Steps[st.Skip]:
        name = self.projection.name
        record: st.Skip = yield Write(lambda c: st.skip(c, name, reason, now()))
        yield from self.reload()
        yield Notify()
        return record

    # -- following --------------------------------------------------------------------------

    def catch_up(self, until: int) -> Steps[None]:
        """Apply every event up to ``until`` (another runner may be doing the same: its
        batches then win, and this one reloads and goes on from there)."""
        while self.reached < until and self._state.status != st.STUCK:
            try:
                if not (yield from self.step()):
                    break
            except st.ProjectionMoved:
                yield from self.reload()
        try:
            yield from self._persist_reached()
        except st.ProjectionMoved:
            yield from self.reload()

    def step(self) -> Steps[bool]:
        """Read and apply one batch; True if the batch was full (more may follow)."""
        projection = self.projection
        if isinstance(projection, SQLProjection) and self.db.holds_log:
            try:
                return (yield from self._step_in_one_transaction(projection))
            except self.policy.not_the_handler:
                raise  # the follow loop reloads or backs off
            except Exception as error:  # a handler failed: the engine goes event by event
                log.warning(
                    "projection %s: batch after %d failed (%s); retrying event by event",
                    projection.name,
                    self.reached,
                    describe(error),
                )
                return (yield from self._read_then_apply(batch_failed=True))
        return (yield from self._read_then_apply())

    def _step_in_one_transaction(self, projection: SQLProjection) -> Steps[bool]:
        """Read the batch, apply it and move the checkpoint in one write transaction: one
        round trip to the database instead of a read and then a write."""
        state, after, at = self._state, self.reached, now()
        names = physical_names(state.tables, state.generation)
        started = time.time_ns()

        def run(conn: sqlite3.Connection) -> Page | None:
            page: Page | None = self.db.page_in(
                conn, after, projection.batch_size, projection.types
            )
            if page is not None and page.events:
                st.advance(conn, state.name, state, page.next_after, at)
                apply(projection, conn, names, page.events)
            return page

        page: Page | None = yield Write(run)
        assert page is not None, "the database holds the log"
        self._committed(state, page.next_after, stored=bool(page.events))
        self._observe(page.events, started)
        yield Notify()
        return len(page.events) == projection.batch_size

    def _read_then_apply(self, batch_failed: bool = False) -> Steps[bool]:
        projection, loaded = self.projection, self.state
        page: Page = yield ReadPage(self.reached, projection.batch_size, projection.types)
        if self.state is not loaded:  # rebuilt, reloaded or skipped meanwhile: read again
            return True
        if page.events:
            try:
                yield from self._apply(page.events, page.next_after, batch_failed)
            except st.ProjectionMoved:
                yield from self.reload()
        else:
            self.reached = max(self.reached, page.next_after)
        yield Notify()
        return len(page.events) == projection.batch_size

    def _apply(
        self, events: list[RecordedEvent], position: int, batch_failed: bool
    ) -> Steps[Outcome]:
        """The engine's batch, its commits and stuck event performed by this worker."""
        steps = apply_batch(
            self.projection.name, events, position, self.policy, batch_failed=batch_failed
        )

        def perform(effect: object) -> Steps[Any] | None:
            if isinstance(effect, Commit):
                return self._commit(effect.events, effect.position)
            if isinstance(effect, MarkStuck):
                return self._stuck(effect.event, effect.text)
            return None

        return (yield from translate(steps, perform))

    def _tick(self) -> Steps[None]:
        """Let a process manager send what its state says is due (``process.tick``)."""
        projection, state = self.projection, self._state
        if isinstance(projection, ProcessManager) and state.status == st.RUNNING:
            error = yield Tick(projection, state)
            if self.state is state and error != state.error:  # not replaced meanwhile
                self.state = msgspec.structs.replace(state, error=error)

    def _persist_reached(self) -> Steps[None]:
        """Store a checkpoint moved past events this projection does not handle."""
        if self.reached > self._state.position and self._state.status == st.RUNNING:
            yield from self._commit([], self.reached)

    def _commit(self, events: Sequence[RecordedEvent], position: int) -> Steps[None]:
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

            yield Write(run)
        else:
            if events:
                yield Handle(projection, events)
            yield Write(lambda c: st.advance(c, name, state, position, at))
        self._committed(state, position, stored=True)
        self._observe(events, started)

    def _observe(self, events: Sequence[RecordedEvent], started: int) -> None:
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

    def _stuck(self, event: RecordedEvent, text: str) -> Steps[None]:
        state = self._state
        try:
            yield Write(
                lambda c: st.mark_stuck(c, state.name, state.generation, event, text, now())
            )
        except st.ProjectionMoved:
            yield from self.reload()
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
        yield Notify()

    def _wait_while_stuck(self) -> Steps[None]:
        """Poll the stored state until an operator skips the event (maybe from the CLI)."""
        yield Idle(self.runner.stuck_poll)
        name = self.projection.name
        stored: st.State | None = yield Read(lambda c: st.load(c, name))
        if (
            stored is None
            or stored.status != st.STUCK
            or stored.generation != self._state.generation
        ):
            yield from self.reload()
            yield Notify()

    # -- rebuilds ---------------------------------------------------------------------------

    def rebuild(self, progress: Progress | None) -> Steps[None]:
        projection = self.projection
        if not isinstance(projection, SQLProjection):
            yield from self.reset()  # a target eskit does not own: cleared, then replayed live
            return
        rebuild: st.Rebuild = yield Write(lambda c: st.start_rebuild(c, projection, now()))
        self.rebuilding = rebuild
        names = physical_names(projection.tables, rebuild.generation)
        position = rebuild.position
        while True:
            head: int = yield LastPosition()
            page: Page = yield ReadPage(position, projection.batch_size, projection.types)
            done = page.next_after

            def run(
                conn: sqlite3.Connection,
                events: list[RecordedEvent] = page.events,
                done: int = done,
            ) -> None:
                st.advance_rebuild(conn, projection.name, rebuild.generation, done)
                apply(projection, conn, names, events)

            yield Write(run)
            position = done
            self.rebuilding = msgspec.structs.replace(rebuild, position=position)
            if progress is not None:
                progress(position, max(head, position))
            if len(page.events) < projection.batch_size:
                break
        self.state = yield Write(lambda c: self._switch(c, position))
        self.reached = self._state.position
        self.rebuilding = None
        yield Notify()

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
        running = self.following
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
