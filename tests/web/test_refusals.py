"""An append an inline projection refuses is a 409 over HTTP, for raw appends and commands
alike: a conflict with the read model's rule, which a retry would meet again (no 503, no
``Retry-After``), and nothing of it is written. A runner's stuck projection, which a query
waits for, stays a 503."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import eskit
from eskit.projections import (
    ProjectionRunner,
    ReadModelConnection,
    SQLProjection,
    add_inline,
    handles,
)
from eskit.web import AppSpec, serving_app
from tests.cli.apps import Fragile
from tests.web.api import DUE, Api, client, error, token_file
from tests.web.conftest import api_on, store_url

pytestmark = pytest.mark.anyio


class OneInvoicePerCustomer(SQLProjection):
    """The invoice of each customer: a rule that refuses a customer's second invoice."""

    name = "one_invoice_per_customer"
    tables = ("invoice_of",)
    schema = ("CREATE TABLE {invoice_of} (customer_id TEXT PRIMARY KEY, stream TEXT NOT NULL)",)

    @handles("InvoiceCreated")
    def created(self, event: eskit.RecordedEvent, db: ReadModelConnection) -> None:
        db.execute(
            "INSERT INTO {invoice_of} VALUES (?, ?)",
            (event.data["customer_id"], event.stream),
        )


@pytest.fixture(params=["sqlite", "postgres"])
async def api(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[Api]:
    """The invoicing API over a store where ``OneInvoicePerCustomer`` runs inline, and
    customer c-1 has invoice 1."""
    async for opened in api_on(store_url(request.param, tmp_path), tmp_path):
        await add_inline(opened.store, OneInvoicePerCustomer())
        assert (await opened.create_invoice("1")).status_code == 200
        yield opened


def assert_refused(response: httpx.Response, stream: str) -> None:
    """A 409 without ``Retry-After``, whose message names the stream and the projection."""
    assert response.status_code == 409, response.text
    assert "retry-after" not in response.headers
    detail = error(response)
    assert detail["type"] == "ProjectionError"
    assert detail["message"].startswith(
        f"the append to {stream} was refused by projection one_invoice_per_customer: "
    )


async def test_a_command_refused_by_an_inline_projection_is_a_409(api: Api) -> None:
    head = await api.store.last_position()

    refused = await api.create_invoice("2")

    assert_refused(refused, "invoice-2")
    assert await api.store.stream_version("invoice-2") is None
    assert await api.store.last_position() == head


async def test_a_raw_append_refused_by_an_inline_projection_is_a_409(api: Api) -> None:
    head = await api.store.last_position()
    data = {"invoice_id": "3", "customer_id": "c-1", "currency": "EUR", "due_date": str(DUE)}
    body = {"events": [{"type": "InvoiceCreated", "data": data}]}

    refused = await api.http.post("/streams/invoice-3", json=body, headers=api.as_("admin"))

    assert_refused(refused, "invoice-3")
    assert await api.store.stream_version("invoice-3") is None
    assert await api.store.last_position() == head
    other = {**data, "invoice_id": "4", "customer_id": "c-2"}  # the rule allows it
    body = {"events": [{"type": "InvoiceCreated", "data": other}]}
    written = await api.http.post("/streams/invoice-4", json=body, headers=api.as_("admin"))
    assert written.status_code == 201, written.text


async def test_a_runner_stuck_projection_stays_a_503(tmp_path: Path, anyio_backend: str) -> None:
    """A query waiting for a projection a runner is stuck on: the server's state, not the
    request's fault (an operator skips or fixes the event), so 503 and ``Retry-After``."""
    tokens, issued = token_file(tmp_path)
    store = eskit.open_store(store_url("sqlite", tmp_path))
    runner = ProjectionRunner(store, [Fragile()], retries=0, backoff=0.01)
    spec = AppSpec(
        queries={"last_position": store.last_position},
        runner=runner,
        wait_until=runner.wait_until,
    )
    app = serving_app(store, spec, tokens=tokens)
    async with app.router.lifespan_context(app), client(app) as http:
        api = Api(app, store, http, issued)
        appended = await api.append("lab-1", "Poison")
        assert appended.status_code == 201, appended.text

        waiting = await http.get(
            "/queries/last_position", headers=api.as_("reader", **{"Wait-For-Position": "1"})
        )

        assert waiting.status_code == 503, waiting.text
        assert waiting.headers["retry-after"] == "1"
        assert error(waiting)["type"] == "ProjectionError"
        assert "projection fragile stuck at position 1" in error(waiting)["message"]
