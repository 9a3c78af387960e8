"""Consumer groups on the blocking face (``eskit.sync.Groups``): the same procedures
(``steps``) and tables as ``eskit.subscriptions.Groups``, run in the caller's thread."""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from eskit.projections import engine
from eskit.projections.blocking import blocking_database
from eskit.projections.database import BlockingDatabase, Database, database_for
from eskit.projections.sql import Connection
from eskit.store.blocking import SyncStore
from eskit.store.model import RecordedEvent
from eskit.subscriptions import parking, steps, tables, window
from eskit.subscriptions.groups import (
    GROUP_POLICY,
    POLL,
    check_action,
    check_name,
    consumer_name,
    key_of,
    shared_database,
    start_position,
)
from eskit.subscriptions.model import (
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


class Groups:
    """``eskit.subscriptions.Groups``, blocking: safe to share between threads."""

    def __init__(
        self, store: SyncStore, database: Database | BlockingDatabase | None = None
    ) -> None:
        self.store = store
        inner = store._store
        self.database = blocking_database(
            database or shared_database(inner, lambda: database_for(inner))
        )
        self._ready = False

    def _write(self, run: Callable[[Connection], T]) -> T:
        if not self._ready:
            self.database.write(tables.ensure_schema)
            self._ready = True
        return self.database.write(run)

    def _read(self, run: Callable[[Connection], T]) -> T:
        return self.database.read(run)

    def perform(self, effect: Any, handler: Callable[[RecordedEvent], Any] | None = None) -> Any:
        if isinstance(effect, steps.Write):
            return self._write(effect.run)
        if isinstance(effect, steps.Read):
            return self._read(effect.run)
        if isinstance(effect, steps.ReadLog):
            return self.store.read_page(effect.after, effect.limit, category=effect.category)
        if isinstance(effect, steps.Handle):
            assert handler is not None
            return handler(effect.event)
        raise TypeError(f"unexpected effect {effect!r}")

    def create(
        self, name: str, source: Source, *, start: Start = START, settings: Settings | None = None
    ) -> Group:
        check_name(name)
        position = start_position(start, self.store.last_position() if start == END else 0)
        self._write(lambda c: tables.create(c, name, source, settings or Settings(), position))
        return self.get(name)

    def update(self, name: str, settings: Settings) -> Group:
        self._write(lambda c: tables.update(c, name, settings))
        return self.get(name)

    def delete(self, name: str) -> None:
        self._write(lambda c: tables.delete(c, name))

    def get(self, name: str) -> Group:
        return self._read(lambda c: tables.load(c, name))

    def list(self) -> list[Group]:
        return self._read(lambda c: [tables.load(c, n) for n in tables.names(c)])

    def consumer(self, group: str, name: str | None = None, *, poll: float = POLL) -> Consumer:
        return Consumer(self, group, name or consumer_name(), poll)

    def ack(self, group: str, event_ids: Iterable[str]) -> int:
        ids = [str(i) for i in event_ids]
        return self._write(
            lambda c: window.ack(c, group, list(window.positions_of(c, group, ids).values()))
        )

    def nack(
        self,
        group: str,
        consumer: str,
        event_ids: Iterable[str],
        action: Action,
        reason: str | BaseException | None = None,
    ) -> int:
        check_action(action)
        ids, text = [str(i) for i in event_ids], steps.reason_of(reason)

        def run(conn: Connection) -> int:
            positions = list(window.positions_of(conn, group, ids).values())
            return window.nack(conn, group, consumer, positions, action, text)

        return self._write(run)

    def parked(self, group: str, *, after: int = 0, limit: int = 100) -> builtins.list[Parked]:
        return self._read(lambda c: parking.parked(c, group, after, limit))

    def iter_parked(self, group: str, *, page: int = 500) -> Iterator[Parked]:
        after = 0
        while batch := self.parked(group, after=after, limit=page):
            yield from batch
            after = batch[-1].seq

    def replay(
        self,
        group: str,
        *,
        requested_by: str,
        up_to: int | None = None,
        page: int = 500,
        progress: Callable[[int, int], None] | None = None,
    ) -> Replay:
        def perform(effect: Any) -> Any:
            if isinstance(effect, steps.Progress):
                if progress is not None:
                    progress(effect.done, effect.total)
                return None
            return self.perform(effect)

        return engine.drive_blocking(steps.replay(group, requested_by, up_to, page), perform)

    def replays(self, group: str) -> builtins.list[Replay]:
        return self._read(lambda c: parking.replays(c, group))


class Delivery:
    """An event handed to a blocking consumer: ack or nack it before ``message_timeout``."""

    def __init__(self, consumer: Consumer, claimed: Claimed, event: RecordedEvent) -> None:
        self.consumer, self.claimed, self.event = consumer, claimed, event

    @property
    def attempt(self) -> int:
        return self.claimed.attempt

    @property
    def replayed(self) -> bool:
        return self.claimed.replay > 0

    def ack(self) -> None:
        self.consumer.ack([self])

    def nack(self, action: Action, reason: str | BaseException | None = None) -> None:
        self.consumer.nack([self], action, reason)


class Consumer:
    """A blocking consumer: iterate it, ``fetch`` batches, or ``run`` a handler."""

    def __init__(self, groups: Groups, group: str, name: str, poll: float) -> None:
        self.groups, self.group, self.name, self.poll = groups, group, name, poll

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def fetch(self, limit: int = 100) -> builtins.list[Delivery]:
        fetched = engine.drive_blocking(
            steps.fetch(self.group, self.name, limit), self.groups.perform
        )
        return [Delivery(self, claimed, event) for claimed, event in fetched]

    def __iter__(self) -> Iterator[Delivery]:
        while True:
            head = self.groups.store.last_position()  # before the fetch: see _idle
            batch = self.fetch()
            if not batch:
                self._idle(head)
            yield from batch

    def _idle(self, head: int) -> None:
        """``eskit.subscriptions.Consumer._idle``, blocking: wait until an event past
        ``head`` (read before the fetch) is appended, or ``poll`` seconds pass."""
        self.groups.store.wait_for_events(head, timeout=self.poll)

    def ack(self, deliveries: Iterable[Delivery]) -> None:
        positions = [d.claimed.position for d in deliveries]
        self.groups._write(lambda c: window.ack(c, self.group, positions))

    def nack(
        self,
        deliveries: Iterable[Delivery],
        action: Action,
        reason: str | BaseException | None = None,
    ) -> None:
        check_action(action)
        positions, text = [d.claimed.position for d in deliveries], steps.reason_of(reason)
        self.groups._write(lambda c: window.nack(c, self.group, self.name, positions, action, text))

    def run(
        self,
        handler: Callable[[RecordedEvent], None],
        *,
        stop: threading.Event | None = None,
        batch: int | None = None,
        policy: engine.Policy = GROUP_POLICY,
        until_idle: bool = False,
    ) -> int:
        """``eskit.subscriptions.Consumer.run``, blocking."""
        group = self.groups.get(self.group)
        key, size = key_of(group.settings), batch or group.settings.max_in_flight
        acked = 0
        while stop is None or not stop.is_set():
            head = self.groups.store.last_position()  # before the fetch: see _idle
            fetched = engine.drive_blocking(
                steps.fetch(self.group, self.name, size), self.groups.perform
            )
            if not fetched:
                if until_idle:
                    break
                self._idle(head)
                continue
            acked += engine.drive_blocking(
                steps.handle(self.group, self.name, fetched, policy, key),
                lambda effect: self.groups.perform(effect, handler),
            )
        return acked

    def close(self) -> None:
        self.groups._write(lambda c: window.leave(c, self.group, self.name))
