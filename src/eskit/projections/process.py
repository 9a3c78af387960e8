"""Process managers (sagas): react to events by sending commands, exactly once.

A process manager is a SQL projection plus a ``tick``. Its handlers only record, in its own
tables and in the transaction that advances its checkpoint, what the process knows and what
it has to do next (a row per pending command: an outbox). ``tick`` then reads those rows and
sends the commands with ``send_once``, whose command id derives from the manager's name and
a key of the step, so a tick repeated after a crash sends nothing twice (the command bus
returns the earlier result), and marks the rows done. The runner calls ``tick`` after every
batch and every ``tick_every`` seconds, with the time from the manager's ``clock``, so
deadlines ("unpaid 14 days after the due date") are driven by a clock tests can set. A
tick that raises is tried again at the next one; meanwhile its error is stored with the
manager's state, which shows as ``failing`` until a tick succeeds.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

from eskit.application.commands import CommandBus, CommandResult
from eskit.projections import state as st
from eskit.projections.database import Database
from eskit.projections.failure import describe, log_failure
from eskit.projections.projection import SQLProjection
from eskit.store.base import utc_now
from eskit.store.model import RecordedEvent
from eskit.store.sqlite_writer import micros

log = logging.getLogger("eskit.projections")
PROCESS_NAMESPACE = uuid.UUID("3b8f3f0e-8a51-4c5e-9d7a-6a1f0b2c9e47")
"""Namespace of command ids derived by process managers (never change it)."""


class ProcessManager(SQLProjection):
    """A projection whose ``tick`` turns its recorded state into commands."""

    tick_every: ClassVar[float] = 1.0
    """Seconds between ticks while no events arrive."""

    def __init__(self, bus: CommandBus, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self.bus = bus
        self.clock = clock

    async def tick(self, db: Database, now: dt.datetime) -> None:
        """Send the commands the state says are due (override)."""

    async def send_once(
        self,
        command: object,
        *,
        key: str,
        caused_by: RecordedEvent | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> CommandResult:
        """Send ``command`` once for ``key`` (e.g. ``"invoice-7:reminder"``), however often
        this is called; the events it causes carry the correlation id of ``caused_by``."""
        command_id = uuid.uuid5(PROCESS_NAMESPACE, f"{self.name}:{key}")
        correlation = causation = None
        if caused_by is not None:
            correlation = str(caused_by.metadata.get("correlation_id") or caused_by.id)
            causation = str(caused_by.id)
        return await self.bus.send(
            command,
            command_id=command_id,
            correlation_id=correlation,
            causation_id=causation,
            metadata={"process_manager": self.name, **(metadata or {})},
        )


async def tick(manager: ProcessManager, db: Database, state: st.State) -> str | None:
    """Run one ``tick`` of ``manager`` (its stored ``state``, running). If it raises, log
    it and store when and why (the status shows ``failing``); if it succeeds, clear an
    error stored by an earlier one. Returns the error now stored."""
    try:
        await manager.tick(db, manager.clock())
    except Exception as error:
        log_failure(
            log, "process manager %s: tick failed; retrying later", manager.name, error=error
        )
        at = dt.datetime.now(dt.UTC)
        text = f"tick failed at {at:%Y-%m-%d %H:%M:%S} UTC: {describe(error)}"
        name, generation = state.name, state.generation
        await db.write(lambda c: st.tick_failed(c, name, generation, text, micros(at)))
        return text
    if state.error is not None:
        await db.write(lambda c: st.tick_succeeded(c, state.name))
    return None
