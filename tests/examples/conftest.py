"""Fixtures of the invoicing read-side tests (helpers in ``read_side.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from examples.invoicing.app import invoicing
from examples.invoicing.read_models import projections

import eskit
from eskit.projections import ProjectionRunner
from tests.examples.read_side import Clock, ReadSide


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path, clock: Clock) -> AsyncIterator[eskit.EventStore]:
    async with eskit.open_store(f"sqlite:///{tmp_path / 'events.db'}", clock=clock) as opened:
        yield opened


@pytest.fixture
async def read_side(store: eskit.EventStore, clock: Clock) -> AsyncIterator[ReadSide]:
    bus = invoicing(store)
    async with ProjectionRunner(store, projections(store, bus)) as runner:
        yield ReadSide(store, bus, runner, clock)
