"""Fixtures of the application tests: an opened store per backend, with a clock we control."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import eskit
from tests import postgres

START = dt.datetime(2024, 3, 1, 9, 0, tzinfo=dt.UTC)


class ManualClock:
    """A store clock that only moves when a test moves it."""

    def __init__(self, now: dt.datetime = START) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> dt.datetime:
        self.now += dt.timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["memory", "sqlite"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock, anyio_backend: str
) -> AsyncIterator[eskit.EventStore]:
    """An opened store on every backend; closed after the test."""
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/events.db"
    async with eskit.open_store(url, clock=clock) as opened:
        yield opened


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def every_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock, anyio_backend: str
) -> AsyncIterator[eskit.EventStore]:
    """``store``, and PostgreSQL too: for the rules whose record lives in the store."""
    urls = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/events.db"}
    url = urls.get(request.param) or postgres.store_url()
    async with eskit.open_store(url, clock=clock) as opened:
        yield opened
