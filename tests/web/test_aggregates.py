"""Time travel over HTTP (``GET /aggregates/{kind}/{id}``) on SQLite and PostgreSQL: the
state now, at a version, at a moment and at both; 404 for what does not exist; 422 for bad
input; the read scope of the aggregate's category; and the event catalog
(``GET /events/catalog``), both in the OpenAPI document."""

from __future__ import annotations

from typing import Any

import pytest

from tests.web.api import Api, error

pytestmark = pytest.mark.anyio


async def invoice_with_two_lines(api: Api) -> None:
    assert (await api.create_invoice("inv-1")).status_code == 200
    for sku, amount in (("pen", 250), ("ink", 1000)):
        body = {"invoice_id": "inv-1", "sku": sku, "amount": amount, "currency": "EUR"}
        assert (await api.command("AddInvoiceLine", body)).status_code == 200


async def load(api: Api, path: str, token: str = "reader", **params: str | int) -> dict[str, Any]:
    response = await api.http.get(path, params=params, headers=api.as_(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_the_state_now_at_a_version_at_a_moment_and_at_both(any_api: Api) -> None:
    await invoice_with_two_lines(any_api)
    written = [e async for e in any_api.store.read_stream("invoice-inv-1")]

    now = await load(any_api, "/aggregates/invoice/inv-1")
    first = await load(any_api, "/aggregates/invoice/inv-1", version=0)
    moment = written[1].recorded_at.isoformat()
    then = await load(any_api, "/aggregates/invoice/inv-1", at=moment)
    both = await load(any_api, "/aggregates/invoice/inv-1", version=0, at=moment)

    assert now == {
        "kind": "invoice",
        "id": "inv-1",
        "stream": "invoice-inv-1",
        "version": 2,
        "last_version": 2,
        "state": {
            "status": "draft",
            "currency": "EUR",
            "customer_id": "c-1",
            "due_date": "2024-05-31",
            "total": 1250,
            "paid": 0,
        },
    }
    assert (first["version"], first["state"]["total"]) == (0, 0)
    assert (then["version"], then["state"]["total"]) == (1, 250)
    assert (both["version"], both["last_version"]) == (0, 2)


async def test_a_decider_state_and_a_moment_without_offset_read_as_utc(api: Api) -> None:
    body = {"customer_id": "c-9", "name": "Ann Lee", "email": "ann@example.com"}
    assert (await api.command("RegisterCustomer", body)).status_code == 200
    (registered,) = [e async for e in api.store.read_stream("customer-c-9")]
    naive = registered.recorded_at.replace(tzinfo=None).isoformat()

    found = await load(api, "/aggregates/customer/c-9", at=naive)

    assert found["state"] == {"registered": True, "name": "Ann Lee", "email": "ann@example.com"}


async def test_what_does_not_exist_is_404_saying_what(any_api: Api) -> None:
    await invoice_with_two_lines(any_api)
    reader = any_api.as_("reader")
    cases = {
        "/aggregates/invoice/inv-404": "AggregateNotFound",
        "/aggregates/order/inv-1": "no aggregate kind 'order'; known: customer, invoice",
        "/aggregates/invoice/inv-1?version=3": "invoice-inv-1 has no version 3: its last is 2",
        "/aggregates/invoice/inv-1?at=2000-01-01T00:00:00Z": "AggregateNotFound",
    }
    for path, message in cases.items():
        response = await any_api.http.get(path, headers=reader)
        assert response.status_code == 404, (path, response.text)
        detail = error(response)
        assert message in f"{detail['type']}: {detail['message']}", (path, detail)


async def test_bad_input_is_422_naming_the_parameter(api: Api) -> None:
    await invoice_with_two_lines(api)
    reader = api.as_("reader")
    cases = {
        "?version=-1": "query version: Input should be greater than or equal to 0",
        "?version=two": "query version: Input should be a valid integer, unable to parse string"
        " as an integer",
        "?at=yesterday": "at: not an ISO 8601 date and time (e.g. 2024-05-01T09:00:00Z):"
        " 'yesterday'",
        "?verison=1": "unknown parameter 'verison'; takes at, version",
    }
    for query, message in cases.items():
        response = await api.http.get(f"/aggregates/invoice/inv-1{query}", headers=reader)
        assert response.status_code == 422, (query, response.text)
        assert error(response)["message"] == message


async def test_it_needs_the_read_scope_of_the_aggregates_category(api: Api) -> None:
    await invoice_with_two_lines(api)
    path = "/aggregates/invoice/inv-1"

    assert (await api.http.get(path)).status_code == 401
    writer = await api.http.get(path, headers=api.as_("writer"))
    assert writer.status_code == 403
    assert error(writer)["message"] == "token 'writer' has no read scope"
    assert (await api.http.get(path, headers=api.as_("invoice_reader"))).status_code == 200
    other = await api.http.get("/aggregates/customer/c-1", headers=api.as_("invoice_reader"))
    assert other.status_code == 403
    assert error(other)["message"] == (
        "token 'invoice_reader' may not read on category 'customer': it may read only invoice"
    )


async def test_the_event_catalog_lists_the_registry(api: Api) -> None:
    catalog = await load(api, "/events/catalog", token="invoice_reader")

    types = {t["name"]: t for t in catalog["types"]}
    created = types["InvoiceCreated"]
    assert created["cls"] == "examples.invoicing.events.InvoiceCreated"
    assert created["version"] == 2
    v1, v2 = created["versions"]
    assert (v1["version"], v1["current"], v1["schema"]) == (1, False, None)
    assert v1["upcaster"] == "examples.invoicing.events._invoice_created_v1"
    assert (v2["version"], v2["current"], v2["upcaster"]) == (2, True, None)
    assert v2["schema"]["$defs"]["InvoiceCreated"]["required"] == [
        "invoice_id",
        "customer_id",
        "currency",
        "due_date",
    ]
    refused = await api.http.get("/events/catalog", headers=api.as_("writer"))
    assert refused.status_code == 403


async def test_both_are_in_the_openapi_document(api: Api) -> None:
    document = (await api.http.get("/openapi.json")).json()

    travel = document["paths"]["/aggregates/{kind}/{aggregate_id}"]["get"]
    assert {p["name"] for p in travel["parameters"]} == {"kind", "aggregate_id", "version", "at"}
    assert travel["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AggregateState"
    }
    assert {"404", "422", "401", "403"} <= set(travel["responses"])
    catalog = document["paths"]["/events/catalog"]["get"]
    assert catalog["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Catalog"
    }
    schemas = document["components"]["schemas"]
    assert {"AggregateState", "Catalog", "EventTypeInfo", "EventVersion"} <= set(schemas)
