"""Raw appends (``POST /streams``) cannot poison read models: in an application with an
event registry, an event of an unregistered type, or whose data does not decode into its
class, is refused with 422 and nothing is written; categories named free-form take any
event. Served as ``eskit serve`` serves the invoicing example."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from examples.invoicing.app import invoicing
from examples.invoicing.web import app_spec

import eskit
from eskit.web import serving_app
from eskit.web.errors import ApiError
from eskit.web.raw_appends import check_raw_append
from tests.web.api import DUE, Api, client, error, token_file

pytestmark = pytest.mark.anyio

V2 = {"schema_version": 2}
"""InvoiceCreated's current schema version (an event without one is read as version 1)."""
CREATED = {"invoice_id": "77", "customer_id": "c-1", "currency": "EUR", "due_date": "2024-05-31"}


async def served(directory: Path, **spec: Any) -> AsyncIterator[Api]:
    tokens, issued = token_file(directory)
    store = eskit.open_store(f"sqlite:///{directory}/events.db")
    app = serving_app(store, dataclasses.replace(app_spec(store), **spec), tokens=tokens)
    async with app.router.lifespan_context(app), client(app) as http:
        yield Api(app, store, http, issued)


@pytest.fixture
async def api(tmp_path: Path, anyio_backend: str) -> AsyncIterator[Api]:
    """The invoicing example as served, its checks on (the default)."""
    async for opened in served(tmp_path):
        yield opened


@pytest.fixture
async def free_form_api(tmp_path: Path, anyio_backend: str) -> AsyncIterator[Api]:
    """The same, with ``lab`` streams taking free-form events."""
    async for opened in served(tmp_path, free_form_categories={"lab"}):
        yield opened


async def post(
    api: Api, stream: str, *events: dict[str, Any], token: str = "invoice_writer"
) -> httpx.Response:
    return await api.http.post(
        f"/streams/{stream}", json={"events": list(events)}, headers=api.as_(token)
    )


async def invoice_of(api: Api, invoice: str) -> Any:
    """The invoice as the read model shows it, once the projections caught up."""
    position = await api.store.last_position()
    response = await api.http.get(
        "/queries/invoice",
        params={"invoice": invoice},
        headers=api.as_("admin", **{"Wait-For-Position": str(position)}),
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    ("event", "kind", "named"),
    [
        pytest.param(
            {"type": "InvoiceCreated", "data": {"invoice_id": "77"}},
            "InvalidEvent",
            "as schema version 1 (metadata schema_version, 1 if absent): KeyError: 'created_on'",
            id="the_attack",
        ),
        pytest.param(
            {"type": "InvoiceCreated", "data": {"invoice_id": "77"}, "metadata": V2},
            "InvalidEvent",
            "ValidationError: Object missing required field `customer_id`",
            id="missing_field",
        ),
        pytest.param(
            {"type": "InvoiceCreated", "data": {**CREATED, "due_date": 5}, "metadata": V2},
            "InvalidEvent",
            "`$.due_date`",
            id="wrong_type",
        ),
        pytest.param(
            {"type": "InvoiceLineAdded", "data": {"sku": "a", "amount": "1"}},
            "InvalidEvent",
            "`$.amount`",
            id="wrong_type_2",
        ),
        pytest.param(
            {"type": "Poison", "data": {"dose": 1}},
            "UnknownEventType",
            "'Poison' is not registered",
            id="unregistered",
        ),
        pytest.param(
            {"type": "InvoiceCreated", "data": CREATED, "metadata": {"schema_version": 3}},
            "UnsupportedEventVersion",
            "newer",
            id="newer",
        ),
        pytest.param(
            {"type": "InvoiceCreated", "data": CREATED, "metadata": {"schema_version": "2"}},
            "InvalidEvent",
            "schema_version must be an int",
            id="bad_version",
        ),
    ],
)
async def test_an_event_that_does_not_decode_is_refused_and_nothing_is_written(
    api: Api, event: dict[str, Any], kind: str, named: str
) -> None:
    """The attack of issue 12: a token with only write:invoice posts a half InvoiceCreated.
    It is refused, nothing is written, and the invoice still works through its commands and
    read models."""
    good = {"type": "InvoiceLineAdded", "data": {"sku": "a", "amount": 1}}
    response = await post(api, "invoice-77", good, event)
    assert response.status_code == 422, response.text
    assert error(response)["type"] == kind
    assert "events[1]" in error(response)["message"]
    assert named in error(response)["message"]
    assert await api.store.last_position() == 0
    created = await api.create_invoice("77", token="invoice_writer")
    assert created.status_code == 200, created.text
    line = await api.command(
        "AddInvoiceLine", {"invoice_id": "77", "sku": "a", "amount": 5, "currency": "EUR"}
    )
    assert line.status_code == 200, line.text
    assert (await invoice_of(api, "77"))["total"] == 5


async def test_an_event_that_decodes_is_appended_and_read_like_any_other(api: Api) -> None:
    created = {"type": "InvoiceCreated", "data": CREATED, "metadata": V2}
    response = await post(api, "invoice-77", created)
    assert response.status_code == 201, response.text
    line = await api.command(
        "AddInvoiceLine", {"invoice_id": "77", "sku": "a", "amount": 5, "currency": "EUR"}
    )
    assert line.status_code == 200, line.text
    assert (await invoice_of(api, "77"))["total"] == 5


async def test_an_old_schema_version_decodes_through_the_upcasters(api: Api) -> None:
    """InvoiceCreated v1 had ``created_on`` instead of ``due_date``: the upcaster turns it
    into today's class, so v1 data is accepted; v1 data without it is not."""
    v1 = {"invoice_id": "77", "customer_id": "c-1", "currency": "EUR", "created_on": "2024-05-01"}
    old = {"type": "InvoiceCreated", "data": v1, "metadata": {"schema_version": 1}}
    assert (await post(api, "invoice-77", old)).status_code == 201
    assert (await invoice_of(api, "77"))["due_date"] == DUE.isoformat()
    today = {"type": "InvoiceCreated", "data": CREATED}  # no schema_version: version 1
    refused = await post(api, "invoice-78", today)
    assert refused.status_code == 422, refused.text
    assert "KeyError: 'created_on'" in error(refused)["message"]


async def test_the_check_holds_in_every_category(api: Api) -> None:
    """A registry knows types, not categories: an unregistered type is refused anywhere."""
    for stream in ("lab-1", "customer-c-1", "notes"):
        response = await post(api, stream, {"type": "Poison", "data": {}}, token="admin")
        assert response.status_code == 422, (stream, response.text)
    assert await api.store.last_position() == 0


async def test_free_form_categories_take_any_event(free_form_api: Api) -> None:
    api = free_form_api
    poison = {"type": "Poison", "data": {"dose": 1}}
    assert (await post(api, "lab-1", poison, token="admin")).status_code == 201
    half = {"type": "InvoiceCreated", "data": {"x": 1}}
    assert (await post(api, "lab-2", half, token="admin")).status_code == 201
    assert (await post(api, "invoice-1", poison, token="admin")).status_code == 422
    assert [e.stream async for e in api.store.read_all()] == ["lab-1", "lab-2"]


async def test_a_free_form_category_must_be_a_category() -> None:
    store = eskit.open_store("memory://")
    with pytest.raises(ValueError, match="category"):
        serving_app(store, dataclasses.replace(app_spec(store), free_form_categories={""}))


async def test_an_event_its_aggregate_does_not_apply_is_refused(api: Api) -> None:
    """Decoding is not enough on an aggregate's stream: an invoice event in a customer's
    stream would break every later command on that customer."""
    customer = {"customer_id": "c-1", "name": "Ada", "email": "ada@example.com"}
    assert (await api.command("RegisterCustomer", customer)).status_code == 200
    before = await api.store.last_position()
    invoice_event = {"type": "InvoiceCreated", "data": CREATED, "metadata": V2}
    response = await post(api, "customer-c-1", invoice_event, token="admin")
    assert response.status_code == 422, response.text
    assert error(response)["type"] == "NotApplicable"
    assert "events[0] (InvoiceCreated) does not apply" in error(response)["message"]
    assert "AssertionError" in error(response)["message"]
    renamed = {"type": "CustomerRenamed", "data": {"name": "Ada L."}}
    assert (await post(api, "invoice-77", renamed)).status_code == 422
    assert await api.store.last_position() == before
    rename = await api.command("ChangeCustomerName", {"customer_id": "c-1", "name": "Ada B."})
    assert rename.status_code == 200, rename.text
    assert (await post(api, "customer-c-1", renamed, token="admin")).status_code == 201
    claimed = {"type": "EmailClaimed", "data": {"customer_id": "c-2"}}  # no aggregate there
    assert (await post(api, "email-b@example.com", claimed, token="admin")).status_code == 201


async def test_data_kept_as_bytes_is_refused_unless_the_category_is_free_form() -> None:
    """The policy other protocols' raw appends go through (gRPC): bytes decode into no
    event of the application."""
    async with eskit.open_store("memory://") as store:
        bus = invoicing(store)
        raw = [eskit.NewEvent("InvoiceCreated", eskit.RawData("application/json", b"[1]"))]
        with pytest.raises(ApiError, match=r"events\[0\] \(InvoiceCreated\) data is bytes") as no:
            await check_raw_append(bus, frozenset(), "invoice-1", raw)
        assert no.value.status == 422
        await check_raw_append(bus, frozenset({"lab"}), "lab-1", raw)
        meta = [eskit.NewEvent("InvoiceCreated", {**CREATED}, eskit.RawData("", b"\x00"))]
        with pytest.raises(ApiError, match="as schema version 1"):  # bytes hold no version
            await check_raw_append(bus, frozenset(), "invoice-1", meta)
