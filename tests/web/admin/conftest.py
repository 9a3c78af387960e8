"""Fixtures of the admin UI tests: the test application served in-process as ``eskit
serve`` builds it (store opened by the lifespan, runners started), with tokens, and a
client that logs in through the form like a browser."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.web.admin.app import served
from tests.web.admin.client import Admin


@pytest.fixture
async def admin(tmp_path: Path, anyio_backend: str) -> AsyncIterator[Admin]:
    async with served(tmp_path) as found:
        yield found


@pytest.fixture
async def open_admin(tmp_path: Path, anyio_backend: str) -> AsyncIterator[Admin]:
    """The same, without tokens: the API and the admin UI are open."""
    async with served(tmp_path, tokens=False) as found:
        yield found
