"""Fixtures of the read-side tests: an opened store per backend and a database for read
models that outlives any one runner (so a restarted runner finds its checkpoints).

On PostgreSQL the read models and checkpoints live in the store's own schema (a schema per
test, from ``tests.postgres``); on SQLite in the store's file; beside a memory store in a
SQLite file of their own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import eskit
from eskit.projections import Database, PostgresDatabase, SQLiteDatabase, database_for
from eskit.store.postgres import PostgresStore
from eskit.store.sqlite import SQLiteStore
from tests.projections.models import BACKENDS, store_url


@pytest.fixture(params=BACKENDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[eskit.EventStore]:
    """An opened store on every backend; closed after the test."""
    async with eskit.open_store(store_url(request.param, tmp_path)) as opened:
        yield opened


@pytest.fixture
async def sqlite_store(tmp_path: Path, anyio_backend: str) -> AsyncIterator[SQLiteStore]:
    """A SQLite store, for what only a store in a SQL file can do (its own read models)."""
    async with eskit.open_store(f"sqlite:///{tmp_path}/events.db") as opened:
        assert isinstance(opened, SQLiteStore)
        yield opened


@pytest.fixture
def readmodels_file(store: eskit.EventStore, tmp_path: Path) -> Path:
    """The SQLite file read models live in: the store's own, or one beside a memory store
    (unused on PostgreSQL, where they live in the store's schema)."""
    return store.path if isinstance(store, SQLiteStore) else tmp_path / "readmodels.db"


@pytest.fixture
async def readmodels(store: eskit.EventStore, readmodels_file: Path) -> AsyncIterator[Database]:
    """The read models' database, shared by the runners of one test and closed after it."""
    apart = None if isinstance(store, SQLiteStore | PostgresStore) else str(readmodels_file)
    database = database_for(store, apart)
    yield database
    await database.close()


@pytest.fixture
async def elsewhere(store: eskit.EventStore, readmodels_file: Path) -> AsyncIterator[Database]:
    """The same read models as ``readmodels`` on a connection of its own: what another
    process (``eskit projections ...``) opens, or a reader that runs while the runner
    writes."""
    database: Database = (
        PostgresDatabase(store)
        if isinstance(store, PostgresStore)
        else SQLiteDatabase(readmodels_file)
    )
    yield database
    await database.close()
