"""One projection run by several workers, in several processes or on several machines.

Start a ``PartitionedWorker`` for the projection wherever there is capacity: the workers
share its partitions (see ``leases``), each taking a fair share, renewing its leases with a
heartbeat and giving partitions back when more workers join or when it stops. A worker that
dies (or is paused) past its lease loses its partitions to the others; whatever it tries to
commit afterwards is refused by the checkpoint statement and rolls back. Events of one
stream are always in one partition, applied in order.

Each worker reads the log from its lowest partition checkpoint and applies only its own
partitions' events: reading is repeated per worker, applying is shared.

A handler that raises is retried event by event with backoff, as the runner does; an event
that keeps failing marks its partition stuck (kept on the partition's row, so whoever holds
it later leaves it alone too) and the worker goes on with its other partitions until an
operator skips the event (``skip`` or ``eskit projections skip``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Sequence

import msgspec

from eskit.errors import StoreClosed
from eskit.projections import leases
from eskit.projections import state as st
from eskit.projections.database import Database, database_for
from eskit.projections.engine import NOT_THE_HANDLER, Commit, MarkStuck, Policy, apply_batch, drive
from eskit.projections.failure import describe, log_failure
from eskit.projections.leases import Lease, LeaseLost, PartitionRow, partition_of
from eskit.projections.projection import AnyProjection, SQLProjection, apply, physical_names
from eskit.projections.runner import now
from eskit.projections.service import Service
from eskit.projections.sql import Connection, is_sqlite
from eskit.retry import backoff
from eskit.store.base import EventStore
from eskit.store.model import RecordedEvent

log = logging.getLogger("eskit.projections")


class PartitionedWorker(Service):
    """Applies its share of a projection's partitions; ``async with`` or start/stop."""

    def __init__(
        self,
        store: EventStore,
        projection: AnyProjection,
        *,
        partitions: int = 16,
        lease: float = 10.0,
        worker: str | None = None,
        database: Database | None = None,
        retries: int = 3,
        backoff: float = 0.1,
    ) -> None:
        if not isinstance(partitions, int) or partitions < 1:
            raise ValueError(f"partitions must be an int >= 1, got {partitions!r}")
        if not lease > 0:
            raise ValueError(f"lease must be a positive number of seconds, got {lease!r}")
        self.store, self.projection = store, projection
        self.count, self.lease = partitions, lease
        self.retries, self.backoff = retries, backoff
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._owns_database = database is None
        self.db = database or database_for(store)
        self.held: dict[int, Lease] = {}
        """The partitions this worker holds now."""
        self.applied = 0
        """Events this worker applied (committed)."""
        self.rejected = 0
        """Batches refused because a lease had been lost meanwhile (rolled back)."""
        self.error: str | None = None
        """The last failure of a batch that was not a handler's (a database that went
        away, an outdated worker), until a batch succeeds again. A handler's failure marks
        its partition stuck instead: see ``partitions()``."""
        self._state: st.State | None = None
        self._changed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the partitions if this is the first worker, take a share, start."""
        projection, count = self.projection, self.count
        state = await self.db.write(lambda c: st.setup(c, projection, now()))
        if state.version != projection.version:
            raise ValueError(
                f"projection {projection.name} is at version {state.version}, the code at"
                f" {projection.version}: rebuild it first (eskit projections rebuild)"
            )
        await self.db.write(
            lambda c: leases.prepare(c, projection.name, count, state.generation, state.position)
        )
        self._stopping.clear()
        await self._heartbeat()
        self._tasks = [
            asyncio.create_task(self._beat(), name=f"lease:{projection.name}"),
            asyncio.create_task(self._work(), name=f"partitions:{projection.name}"),
        ]

    async def stop(self, grace: float = 10.0) -> None:
        """Finish the batch in hand, give the partitions back, close what it opened."""
        self._stopping.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
        name, worker = self.projection.name, self.worker
        try:
            await self.db.write(lambda c: leases.release(c, name, worker, None))
        except Exception:  # the leases expire by themselves
            log.warning("projection %s: could not release partitions", name, exc_info=True)
        self.held = {}
        if self._owns_database:
            await self.db.close()

    async def partitions(self) -> list[PartitionRow]:
        """Every partition of the projection as stored: checkpoint, owner, lease, and the
        error and event of a stuck one."""
        name = self.projection.name
        return await self.db.read(lambda c: leases.partitions(c, name))

    async def skip(self, reason: str) -> list[st.Skip]:
        """Step every stuck partition of the projection (whoever holds it) over the event
        it is stuck on, recording who/why in ``reason``; the partitions go on from there."""
        name = self.projection.name
        records = await self.db.write(lambda c: leases.skip(c, name, reason, now()))
        if records and self._tasks:  # running: take the partitions as skipped, wake up
            await self._heartbeat()
        return records

    @property
    def _active(self) -> dict[int, Lease]:
        """The partitions held that are not stuck: the ones to apply events to."""
        return {p: lease for p, lease in self.held.items() if not lease.stuck}

    # -- leases ---------------------------------------------------------------------------

    async def _beat(self) -> None:
        """Renew the leases a third of a lease apart, so one late beat loses nothing."""
        while not self._stopping.is_set():
            await _first(asyncio.sleep(self.lease / 3), self._stopping.wait())
            if self._stopping.is_set():
                return
            try:
                await self._heartbeat()
            except StoreClosed:
                return
            except Exception:
                log.warning("projection %s: heartbeat failed", self.projection.name, exc_info=True)

    async def _heartbeat(self) -> None:
        name, worker, count = self.projection.name, self.worker, self.count
        ttl = int(self.lease * 1_000_000)

        version = self.projection.version

        def run(conn: Connection) -> tuple[st.State, dict[int, Lease]]:
            state = st.load(conn, name)
            assert state is not None, "created in start()"
            if state.version != version:  # rebuilt by newer code: this worker's is outdated
                leases.release(conn, name, worker, None)
                return state, {}
            held = leases.heartbeat(
                conn, name, worker, ttl, count, state.generation, state.position
            )
            return state, held

        state, held = await self.db.write(run)
        if state.version != version:
            self.error = (
                f"projection {name} was rebuilt at version {state.version}; this worker runs"
                f" version {version}: restart it with the new code"
            )
        gained = set(held) - set(self.held)
        before = set(self._active)
        self._state, self.held = state, held
        if gained:
            log.info("projection %s: %s took partitions %s", name, worker, sorted(gained))
        if set(self._active) - before:  # taken, or skipped: there is work
            self._changed.set()

    # -- applying -------------------------------------------------------------------------

    async def _work(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                if not self._active:
                    self._changed.clear()
                    await _first(self._changed.wait(), self._stopping.wait())
                    continue
                full = await self._step()
                failures = 0
                self.error = None
                if not full and self._active:
                    self._changed.clear()
                    low = min(lease.position for lease in self._active.values())
                    await _first(
                        self.store.wait_for_events(low),
                        self._changed.wait(),
                        self._stopping.wait(),
                    )
            except LeaseLost as lost:
                self.rejected += 1
                log.warning("%s; batch rolled back", lost)
                await self._heartbeat()
            except StoreClosed:
                return
            except Exception as error:  # a database that went away: retry
                failures += 1
                self.error = describe(error)
                pause = backoff(self.backoff, failures)
                name = self.projection.name
                log_failure(log, "projection %s: retrying in %.1f s", name, pause, error=error)
                await _first(asyncio.sleep(pause), self._stopping.wait())
                with contextlib.suppress(Exception):  # a lost lease may be why: look first
                    await self._heartbeat()

    async def _step(self) -> bool:
        """Apply one page of the log to the partitions held and not stuck; True if the
        page was full."""
        projection, held, state = self.projection, self._active, self._state
        assert state is not None
        low = min(lease.position for lease in held.values())
        page = await self.store.read_page(
            after=low, limit=projection.batch_size, types=projection.types
        )
        if page.next_after <= low:
            return False
        mine = self._mine(page.events, held)
        held = dict(held)
        count = self.count

        async def perform(effect: object) -> None:
            if isinstance(effect, MarkStuck):
                assert isinstance(effect.key, int)
                await self._stuck(held.pop(effect.key), effect.event, effect.text)
            elif isinstance(effect, Commit) and effect.key is None:  # the batch, or the rest
                rest = {p: lease for p, lease in held.items() if p not in effect.stuck}
                await self._commit(state, rest, effect.events, effect.position)
            elif isinstance(effect, Commit):  # one event, alone
                assert isinstance(effect.key, int)
                lease = held[effect.key]
                await self._commit(state, {effect.key: lease}, effect.events, effect.position)
                held[effect.key] = msgspec.structs.replace(lease, position=effect.position)
                self._advanced({effect.key: held[effect.key]}, effect.position)

        policy = Policy(self.retries, self.backoff, (*NOT_THE_HANDLER, LeaseLost))
        steps = apply_batch(
            projection.name,
            mine,
            page.next_after,
            policy,
            key=lambda event: partition_of(event.stream, count),
        )
        await drive(steps, perform)
        self._advanced(held, page.next_after)
        return len(page.events) == projection.batch_size

    async def _stuck(self, lease: Lease, event: RecordedEvent, text: str) -> None:
        """Stop the partition before ``event`` for an operator to skip; the others go on."""
        name, worker = self.projection.name, self.worker
        await self.db.write(lambda c: leases.mark_stuck(c, name, worker, lease, event, text))
        current = self.held.get(lease.partition)
        if current is not None and current.generation == lease.generation:
            stuck = msgspec.structs.replace(current, error_position=event.position)
            self.held[lease.partition] = stuck
        log.error(
            "projection %s: partition %d stuck at position %d (event %s, %s): %s",
            name,
            lease.partition,
            event.position,
            event.id,
            event.type,
            text,
        )

    def _advanced(self, held: dict[int, Lease], position: int) -> None:
        """Take note of checkpoints committed at ``position``, for the leases still held
        as they were (a heartbeat may have replaced them meanwhile)."""
        for partition, lease in held.items():
            current = self.held.get(partition)
            if current is not None and current.generation == lease.generation:
                moved = max(current.position, position)
                self.held[partition] = msgspec.structs.replace(current, position=moved)

    def _mine(self, events: list[RecordedEvent], held: dict[int, Lease]) -> list[RecordedEvent]:
        """The events of the partitions held, past each partition's own checkpoint."""
        count = self.count
        mine = []
        for event in events:
            lease = held.get(partition_of(event.stream, count))
            if lease is not None and event.position > lease.position:
                mine.append(event)
        return mine

    async def _commit(
        self,
        state: st.State,
        held: dict[int, Lease],
        events: Sequence[RecordedEvent],
        position: int,
    ) -> None:
        """Apply ``events`` and move the held checkpoints to ``position``: one transaction
        for a SQL projection (the lease check last, so its row locks are held briefly);
        the handlers first, then the checkpoints, for any other."""
        projection, name, worker = self.projection, self.projection.name, self.worker
        timeout = int(self.lease * 2000)  # past a take-over, before the locks annoy anyone
        if isinstance(projection, SQLProjection):
            names = physical_names(state.tables, state.generation)

            def run(conn: Connection) -> None:
                if not is_sqlite(conn):  # a paused worker must not hold row locks for long
                    conn.execute(f"SET LOCAL idle_in_transaction_session_timeout = {timeout}")
                if events:
                    apply(projection, conn, names, events)
                leases.advance(conn, name, worker, held, position)

            await self.db.write(run)
        else:
            if events:
                await projection.handle_batch(events)
            await self.db.write(lambda c: leases.advance(c, name, worker, held, position))
        self.applied += len(events)


async def _first(*waiting: Awaitable[object]) -> None:
    """Wait until the first of ``waiting`` is done; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waiting]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
