"""Random operation sequences: each backend must answer exactly like a plain model."""

from __future__ import annotations

import eskit
from eskit.testing import store_model_test
from tests import postgres

TestMemoryModel = store_model_test(
    lambda directory: eskit.open_store("memory://"), fifo_appends=True
).TestCase

# synchronous=NORMAL: the same code paths without an fsync per step (durability is not
# what this test is about, and it keeps a few thousand appends fast).
TestSQLiteModel = store_model_test(
    lambda directory: eskit.open_store(f"sqlite:///{directory}/events.db?synchronous=NORMAL"),
    fifo_appends=True,
).TestCase

TestPostgresModel = store_model_test(
    lambda directory: eskit.open_store(postgres.store_url()), fifo_appends=True
).TestCase
