"""What every broker-fed consumer shares: its read model's tables, the inbox that applies
each event once, and ``BrokerWorker`` (the engine's batches, stuck partitions, skips).

A consumer applies a ``SQLProjection`` from a broker to a read-model database (a SQLite
file, or PostgreSQL) on machines that never open the store; one module per broker:
``nats`` (``NatsConsumer``), ``redis`` (``RedisConsumer``), ``rabbitmq``
(``RabbitConsumer``).

- **Exactly once in the read model.** The transaction that writes the read model also
  records the event id in ``eskit_consumer_inbox``; an event whose id is there already
  (redelivered after a crash, an ack lost, or a repeat the broker stored) changes nothing.
  The ack goes out after the commit; a lost ack only causes a redelivery, which the inbox
  absorbs.
- **A handler that keeps failing.** The projection engine (``engine``) applies the batch
  event by event, retries the failing one with backoff, then marks its partition stuck
  (``stuck``), holding back only that partition: the event stays unacked until an operator
  skips it (``skip``), and ``status()`` shows it with its position, type and error.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Final

import msgspec

from eskit.brokers import message
from eskit.projections import state as st
from eskit.projections.consumers import stuck as consumer_stuck
from eskit.projections.consumers.stuck import StuckPartition
from eskit.projections.database import Database
from eskit.projections.engine import Commit, MarkStuck, Outcome, Policy, apply_batch, drive
from eskit.projections.projection import SQLProjection, apply, check_name, physical_names
from eskit.projections.service import Service
from eskit.projections.sql import Connection, execute, kind_of, lock_setup
from eskit.store.model import RecordedEvent
from eskit.store.sqlite_writer import micros

log = logging.getLogger("eskit.projections.consumers")

SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS eskit_consumers (
        name       TEXT PRIMARY KEY,
        version    BIGINT NOT NULL,   -- the projection version that built the tables
        tables     TEXT   NOT NULL,   -- JSON list of the logical tables (views)
        created_at BIGINT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS eskit_consumer_inbox (
        consumer   TEXT   NOT NULL,
        event_id   TEXT   NOT NULL,
        position   BIGINT NOT NULL,   -- where the event sits in the store's log
        applied_at BIGINT NOT NULL,   -- microseconds since 1970-01-01 UTC
        PRIMARY KEY (consumer, event_id)
    )""",
)
GENERATION: Final = 1
"""Broker-fed read models have one build: tables ``{table}__g1`` behind views."""


class PartitionStatus(msgspec.Struct, frozen=True):
    """One partition as the broker sees it: events waiting, and this worker's last error;
    if it is stuck, the event it is stuck on."""

    partition: int
    pending: int
    redelivered: int
    error: str | None = None
    stuck: bool = False
    error_position: int | None = None
    error_type: str | None = None


def setup(conn: Connection, projection: SQLProjection, now: int) -> None:
    """Create the consumer's tables (and its read model's, behind views) on first run;
    refuse a projection whose version changed (its tables were built by other code)."""
    lock_setup(conn)
    for statement in (*SCHEMA, consumer_stuck.SCHEMA):
        execute(conn, statement)
    row = execute(
        conn, "SELECT version FROM eskit_consumers WHERE name = ?", (projection.name,)
    ).fetchone()
    if row is not None:
        if row[0] != projection.version:
            raise ValueError(
                f"consumer {projection.name}: its tables were built by version {row[0]}, not"
                f" {projection.version}; reset it (drop_consumer) and replay from the broker"
            )
        return
    for table in projection.tables:
        if kind_of(conn, table) is not None:
            raise ValueError(f"consumer {projection.name}: {table!r} already exists")
    st.create_tables(conn, projection, GENERATION)
    st.point_views(conn, projection.tables, GENERATION)
    execute(
        conn,
        "INSERT INTO eskit_consumers (name, version, tables, created_at) VALUES (?, ?, ?, ?)",
        (projection.name, projection.version, json.dumps(list(projection.tables)), now),
    )


def apply_once(
    conn: Connection, consumer: str, projection: SQLProjection, events: Sequence[RecordedEvent]
) -> int:
    """Apply the events whose ids the inbox has not seen, recording them, in the caller's
    transaction; how many were new."""
    at = now()
    fresh = [
        event
        for event in events
        if execute(
            conn,
            "INSERT INTO eskit_consumer_inbox (consumer, event_id, position, applied_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (consumer, str(event.id), event.position, at),
        ).rowcount
        == 1
    ]
    if fresh:
        apply(projection, conn, physical_names(projection.tables, GENERATION), fresh)
    return len(fresh)


def drop_consumer(conn: Connection, projection: SQLProjection) -> None:
    """Forget a consumer's read model and inbox (its tables, views and rows); delete its
    durables on the broker too (``NatsConsumer.forget``) to replay from the start."""
    for table in projection.tables:
        execute(conn, f'DROP VIEW IF EXISTS "{table}"')
    st.drop_tables(conn, projection.tables, GENERATION)
    if kind_of(conn, "eskit_consumers") == "table":
        execute(conn, "DELETE FROM eskit_consumers WHERE name = ?", (projection.name,))
        execute(conn, "DELETE FROM eskit_consumer_inbox WHERE consumer = ?", (projection.name,))


def now() -> int:
    return micros(dt.datetime.now(dt.UTC))


class BrokerWorker(Service):
    """What the broker-fed workers share: the projection and the read model they apply it
    to, their counters, the transaction that applies a batch once, and pauses that a stop
    cuts short."""

    def __init__(
        self,
        projection: SQLProjection,
        database: Database,
        group: str | None,
        *,
        backoff: float = 0.1,
        retries: int = 3,
        stuck_poll: float = 0.5,
    ) -> None:
        if not isinstance(projection, SQLProjection):
            raise ValueError(f"a {type(self).__name__} applies a SQLProjection, got {projection!r}")
        self.projection, self.database = projection, database
        self.group = check_name(group or projection.name, "consumer group")
        """Names the broker-side consumer the workers share, and keys the inbox."""
        self.applied = 0
        """Events this worker applied (repeats it dropped not counted)."""
        self.repeats = 0
        """Deliveries whose event the read model already had."""
        self.backoff, self.retries, self.stuck_poll = backoff, retries, stuck_poll
        self.stuck: dict[int, StuckPartition] = {}
        """The group's partitions stuck on an event, as last read from the read model."""
        self._stopping = asyncio.Event()

    async def skip(self, reason: str) -> list[st.Skip]:
        """Step every stuck partition of the group (whichever worker got it stuck) over
        its event, recording who/why in ``reason``; the partitions go on from there."""
        group = self.group
        records = await self.database.write(lambda c: consumer_stuck.skip(c, group, reason, now()))
        await self._look_for_stuck()
        return records

    async def status(self) -> list[PartitionStatus]:
        """Per partition (one, ``0``, where the broker has none): events not yet acked,
        redeliveries, the last error, and the event it is stuck on, if it is."""
        raise NotImplementedError

    async def _look_for_stuck(self) -> None:
        """Read which partitions are stuck (by any worker of the group, or skipped)."""
        group = self.group
        self.stuck = await self.database.read(lambda c: consumer_stuck.stuck(c, group))

    async def _apply_events(
        self, events: Sequence[RecordedEvent], partition: Callable[[RecordedEvent], int]
    ) -> Outcome:
        """Apply ``events`` with the engine: as a batch, or event by event with retries;
        an event that still fails gets its partition stuck. The partitions now stuck."""
        group = self.group

        async def perform(effect: object) -> None:
            if isinstance(effect, Commit) and effect.events:
                await self._commit(effect.events)
            elif isinstance(effect, MarkStuck):
                key, event, text = partition(effect.event), effect.event, effect.text
                row = await self.database.write(
                    lambda c: consumer_stuck.mark_stuck(c, group, key, event, text, now())
                )
                self.stuck[key] = row
                log.error(
                    "consumer %s: partition %d stuck at position %d (event %s, %s): %s",
                    group,
                    key,
                    event.position,
                    event.id,
                    event.type,
                    text,
                )

        policy = Policy(self.retries, self.backoff)
        position = events[-1].position if events else 0
        steps = apply_batch(group, events, position, policy, key=partition)
        return await drive(steps, perform)

    async def _set_up_read_model(self) -> None:
        projection = self.projection
        await self.database.write(lambda c: setup(c, projection, now()))

    async def _commit(self, events: Sequence[RecordedEvent]) -> None:
        """Apply the events the inbox has not seen, recording their ids, in one
        transaction of the read model."""
        projection, group = self.projection, self.group
        fresh = await self.database.write(lambda c: apply_once(c, group, projection, events))
        self.applied += fresh
        self.repeats += len(events) - fresh

    def _decode(self, bodies: Iterable[tuple[object, bytes | None]]) -> list[RecordedEvent]:
        """The events of (message id, body) pairs; a body that is not an event is logged
        and dropped: retrying it cannot help."""
        events = []
        for message_id, body in bodies:
            try:
                if body is None:
                    raise ValueError("no body")
                events.append(message.decode(body))
            except ValueError as error:
                log.error("consumer %s: dropped message %r: %s", self.group, message_id, error)
        return events

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()


def stuck_event(stuck: StuckPartition | None) -> tuple[int | None, str | None]:
    """The position and type of the event a partition is stuck on, if it is."""
    return (None, None) if stuck is None else (stuck.position, stuck.event_type)
