"""Commands and queries over HTTP: the invoicing example's commands (on SQLite and
PostgreSQL), idempotent retries by ``Command-Id``, errors that name what is wrong, and the
command → read model → query round trip."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from examples.invoicing.web import app_spec

import eskit
from eskit.application.commands import command_event_id
from eskit.web import Settings, create_app, serving_app
from tests.web.api import Api, client, error, token_file

pytestmark = pytest.mark.anyio


async def test_a_command_answers_with_its_events_as_stored(any_api: Api) -> None:
    response = await any_api.create_invoice("42")
    assert response.status_code == 200, response.text
    reply = response.json()
    command_id = uuid.UUID(reply["command_id"])
    assert reply == {
        "command_id": str(command_id),
        "stream": "invoice-42",
        "version": 0,
        "position": 1,
        "events": [
            {"id": str(command_event_id(command_id, 0)), "type": "InvoiceCreated", "version": 0}
        ],
        "replayed": False,
    }
    (stored,) = [e async for e in any_api.store.read_stream("invoice-42")]
    assert str(stored.id) == reply["events"][0]["id"]
    assert stored.data["customer_id"] == "c-1"
    assert stored.metadata["command_id"] == str(command_id)


async def test_a_command_sent_again_with_its_id_is_not_run_twice(any_api: Api) -> None:
    await any_api.create_invoice("42")
    command_id = str(uuid.uuid4())
    line = {"invoice_id": "42", "sku": "s-1", "amount": 500, "currency": "EUR"}
    first = await any_api.command("AddInvoiceLine", line, **{"Command-Id": command_id})
    again = await any_api.command("AddInvoiceLine", line, **{"Command-Id": command_id})
    assert first.status_code == again.status_code == 200
    assert again.json() == {**first.json(), "replayed": True}
    assert first.json()["command_id"] == command_id
    assert await any_api.store.stream_version("invoice-42") == 1
    other = await any_api.command(
        "IssueInvoice",
        {"invoice_id": "42", "now": "2024-05-01T09:00:00Z"},
        **{"Command-Id": command_id},
    )
    assert other.status_code == 409
    assert error(other)["type"] == "IdempotencyConflict"


@pytest.mark.parametrize(
    ("invoice", "sku", "says"),
    [
        ("46", "s-1", "with other arguments (this one is for invoice-46)"),
        ("44", "s-2", "with other arguments;"),
    ],
    ids=["another invoice", "other arguments"],
)
async def test_a_command_id_reused_by_the_same_command_type_is_a_409_naming_its_first_use(
    any_api: Api, invoice: str, sku: str, says: str
) -> None:
    """The id names one command: the same type for another aggregate, or with other
    arguments, is refused, not answered ``replayed`` with the command dropped."""
    await any_api.create_invoice("44")
    await any_api.create_invoice("46")
    command_id = str(uuid.uuid4())
    line = {"invoice_id": "44", "sku": "s-1", "amount": 500, "currency": "EUR"}
    first = await any_api.command("AddInvoiceLine", line, **{"Command-Id": command_id})
    assert first.status_code == 200, first.text
    head = await any_api.store.last_position()

    other = {**line, "invoice_id": invoice, "sku": sku}
    reused = await any_api.command("AddInvoiceLine", other, **{"Command-Id": command_id})

    assert reused.status_code == 409, reused.text
    assert error(reused)["type"] == "IdempotencyConflict"
    assert (
        f"command id {command_id} was already used by AddInvoiceLine on invoice-44, {says}"
        in error(reused)["message"]
    )
    assert await any_api.store.last_position() == head


async def test_a_command_retried_with_another_now_is_replayed(any_api: Api) -> None:
    await any_api.create_invoice("42")
    line = {"invoice_id": "42", "sku": "s-1", "amount": 500, "currency": "EUR"}
    assert (await any_api.command("AddInvoiceLine", line)).status_code == 200
    command_id = str(uuid.uuid4())
    issue = {"invoice_id": "42", "now": "2024-05-01T09:00:00Z"}
    first = await any_api.command("IssueInvoice", issue, **{"Command-Id": command_id})
    later = {**issue, "now": "2024-05-01T09:00:05Z"}
    again = await any_api.command("IssueInvoice", later, **{"Command-Id": command_id})
    assert again.status_code == 200, again.text
    assert again.json() == {**first.json(), "replayed": True}


async def test_a_broken_rule_is_a_409_with_the_domain_message(any_api: Api) -> None:
    await any_api.create_invoice("42")
    again = await any_api.create_invoice("42")
    assert again.status_code == 409
    assert error(again) == {"type": "InvoiceError", "message": "invoice 42 already exists"}
    assert await any_api.store.last_position() == 1


async def test_a_taken_email_is_a_409(api: Api) -> None:
    ann = {"customer_id": "c-1", "name": "Ann", "email": "ann@example.com"}
    assert (await api.command("RegisterCustomer", ann)).status_code == 200
    bob = {"customer_id": "c-2", "name": "Bob", "email": "ANN@example.com"}
    taken = await api.command("RegisterCustomer", bob)
    assert taken.status_code == 409
    assert error(taken)["type"] == "EmailAlreadyUsed"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            {"invoice_id": 42, "customer_id": "c", "currency": "EUR", "due_date": "2024-05-31"},
            "Expected `str`, got `int` - at `$.invoice_id`",
        ),
        (
            {"invoice_id": "42", "customer_id": "c", "currency": "EUR"},
            "Object missing required field `due_date`",
        ),
        (
            {"invoice_id": "42", "customer_id": "c", "currency": "EUR", "due_date": "soon"},
            "Invalid RFC3339 encoded date - at `$.due_date`",
        ),
        ([], "Expected `object`, got `array`"),
    ],
)
async def test_a_bad_command_body_is_a_422_naming_the_field(
    api: Api, body: object, says: str
) -> None:
    response = await api.http.post("/commands/CreateInvoice", json=body, headers=api.as_("admin"))
    assert response.status_code == 422
    assert error(response)["message"] == f"body: {says}"


async def test_a_stream_name_the_store_refuses_is_a_422(api: Api) -> None:
    response = await api.create_invoice("x" * 300)
    assert response.status_code == 422
    assert "stream name is 308 characters long" in error(response)["message"]


async def test_non_json_and_unknown_commands_are_clear_4xx(api: Api) -> None:
    garbage = await api.http.post(
        "/commands/CreateInvoice",
        content=b"\xff\xfe",
        headers=api.as_("admin", **{"Content-Type": "application/json"}),
    )
    assert garbage.status_code == 400
    assert error(garbage)["type"] == "InvalidJSON"
    unknown = await api.command("PayEverything", {})
    assert unknown.status_code == 404
    assert "known: CreateInvoice, AddInvoiceLine" in error(unknown)["message"]
    bad_id = await api.command("CreateInvoice", {}, **{"Command-Id": "not-a-uuid"})
    assert bad_id.status_code == 422
    assert error(bad_id)["message"].startswith("header Command-Id:")


async def test_the_correlation_id_is_stamped_on_the_events(api: Api) -> None:
    body = {"invoice_id": "42", "customer_id": "c", "currency": "EUR", "due_date": "2024-05-31"}
    await api.command("CreateInvoice", body, **{"Correlation-Id": "request-7"})
    (stored,) = [e async for e in api.store.read_stream("invoice-42")]
    assert stored.metadata["correlation_id"] == "request-7"


# -- the invoicing example served as `eskit serve --app examples.invoicing.web:app_spec` --


@pytest.fixture
async def served(tmp_path: Path, anyio_backend: str) -> AsyncIterator[Api]:
    """The example's app as ``eskit serve`` builds it: the store opened by the app's
    lifespan, the projection runner started in it."""
    tokens, issued = token_file(tmp_path)
    store = eskit.open_store(f"sqlite:///{tmp_path}/events.db")
    app = serving_app(store, app_spec(store), tokens=tokens)
    async with app.router.lifespan_context(app), client(app) as http:
        assert store.is_open
        yield Api(app, store, http, issued)
    assert not store.is_open


async def test_commands_reach_the_read_models_and_their_queries(served: Api) -> None:
    # due in the future: the reminder process marks a past-due invoice overdue meanwhile
    await served.create_invoice("42", due=dt.date(2124, 5, 31))
    line = {"invoice_id": "42", "sku": "s-1", "amount": 1250, "currency": "EUR"}
    await served.command("AddInvoiceLine", line)
    issued = await served.command(
        "IssueInvoice", {"invoice_id": "42", "now": "2024-05-01T09:00:00Z"}
    )
    position = str(issued.json()["position"])
    reader = served.as_("reader", **{"Wait-For-Position": position})
    found = await served.http.get("/queries/open_invoices", headers=reader)
    assert found.status_code == 200, found.text
    assert [(r["invoice_id"], r["status"], r["total"]) for r in found.json()] == [
        ("42", "issued", 1250)
    ]
    one = await served.http.get("/queries/invoice", params={"invoice": "42"}, headers=reader)
    assert one.json()["due_date"] == "2124-05-31"
    balances = await served.http.get("/queries/customer_balances", headers=reader)
    assert balances.json() == [
        {"customer_id": "c-1", "currency": "EUR", "invoices": 1, "outstanding": 1250}
    ]
    hits = await served.http.get("/queries/search", params={"text": "s-1"}, headers=reader)
    assert [h["invoice_id"] for h in hits.json()] == ["42"]
    assert hits.json()[0]["snippet"] == "«s-1»"  # the matched words, highlighted
    for status, wanted in (("issued", ["42"]), ("draft", [])):
        params = {"text": "s-1", "status": status}
        hits = await served.http.get("/queries/search", params=params, headers=reader)
        assert [h["invoice_id"] for h in hits.json()] == wanted


async def test_query_parameters_are_checked_and_none_is_a_404(served: Api) -> None:
    reader = served.as_("reader")
    missing = await served.http.get("/queries/invoice", params={"invoice": "7"}, headers=reader)
    assert missing.status_code == 404
    assert error(missing)["message"] == "query invoice found nothing"
    cases = {
        "/queries/invoice": "query parameter invoice is required",
        "/queries/invoices?limit=many": "query parameter limit: Expected `int`, got `str`",
        "/queries/invoices?limt=5": "unknown parameter 'limt'; takes limit",
        "/queries/nothing": "Not Found",
    }
    for path, says in cases.items():
        response = await served.http.get(path, headers=reader)
        assert response.status_code in (404, 422), path
        assert error(response)["message"] == says, path


async def test_a_query_waits_for_a_position_at_most_a_while(served: Api) -> None:
    await served.create_invoice("42")
    served.app.state.eskit.settings = Settings(wait_timeout=0.2)
    await served.app.state.eskit.wait_until(1)
    served.app.state.eskit.wait_until = lambda position: asyncio.sleep(1)  # a slow runner
    late = await served.http.get(
        "/queries/invoices", headers=served.as_("reader", **{"Wait-For-Position": "1"})
    )
    assert late.status_code == 503
    assert error(late)["type"] == "NotCaughtUp"
    ahead = await served.http.get(
        "/queries/invoices", headers=served.as_("reader", **{"Wait-For-Position": "2"})
    )
    assert ahead.status_code == 422
    assert error(ahead)["message"] == "Wait-For-Position 2 is past the end of the log (position 1)"


async def test_query_parameters_come_from_the_signature(tmp_path: Path) -> None:
    async def totals(customers: list[str], since: dt.date, paid: bool = False) -> dict[str, Any]:
        return {"customers": customers, "since": since, "paid": paid}

    async with eskit.open_store(f"sqlite:///{tmp_path}/events.db") as store:
        app = create_app(store, queries={"totals": totals})
        async with client(app) as http:
            answer = await http.get(
                "/queries/totals?customers=c-1&customers=c-2&since=2024-05-01&paid=true"
            )
            assert answer.json() == {
                "customers": ["c-1", "c-2"],
                "since": "2024-05-01",
                "paid": True,
            }
            parameters = (await http.get("/openapi.json")).json()["paths"]["/queries/totals"]
            documented = {p["name"]: p for p in parameters["get"]["parameters"]}
            assert documented["customers"]["schema"]["type"] == "array"
            assert documented["since"]["schema"] == {"type": "string", "format": "date"}
            assert documented["paid"]["required"] is False

    def by_filter(where: dict[str, str]) -> int:
        return 0

    with pytest.raises(TypeError, match="parameter where is not a scalar"):
        create_app(store, queries={"by_filter": by_filter})
    with pytest.raises(ValueError, match="query name 'a b'"):
        create_app(store, queries={"a b": totals})
