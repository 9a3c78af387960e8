"""The conformance suite, once per backend: a backend is done when all of it passes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import eskit
from eskit.testing import EventStoreConformance
from tests import postgres


class TestMemoryStore(EventStoreConformance):
    def make_store(self, tmp_path: Path, **options: Any) -> eskit.EventStore:
        return eskit.open_store("memory://", **options)


class TestSQLiteStore(EventStoreConformance):
    def make_store(self, tmp_path: Path, **options: Any) -> eskit.EventStore:
        return eskit.open_store(f"sqlite:///{tmp_path}/events.db", **options)


class TestPostgresStore(EventStoreConformance):
    def make_store(self, tmp_path: Path, **options: Any) -> eskit.EventStore:
        return eskit.open_store(postgres.store_url(), **options)
