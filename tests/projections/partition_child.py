"""A partitioned worker in a process of its own, for the SIGKILL and SIGSTOP tests.

Run from the repository's root: ``python -m tests.projections.partition_child URL LEASE
MARKER STRICT``. It runs ``PartitionedWorker(Ordered)`` with 8 partitions and prints a JSON
line every 50 ms: the partitions it holds, the events it applied and the batches refused
because it had lost a lease. A ``Pause`` event makes its handler touch the file ``MARKER``
and then sleep for half a second inside the batch's transaction, so a test can stop the
process at a moment when it is surely in the middle of a batch. SIGTERM stops it gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import signal
import sys
import time

import eskit
from eskit.projections import PartitionedWorker, ReadModelConnection, handles
from eskit.store.model import RecordedEvent
from tests.projections.partitioning import Ordered

PARTITIONS = 8


class Pausing(Ordered):
    def __init__(self, marker: pathlib.Path, strict: bool) -> None:
        super().__init__(strict=strict)
        self.marker = marker

    @handles("Pause")
    def pause(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        self.marker.touch()
        time.sleep(0.5)


async def main(url: str, lease: float, marker: str, strict: bool) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    projection = Pausing(pathlib.Path(marker), strict)
    async with (
        eskit.open_store(url) as store,
        PartitionedWorker(store, projection, partitions=PARTITIONS, lease=lease) as worker,
    ):
        while not stop.is_set():
            line = {"held": sorted(worker.held), "applied": worker.applied}
            line["rejected"] = worker.rejected
            print(json.dumps(line), flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)


if __name__ == "__main__":
    url, lease, marker, strict = sys.argv[1:5]
    asyncio.run(main(url, float(lease), marker, strict == "strict"))
