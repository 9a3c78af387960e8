"""Shared test settings: async tests run on asyncio through anyio's pytest plugin."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import eskit
from tests import postgres


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path, anyio_backend: str) -> AsyncIterator[eskit.EventStore]:
    """A SQLite store file of the test's own (packages that test several backends have
    their own ``store``)."""
    async with eskit.open_store(f"sqlite:///{tmp_path}/events.db") as opened:
        yield opened


@pytest.fixture(scope="session", autouse=True)
def _postgres_database() -> Iterator[None]:
    """Drop the run's PostgreSQL database (if a test made one) when the session ends."""
    yield
    postgres.drop_database()
