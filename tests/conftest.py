"""Shared test settings: async tests run on asyncio through anyio's pytest plugin."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import postgres


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def _postgres_database() -> Iterator[None]:
    """Drop the run's PostgreSQL database (if a test made one) when the session ends."""
    yield
    postgres.drop_database()
