"""Projections fed from a broker: read models on machines that never open the store.

``JetStreamConsumer`` applies a ``SQLProjection`` from the relay's JetStream stream to a
read-model database (a SQLite file, or PostgreSQL). Start as many workers as you like, on
any machines, with the same ``group``: they share the load and each event is applied once.

- **Per-stream order.** The relay puts each stream in one of N partitions (a subject token).
  Each partition has one durable pull consumer (``{group}_p{k}``) shared by every worker,
  with ``max_ack_pending=1``: JetStream hands out a partition's next event only once the
  previous one is acked, so two workers never hold events of one stream at the same time.
  A worker pulls from every partition at once and applies what it holds (at most one event
  per partition) in one transaction: load spreads over partitions, never within one.
- **Exactly once in the read model.** The transaction that writes the read model also
  records the event id in ``eskit_consumer_inbox``; an event whose id is there already
  (redelivered after a crash, an ack lost, or a repeat the broker stored) changes nothing.
  The ack goes out after the commit; a lost ack only causes a redelivery, which the inbox
  absorbs.
- **Failures.** A broker that goes away: workers keep retrying (the client reconnects by
  itself) and the unacked event comes back after ``ack_wait``. A handler that raises: the
  projection engine (``engine``) applies the batch event by event, retries the failing
  one with backoff, then marks its partition stuck (``consumer_stuck``), holding back only
  that partition: the event stays unacked until an operator skips it (``skip``), and
  ``status()`` shows it with its position, type and error.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Final

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamInfo

from eskit.brokers import message
from eskit.brokers.nats import NATS_ERRORS, connect, partition_subject, partitions_of
from eskit.errors import BrokerUnavailable
from eskit.projections import consumer_stuck
from eskit.projections import state as st
from eskit.projections.consumer_stuck import StuckPartition
from eskit.projections.database import Database
from eskit.projections.engine import Commit, MarkStuck, Outcome, Policy, apply_batch, drive
from eskit.projections.failure import describe, log_failure
from eskit.projections.projection import SQLProjection, apply, check_name, physical_names
from eskit.projections.service import Service
from eskit.projections.sql import Connection, execute, kind_of, lock_setup
from eskit.retry import backoff
from eskit.store.model import RecordedEvent
from eskit.store.sqlite_writer import micros

log = logging.getLogger("eskit.projections.consumer")

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
    durables on the broker too (``JetStreamConsumer.forget``) to replay from the start."""
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


class _Delivery(msgspec.Struct):
    partition: int
    msg: Msg
    done: asyncio.Future[None]


class JetStreamConsumer(BrokerWorker):
    """One worker applying ``projection`` from the JetStream stream of ``prefix``.

    ``group`` names the durables the workers share (default: the projection's name); it
    also keys the inbox. Use ``async with`` or ``start()``/``stop()``.
    """

    def __init__(
        self,
        url: str,
        projection: SQLProjection,
        database: Database,
        *,
        prefix: str = "eskit",
        group: str | None = None,
        ack_wait: float = 30.0,
        fetch_wait: float = 1.0,
        backoff: float = 0.1,
        retries: int = 3,
        stuck_poll: float = 0.5,
    ) -> None:
        super().__init__(
            projection, database, group, backoff=backoff, retries=retries, stuck_poll=stuck_poll
        )
        self.url, self.prefix = url, message.check_prefix(prefix)
        self.ack_wait, self.fetch_wait = ack_wait, fetch_wait
        self.errors: dict[int, str] = {}
        self._client: Client | None = None
        self._subscriptions: dict[int, JetStreamContext.PullSubscription] = {}
        self._queue: asyncio.Queue[_Delivery] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Set up the read model and the partition consumers, then pull in the background.
        Raises ``BrokerUnavailable`` if NATS cannot be reached, ``ValueError`` if the stream
        is not the relay's or the projection's version changed."""
        await self._set_up_read_model()
        await self._look_for_stuck()
        self._client = await connect(self.url)
        try:
            js = self._client.jetstream()
            count = partitions_of(await self._stream_info(js))
            for partition in range(count):
                self._subscriptions[partition] = await self._subscribe(js, partition)
        except BaseException:
            await self._client.close()
            raise
        self._stopping.clear()
        self._tasks = [
            asyncio.create_task(self._pull(p, sub), name=f"{self.group}:p{p}")
            for p, sub in self._subscriptions.items()
        ]
        self._tasks.append(asyncio.create_task(self._apply_loop(), name=f"{self.group}:apply"))

    async def _stream_info(self, js: JetStreamContext) -> StreamInfo:
        try:
            return await js.stream_info(self.prefix)
        except nats.js.errors.NotFoundError:
            raise BrokerUnavailable(
                f"no JetStream stream {self.prefix!r} yet: start the relay first"
            ) from None
        except NATS_ERRORS as error:
            raise BrokerUnavailable(f"JetStream stream {self.prefix!r}: {error!r}") from error

    async def _subscribe(
        self, js: JetStreamContext, partition: int
    ) -> JetStreamContext.PullSubscription:
        subject = partition_subject(self.prefix, partition)
        durable = f"{self.group}_p{partition}"
        config = ConsumerConfig(
            durable_name=durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_ack_pending=1,  # the partition's next event waits for this one's ack: order
            max_deliver=-1,
            filter_subject=subject,
        )
        return await js.pull_subscribe(subject, durable, stream=self.prefix, config=config)

    async def stop(self) -> None:
        """Apply what was pulled, then stop; events still unacked go to other workers."""
        self._stopping.set()
        pullers, applier = self._tasks[:-1], self._tasks[-1:]
        for task in pullers:
            task.cancel()
        await asyncio.gather(*pullers, return_exceptions=True)
        if applier:
            await self._queue.join()
            applier[0].cancel()
            await asyncio.gather(*applier, return_exceptions=True)
        self._tasks, self._subscriptions = [], {}
        if self._client is not None:
            with contextlib.suppress(*NATS_ERRORS):
                await self._client.close()
            self._client = None

    async def forget(self) -> None:
        """Delete this group's durables on the broker (with ``drop_consumer`` on the read
        model: a replay from the stream's start on the next run)."""
        client = await connect(self.url)
        try:
            js = client.jetstream()
            count = partitions_of(await self._stream_info(js))
            for partition in range(count):
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await js.delete_consumer(self.prefix, f"{self.group}_p{partition}")
        finally:
            await client.close()

    # -- pulling and applying ---------------------------------------------------------------

    async def _pull(self, partition: int, sub: JetStreamContext.PullSubscription) -> None:
        """Fetch the partition's next event, hand it over, wait until it is applied."""
        failures = 0
        while not self._stopping.is_set():
            try:
                msgs = await sub.fetch(1, timeout=self.fetch_wait)
                failures = 0
            except nats.errors.TimeoutError:
                continue
            except NATS_ERRORS as error:  # reconnecting, or the server restarting
                failures += 1
                level = logging.WARNING if failures % 50 == 5 else logging.DEBUG
                log.log(level, "consumer %s p%d: %r", self.group, partition, error)
                await asyncio.sleep(backoff(self.backoff, failures, cap=5.0))
                continue
            for msg in msgs:
                done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                await self._queue.put(_Delivery(partition, msg, done))
                await done

    async def _apply_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._apply(batch)
            except Exception as error:  # never let the loop die: unacked events come back later
                log_failure(
                    log,
                    "consumer %s: batch failed; the broker redelivers it",
                    self.group,
                    error=error,
                )
            finally:
                for delivery in batch:
                    if not delivery.done.done():
                        delivery.done.set_result(None)
                    self._queue.task_done()

    async def _apply(self, batch: list[_Delivery]) -> None:
        """Apply a batch with the engine: in one transaction, or event by event (so one
        bad event holds back only its own partition, stuck until skipped)."""
        decoded: list[tuple[_Delivery, RecordedEvent]] = []
        for delivery in batch:
            try:
                decoded.append((delivery, message.decode(delivery.msg.data)))
            except ValueError as error:  # not an event: nothing to retry, keep it out
                log.error("consumer %s: dropped a message: %s", self.group, error)
                await self._settle(delivery.msg.term())
        if any((d.msg.metadata.num_delivered or 1) > 1 for d, _ in decoded):
            await self._look_for_stuck()  # stuck, or skipped, by another worker maybe
        held = [d for d, _ in decoded if d.partition in self.stuck]
        decoded = [(d, e) for d, e in decoded if d.partition not in self.stuck]
        partitions = {event.id: d.partition for d, event in decoded}
        try:
            outcome = await self._apply_events(
                [event for _, event in decoded], lambda event: partitions[event.id]
            )
        except Exception as error:  # the read model or the broker, not a handler
            await self._retry_later([d for d, _ in decoded], error)
            outcome = Outcome(frozenset(partitions.values()))
        for delivery, _ in decoded:
            if delivery.partition in outcome.stuck:
                held.append(delivery)
            else:
                self.errors.pop(delivery.partition, None)
                await self._settle(delivery.msg.ack())
        for delivery in held:  # back when a skip may have come: never applied meanwhile
            stuck = self.stuck.get(delivery.partition)
            if stuck is not None:
                self.errors[delivery.partition] = stuck.error
                await self._settle(delivery.msg.nak(delay=self.stuck_poll))

    async def _retry_later(self, deliveries: list[_Delivery], error: Exception) -> None:
        for delivery in deliveries:
            metadata = delivery.msg.metadata
            attempt = metadata.num_delivered or 1
            text = describe(error)
            self.errors[delivery.partition] = text
            log.warning(
                "consumer %s p%d: event at stream seq %s failed (attempt %d): %s",
                self.group,
                delivery.partition,
                metadata.sequence.stream if metadata.sequence else "?",
                attempt,
                text,
            )
            await self._settle(delivery.msg.nak(delay=backoff(self.backoff, attempt)))

    async def _settle(self, reply: Awaitable[None]) -> None:
        """Send an ack, nak or term; if it is lost, the broker redelivers (and the inbox
        drops the repeat)."""
        try:
            await reply
        except NATS_ERRORS as error:
            log.debug("consumer %s: reply lost (%r); the broker redelivers", self.group, error)

    # -- status -----------------------------------------------------------------------------

    async def status(self) -> list[PartitionStatus]:
        """Per partition: events not yet acked (waiting or in hand) and redeliveries."""
        found = []
        for partition, sub in self._subscriptions.items():
            info = await sub.consumer_info()
            found.append(
                PartitionStatus(
                    partition,
                    (info.num_pending or 0) + (info.num_ack_pending or 0),
                    info.num_redelivered or 0,
                    self.errors.get(partition),
                    partition in self.stuck,
                    *_stuck_event(self.stuck.get(partition)),
                )
            )
        return found


def _stuck_event(stuck: StuckPartition | None) -> tuple[int | None, str | None]:
    return (None, None) if stuck is None else (stuck.position, stuck.event_type)
