"""A projection fed from the relay's NATS JetStream stream: workers share the load.

``NatsConsumer`` applies a ``SQLProjection`` from the JetStream stream of ``prefix``
(published by ``eskit.brokers.nats.NatsPublisher``). Start as many workers as you like, on
any machines, with the same ``group``: they share the load and each event is applied once
(``base``: the inbox, stuck partitions, skips).

- **Per-stream order.** The relay puts each stream in one of N partitions (a subject token).
  Each partition has one durable pull consumer (``{group}_p{k}``) shared by every worker,
  with ``max_ack_pending=1``: JetStream hands out a partition's next event only once the
  previous one is acked, so two workers never hold events of one stream at the same time.
  A worker pulls from every partition at once and applies what it holds (at most one event
  per partition) in one transaction: load spreads over partitions, never within one.
- **Failures.** A broker that goes away: workers keep retrying (the client reconnects by
  itself) and the unacked event comes back after ``ack_wait``. A handler that keeps
  failing: its partition alone is stuck until skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

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
from eskit.projections.consumers.base import BrokerWorker, PartitionStatus, stuck_event
from eskit.projections.database import Database
from eskit.projections.engine import Outcome
from eskit.projections.failure import describe, log_failure
from eskit.projections.projection import SQLProjection
from eskit.retry import backoff
from eskit.store.model import RecordedEvent

log = logging.getLogger("eskit.projections.consumers.nats")


class _Delivery(msgspec.Struct):
    partition: int
    msg: Msg
    done: asyncio.Future[None]


class NatsConsumer(BrokerWorker):
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
                    *stuck_event(self.stuck.get(partition)),
                )
            )
        return found
