"""The consumer group conformance suite, once per backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import eskit
from eskit.testing import GroupConformance
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


def test_a_failure_in_the_suite_shows_the_values_compared() -> None:
    """``eskit.testing`` has pytest rewrite the suite's asserts, as in a test module."""
    import eskit.testing.groups as suite

    assert "@pytest_ar" in vars(suite)
