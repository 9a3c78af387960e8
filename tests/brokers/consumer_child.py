"""A consumer worker process (killed by the tests): applies ``StreamLog`` from JetStream.

python -m tests.brokers.consumer_child NATS_URL PREFIX READ_DB
"""

from __future__ import annotations

import asyncio
import sys

from eskit.projections import SQLiteDatabase
from eskit.projections.consumers.nats import NatsConsumer
from tests.brokers.models import StreamLog


async def main(url: str, prefix: str, path: str) -> None:
    database = SQLiteDatabase(path)
    worker = NatsConsumer(url, StreamLog(), database, prefix=prefix, ack_wait=1.0)
    async with worker:
        print("started", flush=True)
        await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
