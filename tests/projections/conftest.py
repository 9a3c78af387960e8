"""Fixtures of the read-side tests: an opened store per backend and a database for read
models that outlives any one runner (so a restarted runner finds its checkpoints)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import eskit
from eskit.projections import Database, database_for
from eskit.store.sqlite import SQLiteStore


@pytest.fixture(params=["memory", "sqlite"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[eskit.EventStore]:
    """An opened store on every backend; closed after the test."""
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/events.db"
    async with eskit.open_store(url) as opened:
        yield opened


@pytest.fixture
async def sqlite_store(tmp_path: Path, anyio_backend: str) -> AsyncIterator[SQLiteStore]:
    """A SQLite store, for what only a store in a SQL file can do (inline projections)."""
    async with eskit.open_store(f"sqlite:///{tmp_path}/events.db") as opened:
        assert isinstance(opened, SQLiteStore)
        yield opened


@pytest.fixture
def readmodels_file(store: eskit.EventStore, tmp_path: Path) -> Path:
    """The file read models live in: the store's own, or one beside a memory store."""
    return store.path if isinstance(store, SQLiteStore) else tmp_path / "readmodels.db"


@pytest.fixture
async def readmodels(store: eskit.EventStore, readmodels_file: Path) -> AsyncIterator[Database]:
    """The read models' database, shared by the runners of one test and closed after it."""
    database = database_for(store, None if isinstance(store, SQLiteStore) else str(readmodels_file))
    yield database
    await database.close()
