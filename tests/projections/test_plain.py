"""Plain projections (targets outside SQL): async and sync handlers, at-least-once delivery,
and an inbox that makes a redelivered event change nothing."""

from __future__ import annotations

import asyncio

import pytest

import eskit
from eskit.projections import (
    Database,
    Inbox,
    MemoryInbox,
    Projection,
    ProjectionRunner,
    SQLiteDatabase,
    handles,
)
from eskit.projections import state as st
from tests.projections.models import append_each

pytestmark = pytest.mark.anyio

WRITTEN = [("cart-1", "Added"), ("cart-2", "Other"), ("cart-2", "Removed"), ("cart-1", "Added")]


class Mailer(Projection):
    """Sends a (pretend) e-mail per event: a side effect that must not happen twice."""

    name = "mailer"

    def __init__(self, inbox: Inbox | None = None) -> None:
        self.inbox = inbox
        self.sent: list[tuple[str, str]] = []

    @handles("Added")
    async def added(self, event: eskit.RecordedEvent) -> None:
        await asyncio.sleep(0)  # a real await, as an e-mail client would
        self.sent.append((event.stream, event.type))

    @handles("Removed")
    def removed(self, event: eskit.RecordedEvent) -> None:
        self.sent.append((event.stream, event.type))


async def deliver(store: eskit.EventStore, mailer: Mailer, database: Database | None) -> None:
    """Run ``mailer`` up to the head, then stop."""
    async with ProjectionRunner(store, [mailer], database=database) as runner:
        await runner.wait_until(await store.last_position())


async def test_async_and_sync_handlers_see_their_events_in_order(store: eskit.EventStore) -> None:
    await append_each(store, WRITTEN)
    mailer = Mailer()

    await deliver(store, mailer, None)

    assert mailer.sent == [e for e in WRITTEN if e[1] != "Other"]


async def test_a_redelivery_after_a_reset_changes_nothing_with_an_inbox(
    store: eskit.EventStore, readmodels: Database
) -> None:
    await append_each(store, WRITTEN)
    inbox = MemoryInbox()
    await deliver(store, Mailer(inbox), readmodels)
    await readmodels.write(lambda c: st.reset(c, "mailer"))

    again = Mailer(inbox)
    await deliver(store, again, readmodels)

    assert again.sent == []
    assert len(inbox.ids) == 3


async def test_a_second_runner_from_the_start_changes_nothing_with_the_same_inbox(
    store: eskit.EventStore,
) -> None:
    await append_each(store, WRITTEN)
    inbox = MemoryInbox()
    first, second = Mailer(inbox), Mailer(inbox)
    await deliver(store, first, None)

    fresh = SQLiteDatabase(":memory:")  # no checkpoint: delivers from position 0 again
    try:
        await deliver(store, second, fresh)
    finally:
        await fresh.close()

    assert len(first.sent) == 3
    assert second.sent == []


async def test_without_an_inbox_delivery_is_at_least_once(
    store: eskit.EventStore, readmodels: Database
) -> None:
    """The contrast: a reset redelivers, and a target without an inbox sees it twice."""
    await append_each(store, WRITTEN)
    await deliver(store, Mailer(), readmodels)
    await readmodels.write(lambda c: st.reset(c, "mailer"))

    again = Mailer()
    await deliver(store, again, readmodels)

    assert len(again.sent) == 3


async def test_catching_up_a_started_runner_delivers_each_event_once(
    store: eskit.EventStore,
) -> None:
    """``run_until_caught_up`` on a runner already following waits for it instead of
    reading the same batches a second time."""
    await append_each(store, WRITTEN * 50)
    mailer = Mailer()
    async with ProjectionRunner(store, [mailer]) as runner:
        await runner.run_until_caught_up()
    assert mailer.sent == [e for e in WRITTEN * 50 if e[1] != "Other"]
