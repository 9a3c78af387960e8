"""The conformance suite, once per backend: a backend is done when all of it passes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import eskit
from eskit.testing import EventStoreConformance
from eskit.testing.blocking_face import through_blocking_face
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


class TestMemoryBlockingFace(EventStoreConformance):
    """The blocking face (``eskit.sync``) keeps the contract too, called from many threads."""

    def make_store(self, tmp_path: Path, **options: Any) -> eskit.EventStore:
        return through_blocking_face(eskit.open_store("memory://", **options))


class TestSQLiteBlockingFace(EventStoreConformance):
    def make_store(self, tmp_path: Path, **options: Any) -> eskit.EventStore:
        return through_blocking_face(eskit.open_store(f"sqlite:///{tmp_path}/events.db", **options))


class TestPostgresBlockingFace(EventStoreConformance):
    def make_store(self, tmp_path: Path, **options: Any) -> eskit.EventStore:
        return through_blocking_face(eskit.open_store(postgres.store_url(), **options))
