"""The consumer group conformance suite, once per backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import eskit
from eskit.testing.groups import GroupConformance
from tests import postgres


class TestMemoryGroups(GroupConformance):
    def make_store(self, tmp_path: Path, **options: Any) -> eskit.EventStore:
        return eskit.open_store("memory://", **options)


class TestSQLiteGroups(GroupConformance):
    def make_store(self, tmp_path: Path, **options: Any) -> eskit.EventStore:
        return eskit.open_store(f"sqlite:///{tmp_path}/events.db", **options)


class TestPostgresGroups(GroupConformance):
    def make_store(self, tmp_path: Path, **options: Any) -> eskit.EventStore:
        return eskit.open_store(postgres.store_url(), **options)
