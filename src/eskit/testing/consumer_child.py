"""A consumer worker in a process of its own, for the broker suite to kill (SIGKILL):
``python -m eskit.testing.consumer_child MODULE:SUITE URL PREFIX READ_DB``. It makes the
worker as the suite's subclass says (``SlowerStreamLog``, so it is caught mid-batch), prints
``started`` and applies until killed."""

from __future__ import annotations

import asyncio
import importlib
import sys

from eskit.projections.database import SQLiteDatabase
from eskit.testing.brokers import BrokerConsumerConformance, SlowerStreamLog


async def main(suite_name: str, url: str, prefix: str, path: str) -> None:
    module, _, name = suite_name.partition(":")
    suite = getattr(importlib.import_module(module), name)()
    assert isinstance(suite, BrokerConsumerConformance)
    worker = suite.worker(prefix, SlowerStreamLog(), SQLiteDatabase(path), url)
    async with worker:
        print("started", flush=True)
        await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
