"""Fixtures of the HTTP API tests: the app over a real store (a SQLite file, and PostgreSQL
for the core tests), the invoicing example's command bus, one query (the store's
``last_position``) and a token per grant."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from examples.invoicing.app import invoicing
from examples.invoicing.customer import CustomerError, customer_decider
from examples.invoicing.invoice import Invoice, InvoiceError

import eskit
from eskit.web import create_app
from tests import postgres
from tests.web.api import Api, client, token_file

FREE_FORM = ("invoice", "customer")
"""The stream tests append events of any type to these categories (raw appends elsewhere
must decode: tests/web/test_raw_appends.py)."""


def store_url(backend: str, directory: Path) -> str:
    return f"sqlite:///{directory}/events.db" if backend == "sqlite" else postgres.store_url()


async def api_on(url: str, directory: Path) -> AsyncIterator[Api]:
    tokens, issued = token_file(directory)
    async with eskit.open_store(url) as store:
        bus = invoicing(store)
        app = create_app(
            store,
            bus=bus,
            queries={"last_position": store.last_position},
            tokens=tokens,
            errors={InvoiceError: 409, CustomerError: 409},
            free_form=FREE_FORM,
            aggregates={
                "invoice": bus.repository(Invoice.model()),
                "customer": bus.repository(customer_decider),
            },
        )
        async with client(app) as http:
            yield Api(app, store, http, issued)


@pytest.fixture
async def api(tmp_path: Path, anyio_backend: str) -> AsyncIterator[Api]:
    """The API over a SQLite file, with the invoicing commands and tokens."""
    async for opened in api_on(store_url("sqlite", tmp_path), tmp_path):
        yield opened


@pytest.fixture(params=["sqlite", "postgres"])
async def any_api(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[Api]:
    """The same API over each backend, for the core tests."""
    async for opened in api_on(store_url(request.param, tmp_path), tmp_path):
        yield opened
