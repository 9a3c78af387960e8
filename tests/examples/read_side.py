"""The invoicing read side on a real SQLite file: store, command bus, every projection of
the example in a live runner, and a clock the tests move."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

from examples.invoicing.reminders import InvoiceReminders

import eskit
from eskit.application import CommandBus, CommandResult
from eskit.projections import Database, ProjectionRunner

START = dt.datetime(2024, 5, 1, 9, 0, tzinfo=dt.UTC)
DUE = dt.date(2024, 5, 31)
TIMEOUT = 30.0


class Clock:
    """The store's and the processes' time: it only moves when a test moves it."""

    def __init__(self, now: dt.datetime = START) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def set(self, now: dt.datetime) -> dt.datetime:
        self.now = now
        return now


@dataclasses.dataclass
class ReadSide:
    store: eskit.EventStore
    bus: CommandBus
    runner: ProjectionRunner
    clock: Clock

    @property
    def db(self) -> Database:
        return self.runner.database

    @property
    def reminders(self) -> InvoiceReminders:
        reminders = self.runner.worker(InvoiceReminders.name).projection
        assert isinstance(reminders, InvoiceReminders)
        return reminders

    async def send(self, *commands: object) -> CommandResult:
        """Send the commands in order; return once every projection has seen their events
        (read your own writes)."""
        result = None
        for command in commands:
            result = await self.bus.send(command)
        assert result is not None
        await self.caught_up()
        return result

    async def caught_up(self) -> None:
        async with asyncio.timeout(TIMEOUT):
            await self.runner.wait_until(await self.store.last_position())

    async def tick(self) -> None:
        """A tick of the reminder process at the clock's time, as the runner runs them."""
        await self.reminders.tick(self.db, self.clock())
        await self.caught_up()
