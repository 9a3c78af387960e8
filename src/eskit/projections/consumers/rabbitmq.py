"""A projection fed from the relay's RabbitMQ exchange (published by
``eskit.brokers.rabbitmq.RabbitPublisher``), for deployments that run RabbitMQ.

The workers of one group share one durable queue, ``{prefix}.{group}``, bound to the
``{prefix}`` topic exchange (every event, or one category's). The queue is declared with
RabbitMQ's **single active consumer**: one worker receives, the others wait as standbys,
and RabbitMQ hands the queue to a standby by itself when the active worker's channel goes
away, with the messages it had not acked back at the head of the queue. That keeps each
stream's order with no lease of our own. A worker takes up to ``batch_size`` messages,
applies them with their event ids recorded in the read model's inbox in one transaction
(``base.apply_once``), then acks them: a redelivered or repeated message changes
nothing.

Declare the queue (start a worker once) before the relay publishes: an exchange drops
messages no queue is bound to. Limits, plainly: no load sharing (use JetStream partitions
for that). A handler that keeps failing on an event (after the engine's retries) gets the
group stuck (``stuck``, partition 0): every stream waits, the batch stays unacked
in the worker's hands, and ``stuck`` and ``error`` say where and why, until an operator
skips it (``skip``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

import aio_pika
import aio_pika.abc

from eskit.brokers import message
from eskit.brokers.publisher import safe_address
from eskit.brokers.rabbitmq import ERRORS
from eskit.errors import BrokerUnavailable
from eskit.projections.consumers.base import BrokerWorker, PartitionStatus, stuck_event
from eskit.projections.database import Database
from eskit.projections.failure import describe
from eskit.projections.projection import SQLProjection, check_name
from eskit.retry import backoff

log = logging.getLogger("eskit.projections.consumers.rabbitmq")
SINGLE_ACTIVE: Final = {"x-single-active-consumer": True}

Message = aio_pika.abc.AbstractIncomingMessage


class RabbitConsumer(BrokerWorker):
    """One worker applying ``projection`` from the ``{prefix}`` exchange; start several with
    the same ``group`` for hot standbys. Use ``async with`` or ``start()``/``stop()``."""

    def __init__(
        self,
        url: str,
        projection: SQLProjection,
        database: Database,
        *,
        prefix: str = "eskit",
        group: str | None = None,
        category: str | None = None,
        batch_size: int = 100,
        linger: float = 0.05,
        backoff: float = 0.1,
        retries: int = 3,
        stuck_poll: float = 0.5,
    ) -> None:
        super().__init__(
            projection, database, group, backoff=backoff, retries=retries, stuck_poll=stuck_poll
        )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.url, self.prefix = url, message.check_prefix(prefix)
        self.queue_name = f"{self.prefix}.{self.group}"
        self.binding = "#"  # every event, or one category's, escaped as the relay does
        if category is not None:
            self.binding = f"{message.token(check_name(category, 'category'))}.#"
        self.batch_size, self.linger = batch_size, linger
        self.error: str | None = None
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._declared: aio_pika.abc.AbstractQueue | None = None
        self._in_hand: list[Message] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Set up the read model, declare and bind the queue, then follow in the background.
        Raises ``BrokerUnavailable`` if RabbitMQ cannot be reached."""
        await self._set_up_read_model()
        await self._look_for_stuck()
        queue = await self._queue()
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(queue), name=f"{self.group}:rabbitmq")

    async def stop(self) -> None:
        """Finish the batch in hand, stop, and close the connection (a standby takes over)."""
        self._stopping.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        connection, self._connection, self._declared = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(*ERRORS):
                await connection.close()

    async def _queue(self) -> aio_pika.abc.AbstractQueue:
        """The group's queue on a robust connection (it reconnects and resumes consuming
        by itself), at most ``batch_size`` unacked messages in this worker's hands."""
        try:
            self._connection = await aio_pika.connect_robust(self.url, timeout=10)
            channel = await self._connection.channel()
            await channel.set_qos(prefetch_count=self.batch_size)
            exchange = await channel.declare_exchange(
                self.prefix, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(
                self.queue_name, durable=True, arguments=SINGLE_ACTIVE
            )
            await queue.bind(exchange, self.binding)
            self._declared = queue
        except ERRORS as error:
            await self.stop()
            raise BrokerUnavailable(
                f"RabbitMQ {safe_address(self.url)} queue {self.queue_name}: {error!r}"
            ) from error
        return queue

    async def _run(self, queue: aio_pika.abc.AbstractQueue) -> None:
        """Apply batch after batch until stopped. The consumer is not cancelled at the end:
        ``stop`` closes the connection, and RabbitMQ puts what this worker had not acked
        back at the head of the queue before it hands the queue to a standby (a cancel
        first could let the standby receive later messages before those come back)."""
        inbox: asyncio.Queue[Message] = asyncio.Queue()
        await queue.consume(inbox.put)
        failures = 0
        held: list[Message] = []
        while not self._stopping.is_set():
            if self.stuck:  # until an operator skips the event: take nothing, hold the batch
                await self._pause(self.stuck_poll)
                await self._look_for_stuck()
                continue
            batch, held = held or await self._take(inbox), []
            self._in_hand = batch
            if not batch:
                continue
            try:
                if any(incoming.redelivered for incoming in batch):
                    await self._look_for_stuck()  # stuck by the worker before this one?
                    if self.stuck:
                        held = batch
                        continue
                if not await self._apply(batch):
                    held = batch  # applied again after the skip: the inbox drops repeats
                    continue
                await batch[-1].ack(multiple=True)
                self._in_hand = []
                failures, self.error = 0, None
            except Exception as error:  # the read model failing, RabbitMQ away: again
                failures += 1
                self.error = describe(error)
                log.warning("consumer %s: %s (retrying)", self.group, self.error)
                with contextlib.suppress(*ERRORS):
                    await batch[-1].nack(multiple=True, requeue=True)
                await self._pause(backoff(self.backoff, failures))

    async def _take(self, inbox: asyncio.Queue[Message]) -> list[Message]:
        """The messages delivered so far, up to ``batch_size``: waits for the first (up to
        a second, to notice a stop), then ``linger`` seconds for more."""
        batch: list[Message] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                batch.append(await inbox.get())
            async with asyncio.timeout(self.linger):
                while len(batch) < self.batch_size:
                    batch.append(await inbox.get())
        while len(batch) < self.batch_size and not inbox.empty():
            batch.append(inbox.get_nowait())
        return batch

    async def _apply(self, batch: list[Message]) -> bool:
        """Apply the batch with the engine; False if an event got stuck."""
        events = self._decode((incoming.message_id, incoming.body) for incoming in batch)
        if (await self._apply_events(events, lambda event: 0)).stuck:
            stuck = self.stuck[0]
            self.error = f"stuck at position {stuck.position} ({stuck.event_type}): {stuck.error}"
            return False
        return True

    async def status(self) -> list[PartitionStatus]:
        """The group as one partition (``0``): messages waiting in the queue or in this
        worker's hands, those redelivered among the latter, and where it is stuck."""
        if self._declared is None:
            raise BrokerUnavailable(f"consumer {self.group} is not started")
        declared = await self._declared.declare()  # declared again: the counts of now
        waiting = declared.message_count or 0
        in_hand = self._in_hand
        redelivered = sum(1 for incoming in in_hand if incoming.redelivered)
        stuck = self.stuck.get(0)
        error = self.error if stuck is None else stuck.error
        return [
            PartitionStatus(
                0,
                waiting + len(in_hand),
                redelivered,
                error,
                stuck is not None,
                *stuck_event(stuck),
            )
        ]
