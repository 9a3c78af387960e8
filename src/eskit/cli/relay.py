"""``eskit relay``: publish the store's events to a broker and keep following the log, with
a live status line (checkpoint, head, lag, rate, broker state)."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Annotated

import typer
from rich.live import Live
from rich.text import Text

from eskit.brokers.publisher import publisher_for
from eskit.cli.common import Url, err, opened, out, run
from eskit.errors import BrokerUnavailable
from eskit.projections import ProjectionRunner, ProjectionStatus
from eskit.relay import Relay, relay_runner, relay_status

Broker = Annotated[
    str,
    typer.Option(
        "--broker",
        help="nats://host:4222, redis://host:6379 or amqp://user:password@host:5672/",
        show_default=False,
    ),
]


def relay(
    url: Url,
    broker: Broker,
    prefix: Annotated[
        str, typer.Option(help="NATS stream, Redis key prefix or RabbitMQ exchange.")
    ] = "eskit",
    partitions: Annotated[
        int, typer.Option(help="NATS: partitions consumers split streams into (fixed).")
    ] = 16,
    name: Annotated[
        str | None,
        typer.Option(help="Checkpoint name (default: relay_<broker kind>_<prefix>)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Events per pipelined batch.")] = 500,
    until_caught_up: Annotated[
        bool, typer.Option(help="Publish up to the current head once, then exit.")
    ] = False,
) -> None:
    """Publish every event, in order, to a broker; then follow the log until Ctrl-C.

    The checkpoint lives beside the store's projections (eskit projections status shows
    it); a broker that is down is retried with backoff, appends never wait for it.

    Example: eskit relay sqlite:///./events.db --broker nats://127.0.0.1:4222
    """
    status = run(_relay(url, broker, prefix, partitions, name, batch_size, until_caught_up))
    out().print(Text(_line(status, None), style="" if status.lag == 0 else "yellow"))


async def _relay(
    url: str,
    broker: str,
    prefix: str,
    partitions: int,
    name: str | None,
    batch_size: int,
    until_caught_up: bool,
) -> ProjectionStatus:
    publisher = publisher_for(broker, prefix, partitions)
    try:
        relay = Relay(publisher, name, batch_size)
        try:
            await publisher.published()  # a wrong prefix or partition count: one red line
        except BrokerUnavailable as error:
            err().print(Text(f"warning: {error}; retrying", style="yellow"), soft_wrap=True)
        async with opened(url, create=False) as store:
            runner = relay_runner(store, relay)
            try:
                if until_caught_up:
                    await runner.run_until_caught_up()
                else:
                    await _follow(runner, relay)
            finally:
                await runner.stop()
            return await relay_status(runner, relay)
    finally:
        await publisher.close()


async def _follow(runner: ProjectionRunner, relay: Relay) -> None:
    """Run until SIGINT or SIGTERM, redrawing the status line twice a second."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    console = err()
    console.print(
        Text(f"relaying to {relay.publisher.address}; Ctrl-C or SIGTERM stops"), soft_wrap=True
    )
    rate = _Rate()
    try:
        await runner.start()
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while not stopping.is_set():
                status = await relay_status(runner, relay)
                live.update(Text(_line(status, relay, rate.of(relay.sent)), style=_style(relay)))
                await _wait(stopping, 0.5)
        if not console.is_terminal:
            console.line()  # the last status line was written without an end
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _line(status: ProjectionStatus, relay: Relay | None, rate: float | None = None) -> str:
    text = f"{status.name}: position {status.position:,} of {status.head:,}, lag {status.lag:,}"
    if relay is not None:
        text += f", sent {relay.sent:,}"
        if rate is not None:
            text += f" ({rate:,.0f}/s)"
        text += f", broker {'unavailable: ' + relay.error if relay.error else 'ok'}"
    return text


def _style(relay: Relay) -> str:
    return "yellow" if relay.error else "green"


class _Rate:
    """Events per second over the last few seconds."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []

    def of(self, count: int) -> float | None:
        now = time.monotonic()
        self.samples = [s for s in self.samples if now - s[0] <= 5.0] + [(now, count)]
        (first, start), (last, end) = self.samples[0], self.samples[-1]
        return (end - start) / (last - first) if last > first else None


async def _wait(event: asyncio.Event, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        pass
