"""Consumer groups on the async face: ``Groups(store)`` manages them, ``Consumer`` reads one.

A group hands each event of its source to one consumer at a time; the consumer acks it,
or nacks it (retry, park, skip). Everything a group knows lives in the store's database
(``tables``, ``window``, ``parking``), so consumers in any number of processes share it
with no leader.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import socket
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable
from typing import Any, Final, TypeVar

from eskit.projections import engine
from eskit.projections.database import Database, database_for
from eskit.projections.sql import Connection
from eskit.store.base import EventStore
from eskit.store.model import RecordedEvent
from eskit.subscriptions import parking, steps, tables, window
from eskit.subscriptions.model import (
    ACTIONS,
    END,
    START,
    Action,
    Claimed,
    Group,
    Parked,
    Replay,
    Settings,
    Source,
    Start,
)

T = TypeVar("T")
POLL: Final = 0.1
"""Seconds an idle consumer waits before it looks for events again."""
GROUP_POLICY: Final = engine.Policy(retries=0)
"""A failing event is nacked at once: the group retries it (on any consumer, after its
backoff) and parks it after ``max_retries``."""

_databases: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def shared_database(store: Any, make: Callable[[], T]) -> T:
    """One group database per store object (a memory store offers a new private one at
    each call: the groups over it must share one)."""
    database = _databases.get(store)
    if database is None:
        database = _databases[store] = make()
    return database


def consumer_name() -> str:
    """A name for a consumer that was given none: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def start_position(start: Start, last: int) -> int:
    if start == START:
        return 0
    if start == END:
        return last
    if isinstance(start, int) and not isinstance(start, bool) and start >= 0:
        return start
    raise ValueError(f"start is 'start', 'end' or a position (an int >= 0), not {start!r}")


def key_of(settings: Settings) -> Callable[[RecordedEvent], Hashable]:
    """How a batch's events depend on each other: pinned, a stuck event holds back the
    rest of its stream; round robin, each stands alone."""
    if settings.strategy == "pinned":
        return lambda event: event.stream
    return lambda event: event.position


class Groups:
    """The consumer groups of ``store`` (their state in ``database``, by default the one
    the store offers: its own file or database)."""

    def __init__(self, store: EventStore, database: Database | None = None) -> None:
        self.store = store
        self.database = database or shared_database(store, lambda: database_for(store))
        self._ready = False

    async def _write(self, run: Callable[[Connection], T]) -> T:
        if not self._ready:
            await self.database.write(tables.ensure_schema)
            self._ready = True
        return await self.database.write(run)

    async def _read(self, run: Callable[[Connection], T]) -> T:
        return await self.database.read(run)

    async def perform(
        self, effect: Any, handler: Callable[[RecordedEvent], Any] | None = None
    ) -> Any:
        """Do one effect of a procedure (``steps``)."""
        if isinstance(effect, steps.Write):
            return await self._write(effect.run)
        if isinstance(effect, steps.Read):
            return await self._read(effect.run)
        if isinstance(effect, steps.ReadLog):
            return await self.store.read_page(effect.after, effect.limit, category=effect.category)
        if isinstance(effect, steps.Handle):
            assert handler is not None
            result = handler(effect.event)
            if isinstance(result, Awaitable):
                await result
            return None
        raise TypeError(f"unexpected effect {effect!r}")

    # -- groups -----------------------------------------------------------------------------

    async def create(
        self, name: str, source: Source, *, start: Start = START, settings: Settings | None = None
    ) -> Group:
        """A new group over ``source`` from ``start`` (``"start"``, ``"end"`` or a
        position); ``GroupExists`` if the name is taken."""
        check_name(name)
        position = start_position(start, await self.store.last_position() if start == END else 0)
        await self._write(
            lambda c: tables.create(c, name, source, settings or Settings(), position)
        )
        return await self.get(name)

    async def update(self, name: str, settings: Settings) -> Group:
        await self._write(lambda c: tables.update(c, name, settings))
        return await self.get(name)

    async def delete(self, name: str) -> None:
        await self._write(lambda c: tables.delete(c, name))

    async def get(self, name: str) -> Group:
        """The group with its counts; ``GroupNotFound``."""
        return await self._read(lambda c: tables.load(c, name))

    async def list(self) -> list[Group]:
        return await self._read(lambda c: [tables.load(c, n) for n in tables.names(c)])

    # -- consumers ----------------------------------------------------------------------------

    def consumer(self, group: str, name: str | None = None, *, poll: float = POLL) -> Consumer:
        """A consumer of ``group`` named ``name`` (one is made up if None)."""
        return Consumer(self, group, name or consumer_name(), poll)

    async def ack(self, group: str, event_ids: Iterable[str]) -> int:
        """Ack events by id, from any consumer (HTTP consumers ack this way)."""
        ids = [str(i) for i in event_ids]

        def run(conn: Connection) -> int:
            return window.ack(conn, group, list(window.positions_of(conn, group, ids).values()))

        return await self._write(run)

    async def nack(
        self,
        group: str,
        consumer: str,
        event_ids: Iterable[str],
        action: Action,
        reason: str | BaseException | None = None,
    ) -> int:
        """Nack events ``consumer`` holds, by id (see ``Consumer.nack``)."""
        check_action(action)
        ids, text = [str(i) for i in event_ids], steps.reason_of(reason)

        def run(conn: Connection) -> int:
            positions = list(window.positions_of(conn, group, ids).values())
            return window.nack(conn, group, consumer, positions, action, text)

        return await self._write(run)

    # -- parked events -------------------------------------------------------------------------

    async def parked(
        self, group: str, *, after: int = 0, limit: int = 100
    ) -> builtins.list[Parked]:
        """A page of the parked events with their reasons (``seq`` > ``after``)."""
        return await self._read(lambda c: parking.parked(c, group, after, limit))

    async def iter_parked(self, group: str, *, page: int = 500) -> AsyncIterator[Parked]:
        """Every parked event, read a page at a time."""
        after = 0
        while batch := await self.parked(group, after=after, limit=page):
            for entry in batch:
                yield entry
            after = batch[-1].seq

    async def replay(
        self,
        group: str,
        *,
        requested_by: str,
        up_to: int | None = None,
        page: int = 500,
        progress: Callable[[int, int], None] | None = None,
    ) -> Replay:
        """Hand the parked events (all, or up to parked ``seq`` ``up_to``) out again, a
        page per transaction; recorded with ``requested_by``. The checkpoint stays."""

        async def perform(effect: Any) -> Any:
            if isinstance(effect, steps.Progress):
                if progress is not None:
                    progress(effect.done, effect.total)
                return None
            return await self.perform(effect)

        return await engine.drive(steps.replay(group, requested_by, up_to, page), perform)

    async def replays(self, group: str) -> builtins.list[Replay]:
        return await self._read(lambda c: parking.replays(c, group))


class Delivery:
    """An event handed to a consumer: ack it, or nack it, before ``message_timeout``."""

    def __init__(self, consumer: Consumer, claimed: Claimed, event: RecordedEvent) -> None:
        self.consumer, self.claimed, self.event = consumer, claimed, event

    @property
    def attempt(self) -> int:
        """1 the first time the event is handed out, 2 the second..."""
        return self.claimed.attempt

    @property
    def replayed(self) -> bool:
        return self.claimed.replay > 0

    async def ack(self) -> None:
        await self.consumer.ack([self])

    async def nack(self, action: Action, reason: str | BaseException | None = None) -> None:
        await self.consumer.nack([self], action, reason)

    def __repr__(self) -> str:
        return f"Delivery({self.event.stream}@{self.event.position}, attempt={self.attempt})"


class Consumer:
    """One consumer of a group: an async iterator of ``Delivery``, or ``fetch`` batches,
    or ``run`` a handler. ``close`` (or ``async with``) hands back what it holds."""

    def __init__(self, groups: Groups, group: str, name: str, poll: float) -> None:
        self.groups, self.group, self.name, self.poll = groups, group, name, poll

    async def __aenter__(self) -> Consumer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def fetch(self, limit: int = 100) -> builtins.list[Delivery]:
        """Up to ``limit`` events now (fewer, none, if there are none)."""
        fetched = await engine.drive(steps.fetch(self.group, self.name, limit), self.groups.perform)
        return [Delivery(self, claimed, event) for claimed, event in fetched]

    async def __aiter__(self) -> AsyncIterator[Delivery]:
        while True:
            head = await self.groups.store.last_position()  # before the fetch: see _idle
            batch = await self.fetch()
            if not batch:
                await self._idle(head)
            for delivery in batch:
                yield delivery

    async def _idle(self, head: int) -> None:
        """Wait until an event past ``head`` is appended, or ``poll`` seconds pass.

        ``head`` is read before the fetch, so an event appended during the fetch ends the
        wait at once. Time still wakes the consumer: retries, expired claims and replays
        fall due with it, and other processes' appends may be seen only by polling. The
        wait is on the log's head, not on commits: the groups' own writes are commits
        too, and would have idle consumers wake each other in a loop."""
        await self.groups.store.wait_for_events(head, timeout=self.poll)

    async def ack(self, deliveries: Iterable[Delivery]) -> None:
        positions = [d.claimed.position for d in deliveries]
        await self.groups._write(lambda c: window.ack(c, self.group, positions))

    async def nack(
        self,
        deliveries: Iterable[Delivery],
        action: Action,
        reason: str | BaseException | None = None,
    ) -> None:
        """``retry`` (handed out again after a backoff, parked after ``max_retries``),
        ``park`` or ``skip``, with a reason (redacted before it is stored)."""
        check_action(action)
        positions, text = [d.claimed.position for d in deliveries], steps.reason_of(reason)
        await self.groups._write(
            lambda c: window.nack(c, self.group, self.name, positions, action, text)
        )

    async def run(
        self,
        handler: Callable[[RecordedEvent], Awaitable[None] | None],
        *,
        stop: asyncio.Event | None = None,
        batch: int | None = None,
        policy: engine.Policy = GROUP_POLICY,
        until_idle: bool = False,
    ) -> int:
        """Call ``handler`` on each event handed out until ``stop`` is set (or, with
        ``until_idle``, until none is waiting): acked if it returns, nacked ``retry``
        with its error if it raises. Returns how many were acked."""
        group = await self.groups.get(self.group)
        key, size = key_of(group.settings), batch or group.settings.max_in_flight
        acked = 0
        while stop is None or not stop.is_set():
            head = await self.groups.store.last_position()  # before the fetch: see _idle
            fetched = await engine.drive(
                steps.fetch(self.group, self.name, size), self.groups.perform
            )
            if not fetched:
                if until_idle:
                    break
                await self._idle(head)
                continue
            acked += await engine.drive(
                steps.handle(self.group, self.name, fetched, policy, key),
                lambda effect: self.groups.perform(effect, handler),
            )
        return acked

    async def close(self) -> None:
        """Leave the group: what it holds is handed to others at once."""
        await self.groups._write(lambda c: window.leave(c, self.group, self.name))


def check_name(name: str) -> None:
    if not isinstance(name, str) or not name or len(name) > 200 or not name.isprintable():
        raise ValueError(f"a group name is 1 to 200 printable characters, not {name!r}")


def check_action(action: str) -> None:
    if action not in ACTIONS:
        raise ValueError(f"a nack is one of {', '.join(ACTIONS)}, not {action!r}")
