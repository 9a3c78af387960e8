"""Projections over the PostgreSQL store: checkpoints and read models in a database named
by the caller (read models inside PostgreSQL are not supported yet)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import eskit
from eskit.projections import ProjectionRunner, SQLiteDatabase
from tests import postgres
from tests.projections.models import Counter, append, counts

pytestmark = pytest.mark.anyio


async def test_a_runner_over_postgres_without_a_database_is_refused_clearly() -> None:
    async with eskit.open_store(postgres.store_url()) as store:
        with pytest.raises(ValueError, match="need a database for their checkpoints"):
            ProjectionRunner(store, [Counter()])


async def test_a_runner_over_postgres_keeps_its_read_model_in_the_named_database(
    tmp_path: Path,
) -> None:
    url = postgres.store_url()
    async with eskit.open_store(url) as store:
        for _ in range(3):
            await append(store, "cart-1", "Added")
        database = SQLiteDatabase(tmp_path / "readmodels.db")
        async with ProjectionRunner(store, [Counter()], database=database) as runner:
            last = await append(store, "cart-2", "Added")
            async with asyncio.timeout(10):
                await runner.wait_until(last.last_position)
            assert await counts(database) == {("cart-1", "Added"): 3, ("cart-2", "Added"): 1}
        await database.close()
