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
  event is negatively acked with a growing delay and retried, holding back only its
  partition; ``status()`` shows the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Iterable, Sequence
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
from eskit.errors import BrokerUnavailable, StoreClosed, Unavailable
from eskit.projections import state as st
from eskit.projections.database import Database
from eskit.projections.failure import describe, log_failure
from eskit.projections.projection import SQLProjection, apply, check_name, physical_names
from eskit.projections.service import Service
from eskit.projections.sql import Connection, execute, kind_of, lock_setup
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
    """One partition as the broker sees it: events waiting, and this worker's last error."""

    partition: int
    pending: int
    redelivered: int
    error: str | None = None


def setup(conn: Connection, projection: SQLProjection, now: int) -> None:
    """Create the consumer's tables (and its read model's, behind views) on first run;
    refuse a projection whose version changed (its tables were built by other code)."""
    lock_setup(conn)
    for statement in SCHEMA:
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

    def __init__(self, projection: SQLProjection, database: Database, group: str | None) -> None:
        if not isinstance(projection, SQLProjection):
            raise ValueError(f"a {type(self).__name__} applies a SQLProjection, got {projection!r}")
        self.projection, self.database = projection, database
        self.group = check_name(group or projection.name, "consumer group")
        """Names the broker-side consumer the workers share, and keys the inbox."""
        self.applied = 0
        """Events this worker applied (repeats it dropped not counted)."""
        self.repeats = 0
        """Deliveries whose event the read model already had."""
        self._stopping = asyncio.Event()

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
    ) -> None:
        super().__init__(projection, database, group)
        self.url, self.prefix = url, message.check_prefix(prefix)
        self.ack_wait, self.fetch_wait, self.backoff = ack_wait, fetch_wait, backoff
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
                await asyncio.sleep(min(5.0, self.backoff * 2**failures))
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
        """Apply a batch in one transaction; on failure, event by event (so one bad event
        holds back only its own partition)."""
        decoded: list[tuple[_Delivery, RecordedEvent]] = []
        for delivery in batch:
            try:
                decoded.append((delivery, message.decode(delivery.msg.data)))
            except ValueError as error:  # not an event: nothing to retry, keep it out
                log.error("consumer %s: dropped a message: %s", self.group, error)
                await self._settle(delivery.msg.term())
        if not decoded:
            return
        try:
            await self._commit([event for _, event in decoded])
        except Exception as error:
            if len(decoded) > 1 and not isinstance(error, Unavailable | StoreClosed):
                for one in decoded:
                    await self._apply_one(*one)
                return
            await self._retry_later([d for d, _ in decoded], error)
            return
        for delivery, _ in decoded:
            self.errors.pop(delivery.partition, None)
            await self._settle(delivery.msg.ack())

    async def _apply_one(self, delivery: _Delivery, event: RecordedEvent) -> None:
        try:
            await self._commit([event])
        except Exception as error:
            await self._retry_later([delivery], error)
            return
        self.errors.pop(delivery.partition, None)
        await self._settle(delivery.msg.ack())

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
            await self._settle(delivery.msg.nak(delay=min(30.0, self.backoff * 2**attempt)))

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
                )
            )
        return found
