"""The relay: follows the store (the event log is the outbox) and publishes every event, in
position order, to a broker.

It is a ``Projection`` run by the ordinary ``ProjectionRunner``, so it gets catch-up then
live following, batching, a checkpoint in ``eskit_projections`` (``eskit projections
status`` shows it with its lag) and the runner's backoff: a broker that is down raises
``BrokerUnavailable``, which the runner retries forever without ever marking an event stuck.
The relay only reads the log, so appends never wait for it or for the broker.

A batch is published pipelined (everything sent, then every ack awaited) and the runner
moves the checkpoint only after the whole batch is acknowledged. After any failure the
relay asks the broker for the newest event it holds and skips what the broker already has,
so a batch that half-succeeded, or a relay killed between publishing and checkpointing,
resends nothing to NATS or Redis; a broker that cannot tell (RabbitMQ) gets the repeats,
and consumers drop them by event id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eskit.brokers.publisher import Publisher
from eskit.errors import BrokerUnavailable
from eskit.projections.projection import Projection, check_name
from eskit.projections.runner import ProjectionRunner, ProjectionStatus
from eskit.store.base import EventStore
from eskit.store.model import RecordedEvent


class Relay(Projection):
    """Publishes every event of the store through ``publisher``.

    ``name`` keys its checkpoint (default ``relay_{broker kind}_{prefix}``): each relay of
    a store needs its own.
    """

    every_type = True

    def __init__(self, publisher: Publisher, name: str | None = None, batch_size: int = 500):
        # The runner keys checkpoints by ``name``; a relay's depends on its broker.
        default = f"relay_{publisher.kind}_{publisher.prefix}"
        self.name = check_name(name or default, "relay name")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.batch_size = batch_size
        self.publisher = publisher
        self.published: int | None = None
        """Position of the newest event the broker holds, while the relay knows it."""
        self.sent = 0
        """Events published by this relay since it started."""
        self.error: str | None = None
        """Why the last attempt failed, until one succeeds (the broker is down...)."""

    async def handle_batch(self, events: Sequence[RecordedEvent]) -> None:
        """Publish the events the broker does not have yet; return once all are acked."""
        try:
            if self.published is None:
                self.published = await self._published()
            todo = [event for event in events if event.position > self.published]
            await self.publisher.publish(todo)
        except Exception as error:
            self.published = None  # what got through is read from the broker next time
            self.error = str(error) or type(error).__name__
            raise
        self.error = None
        if todo:
            self.published = todo[-1].position
            self.sent += len(todo)

    async def _published(self) -> int:
        try:
            return await self.publisher.published() or 0
        except ValueError as error:  # the broker's setup changed: not an event's fault
            raise BrokerUnavailable(str(error)) from error

    async def handle(self, event: RecordedEvent) -> None:
        await self.handle_batch([event])

    async def reset(self) -> None:
        """A reset replays the log from the start; the broker keeps what it has, so only
        events it does not hold are sent again (purge the broker's stream to resend all)."""
        self.published = None


def relay_runner(store: EventStore, relay: Relay, **options: Any) -> ProjectionRunner:
    """A runner for the relay alone (options as ``ProjectionRunner``'s)."""
    return ProjectionRunner(store, [relay], **options)


async def relay_status(runner: ProjectionRunner, relay: Relay) -> ProjectionStatus:
    """The relay's checkpoint, the store's head and the lag between them."""
    head = await runner.store.last_position()
    return runner.worker(relay.name).status(head)
