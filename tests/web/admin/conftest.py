"""Fixtures of the admin UI tests: the test application served in-process as ``eskit
serve`` builds it (store opened by the lifespan, runners started), with tokens, and a
client that logs in through the form like a browser."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import eskit
from eskit.web import serving_app
from tests.web.admin.app import app_spec
from tests.web.admin.client import Admin
from tests.web.api import client, token_file


@pytest.fixture
async def admin(tmp_path: Path, anyio_backend: str) -> AsyncIterator[Admin]:
    tokens, issued = token_file(tmp_path)
    store = eskit.open_store(f"sqlite:///{tmp_path}/events.db")
    app = serving_app(store, app_spec(store), tokens=tokens)
    async with app.router.lifespan_context(app), client(app) as http:
        yield Admin(app, store, http, issued, tokens)


@pytest.fixture
async def open_admin(tmp_path: Path, anyio_backend: str) -> AsyncIterator[Admin]:
    """The same, without tokens: the API and the admin UI are open."""
    store = eskit.open_store(f"sqlite:///{tmp_path}/events.db")
    app = serving_app(store, app_spec(store))
    async with app.router.lifespan_context(app), client(app) as http:
        yield Admin(app, store, http, {}, None)
