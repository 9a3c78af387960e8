"""A relay process that kills itself (SIGKILL) right after NATS acknowledged its
``kill_after``-th batch, before the runner stores the checkpoint for it.

python -m tests.brokers.relay_child STORE_PATH NATS_URL PREFIX KILL_AFTER BATCH_SIZE
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence

import eskit
from eskit.brokers.nats import NatsPublisher
from eskit.relay import Relay, relay_runner
from eskit.store.model import RecordedEvent


class DyingPublisher(NatsPublisher):
    def __init__(self, url: str, prefix: str, kill_after: int) -> None:
        super().__init__(url, prefix, partitions=4)
        self.kill_after, self.batches = kill_after, 0

    async def publish(self, events: Sequence[RecordedEvent]) -> None:
        await super().publish(events)
        self.batches += 1
        if self.batches == self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)


async def main(path: str, url: str, prefix: str, kill_after: int, batch_size: int) -> None:
    async with eskit.open_store(f"sqlite:///{path}") as store:
        relay = Relay(DyingPublisher(url, prefix, kill_after), batch_size=batch_size)
        runner = relay_runner(store, relay)
        await runner.run_until_caught_up()
        await runner.stop()


if __name__ == "__main__":
    store_path, nats_url, name, kill, batch = sys.argv[1:6]
    asyncio.run(main(store_path, nats_url, name, int(kill), int(batch)))
