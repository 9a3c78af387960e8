"""Fixtures the broker tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import eskit


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[eskit.EventStore]:
    """A SQLite store of the test's own, for the relay to publish from."""
    async with eskit.open_store(f"sqlite:///{tmp_path}/events.db") as opened:
        yield opened
