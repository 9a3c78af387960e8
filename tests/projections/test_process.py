"""A process manager: its handlers record what is due, its tick sends each command once when
the clock says so, however often it ticks and across restarts."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import re
import uuid

import pytest

import eskit
from eskit.application import CommandBus
from eskit.domain import Decider, EventRegistry
from eskit.projections import (
    Database,
    ProcessManager,
    ProjectionRunner,
    ProjectionStatus,
    ReadModelConnection,
    handles,
    write_live,
)
from eskit.projections import state as st
from eskit.projections.sql import execute
from tests.application.conftest import START, ManualClock

pytestmark = pytest.mark.anyio


@dataclasses.dataclass(frozen=True)
class SendReminder:
    order_id: str


@dataclasses.dataclass(frozen=True)
class ReminderSent:
    order_id: str


events = EventRegistry()
events.register("ReminderSent")(ReminderSent)

reminder: Decider[SendReminder, int] = Decider(
    category="reminder",
    initial_state=int,
    evolve=lambda sent, event: sent + 1,
    decide=lambda command, sent: [ReminderSent(command.order_id)],  # sends again if asked
)


class Reminders(ProcessManager):
    """Reminds of each order once it is due."""

    name = "reminders"
    tables = ("reminders",)
    schema = (
        "CREATE TABLE {reminders} (order_id TEXT PRIMARY KEY, due TEXT NOT NULL,"
        " placed TEXT NOT NULL)",
    )
    tick_every = 0.01  # the runner ticks too, often, racing the test's own ticks

    @handles("OrderPlaced")
    def placed(self, event: eskit.RecordedEvent, db: ReadModelConnection) -> None:
        db.execute(
            "INSERT INTO {reminders} VALUES (?, ?, ?)",
            (event.data["order_id"], event.data["due"], str(event.id)),
        )

    async def tick(self, db: Database, now: dt.datetime) -> None:
        due = await db.read(
            lambda c: execute(
                c,
                "SELECT order_id, placed FROM reminders WHERE due <= ? ORDER BY order_id",
                (now.isoformat(),),
            ).fetchall()
        )
        for order_id, placed in due:
            cause = await self.bus.store.find_event(uuid.UUID(placed))
            await self.send_once(
                SendReminder(order_id), key=f"{order_id}:reminder", caused_by=cause
            )


def bus_of(store: eskit.EventStore) -> CommandBus:
    bus = CommandBus(store, events)
    bus.register(SendReminder, reminder, aggregate_id=lambda command: command.order_id)
    return bus


async def place(store: eskit.EventStore, order_id: str, due_in: dt.timedelta) -> int:
    due = (START + due_in).isoformat()
    placed = eskit.NewEvent("OrderPlaced", {"order_id": order_id, "due": due})
    return (await store.append(f"order-{order_id}", [placed])).last_position


async def sent(store: eskit.EventStore) -> dict[str, list[eskit.RecordedEvent]]:
    """The reminder events per order."""
    found: dict[str, list[eskit.RecordedEvent]] = {}
    async for event in store.read_all(types=["ReminderSent"]):
        found.setdefault(event.data["order_id"], []).append(event)
    return found


async def test_each_due_command_is_sent_once_however_often_it_ticks(
    store: eskit.EventStore, readmodels: Database
) -> None:
    clock = ManualClock()
    await place(store, "a", dt.timedelta(hours=1))
    last = await place(store, "b", dt.timedelta(hours=3))
    manager = Reminders(bus_of(store), clock)

    async with ProjectionRunner(store, [manager], database=readmodels) as runner:
        await runner.wait_until(last)
        await manager.tick(readmodels, clock())
        before_due = await sent(store)
        clock.advance(2 * 3600)
        await manager.tick(readmodels, clock())
        await manager.tick(readmodels, clock())
        after_a = await sent(store)

    restarted = Reminders(bus_of(store), clock)
    async with ProjectionRunner(store, [restarted], database=readmodels) as runner:
        await runner.wait_until(last)
        await restarted.tick(readmodels, clock())
        clock.advance(2 * 3600)
        await restarted.tick(readmodels, clock())
        after_b = await sent(store)

    assert before_due == {}
    assert {order: len(found) for order, found in after_a.items()} == {"a": 1}
    assert {order: len(found) for order, found in after_b.items()} == {"a": 1, "b": 1}
    [reminded] = after_b["a"]
    [placed] = [e async for e in store.read_stream("order-a")]
    assert reminded.stream == "reminder-a"
    assert reminded.metadata["causation_id"] == str(placed.id)
    assert reminded.metadata["process_manager"] == "reminders"


async def test_the_runner_ticks_with_the_clock_it_was_given(store: eskit.EventStore) -> None:
    """No explicit tick: the runner's own ticks send, at the time the clock says."""
    clock = ManualClock(START + dt.timedelta(days=1))
    last = await place(store, "a", dt.timedelta(hours=1))
    manager = Reminders(bus_of(store), clock)

    async with ProjectionRunner(store, [manager]) as runner:
        await runner.wait_until(last)
        async with asyncio.timeout(10):
            await store.wait_for_events(after=last)  # the next event: the reminder it sent
        found = await sent(store)

    assert [(order, len(events)) for order, events in found.items()] == [("a", 1)]


class MarkingReminders(Reminders):
    """Notes in its own (live) table which reminders it sent, as a real process does."""

    name = "marking_reminders"
    tables = ("marked",)
    schema = (
        "CREATE TABLE {marked} (order_id TEXT PRIMARY KEY, due TEXT NOT NULL,"
        " placed TEXT NOT NULL, sent_position INTEGER)",
    )

    @handles("OrderPlaced")
    def placed(self, event: eskit.RecordedEvent, db: ReadModelConnection) -> None:
        db.execute(
            "INSERT INTO {marked} (order_id, due, placed) VALUES (?, ?, ?)",
            (event.data["order_id"], event.data["due"], str(event.id)),
        )

    async def tick(self, db: Database, now: dt.datetime) -> None:
        due = await db.read(
            lambda c: execute(
                c,
                "SELECT order_id FROM marked WHERE due <= ? AND sent_position IS NULL",
                (now.isoformat(),),
            ).fetchall()
        )
        for (order_id,) in due:
            result = await self.send_once(SendReminder(order_id), key=f"{order_id}:reminder")

            def note(
                t: ReadModelConnection, order_id: str = order_id, at: int | None = result.position
            ) -> None:
                t.execute(
                    "UPDATE {marked} SET sent_position = ? WHERE order_id = ?",
                    (at, order_id),
                )

            await write_live(db, self, note)


async def test_a_tick_notes_what_it_sent_in_the_live_build(
    store: eskit.EventStore, readmodels: Database
) -> None:
    """``write_live`` from a tick, on every backend (on PostgreSQL: in the store's schema)."""
    clock = ManualClock(START + dt.timedelta(days=1))
    last = await place(store, "a", dt.timedelta(hours=1))
    manager = MarkingReminders(bus_of(store), clock)

    async with ProjectionRunner(store, [manager], database=readmodels) as runner:
        await runner.wait_until(last)
        await manager.tick(readmodels, clock())
        await runner.rebuild(manager.name)  # a new build: the note is rebuilt as NULL...
        await manager.tick(readmodels, clock())  # ...and the tick notes it again, once
        noted = await readmodels.read(
            lambda c: c.execute("SELECT order_id, sent_position FROM marked").fetchall()
        )

    [reminded] = (await sent(store))["a"]
    assert noted == [("a", reminded.position)]


class FailingReminders(Reminders):
    """Reminders whose tick raises while ``failing`` is set (a command bus that is down)."""

    name = "failing_reminders"
    failing = True

    async def tick(self, db: Database, now: dt.datetime) -> None:
        if self.failing:
            raise ConnectionError("the mail relay is down")
        await super().tick(db, now)


async def status_of(runner: ProjectionRunner, wanted: str) -> ProjectionStatus:
    """The manager's status once it is ``wanted`` (the runner ticks every 10 ms)."""
    async with asyncio.timeout(10):
        while True:
            [status] = await runner.status()
            if status.status == wanted:
                return status
            await asyncio.sleep(0.01)


async def test_a_failing_tick_shows_as_failing_with_its_error_until_a_tick_succeeds(
    store: eskit.EventStore, readmodels: Database, elsewhere: Database
) -> None:
    clock = ManualClock(START + dt.timedelta(days=1))
    last = await place(store, "a", dt.timedelta(hours=1))
    manager = FailingReminders(bus_of(store), clock)

    async with ProjectionRunner(store, [manager], database=readmodels) as runner:
        await runner.wait_until(last)
        failing = await status_of(runner, st.FAILING)
        stored = await elsewhere.read(lambda c: st.load(c, manager.name))  # what the CLI reads
        assert stored is not None
        assert (stored.status, st.shown_status(stored)) == (st.RUNNING, st.FAILING)
        failed = (
            r"tick failed at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC:"
            r" ConnectionError: the mail relay is down"
        )
        # the same error; its time may differ by a second (the runner ticks every 10 ms)
        for error in (failing.error, stored.error):
            assert error is not None
            assert re.fullmatch(failed, error), error
        assert failing.position == last  # its events are still applied

        manager.failing = False
        running = await status_of(runner, st.RUNNING)
        assert running.error is None
        stored = await elsewhere.read(lambda c: st.load(c, manager.name))
        assert stored is not None
        assert (stored.status, stored.error) == (st.RUNNING, None)
        assert [order for order in await sent(store)] == ["a"]
