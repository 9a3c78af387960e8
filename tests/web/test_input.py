"""What the API refuses before anything is written: bodies nested too deep (422 naming the
path, never a 500, however deep) and bodies not sent as JSON (415)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import eskit
from eskit.application import CommandBus
from eskit.domain import Decider, EventRegistry
from eskit.store.rules import MAX_NESTING
from eskit.web import create_app
from tests.web.api import Api, client, error, token_file

pytestmark = pytest.mark.anyio

DEPTHS = [MAX_NESTING + 1, 900, 10_000, 100_000]
"""Past the limit, still readable by the JSON parser, and far past what it reads."""


def nested_json(depth: int) -> str:
    """JSON nested ``depth`` levels deep, itself counted: ``{"a":[{"a":[...]}]}``."""
    opening = "".join('{"a":' if level % 2 else "[" for level in range(1, depth + 1))
    closing = "".join("}" if level % 2 else "]" for level in range(depth, 0, -1))
    return opening + "1" + closing


def path_of(root: str) -> str:
    """The start of the path a 422 names for ``nested_json`` under ``root``."""
    return root + ".a[0]" * 10


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("where", ["data", "metadata"])
async def test_an_append_nested_too_deep_is_a_422_naming_the_path(
    api: Api, where: str, depth: int
) -> None:
    deep = nested_json(depth)
    event = (
        f'{{"type":"A","data":{deep}}}'
        if where == "data"
        else f'{{"type":"A","data":{{}},"metadata":{deep}}}'
    )
    body = f'{{"events":[{{"type":"B","data":{{}}}},{event}]}}'
    response = await api.http.post(
        "/streams/invoice-1",
        content=body.encode(),
        headers=api.as_("admin", **{"Content-Type": "application/json"}),
    )
    assert response.status_code == 422, response.text
    message = error(response)["message"]
    assert path_of(where) in message
    assert "nested" in message
    assert str(MAX_NESTING) in message
    assert await api.store.last_position() == 0


# -- a command whose argument goes into its event as it is ---------------------------------


class TakeNote(msgspec.Struct, frozen=True):
    note_id: str
    details: dict[str, Any]


class NoteTaken(msgspec.Struct, frozen=True):
    details: dict[str, Any]


def _decide(command: TakeNote, state: None) -> list[NoteTaken]:
    return [NoteTaken(command.details)]


notes = EventRegistry()
notes.register("NoteTaken")(NoteTaken)
note_decider: Decider[TakeNote, None] = Decider(
    category="note", initial_state=lambda: None, evolve=lambda state, event: state, decide=_decide
)


@pytest.fixture
async def notes_api(tmp_path: Path, anyio_backend: str) -> AsyncIterator[Api]:
    tokens, issued = token_file(tmp_path)
    async with eskit.open_store(f"sqlite:///{tmp_path}/events.db") as store:
        bus = CommandBus(store, notes)
        bus.register(TakeNote, note_decider, aggregate_id=lambda c: c.note_id)
        app = create_app(store, bus=bus, tokens=tokens)
        async with client(app) as http:
            yield Api(app, store, http, issued)


@pytest.mark.parametrize("depth", DEPTHS)
async def test_a_command_nested_too_deep_is_a_422_naming_the_path(
    notes_api: Api, depth: int
) -> None:
    """Too deep for the parser, the body's path is named; readable, the store names the path
    in the event the command would have written."""
    body = f'{{"note_id":"1","details":{nested_json(depth)}}}'
    response = await notes_api.http.post(
        "/commands/TakeNote",
        content=body.encode(),
        headers=notes_api.as_("admin", **{"Content-Type": "application/json"}),
    )
    assert response.status_code == 422, response.text
    assert path_of("details") in error(response)["message"]
    assert await notes_api.store.last_position() == 0
    fine = await notes_api.command("TakeNote", {"note_id": "1", "details": {"a": [{"b": 1}]}})
    assert fine.status_code == 200, fine.text


# -- 415 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "json"],
)
async def test_a_body_not_sent_as_json_is_a_415(api: Api, content_type: str | None) -> None:
    headers = api.as_("admin")
    if content_type is not None:
        headers["Content-Type"] = content_type
    append = b'{"events": [{"type": "A", "data": {}}]}'
    command = (
        b'{"invoice_id": "1", "customer_id": "c-1", "currency": "EUR", "due_date": "2024-05-31"}'
    )
    for path, body in (("/streams/invoice-1", append), ("/commands/CreateInvoice", command)):
        response = await api.http.post(path, content=body, headers=headers)
        assert response.status_code == 415, (path, response.text)
        assert error(response)["type"] == "UnsupportedMediaType"
        assert "application/json" in error(response)["message"]
    assert await api.store.last_position() == 0


async def test_json_with_a_charset_is_json(api: Api) -> None:
    headers = api.as_("admin", **{"Content-Type": "Application/JSON; charset=utf-8"})
    body = b'{"events": [{"type": "A", "data": {}}]}'
    response = await api.http.post("/streams/invoice-1", content=body, headers=headers)
    assert response.status_code == 201, response.text


async def test_the_openapi_document_lists_the_415(api: Api) -> None:
    paths = (await api.http.get("/openapi.json")).json()["paths"]
    assert "415" in paths["/streams/{stream}"]["post"]["responses"]
    assert "415" in paths["/commands/CreateInvoice"]["post"]["responses"]
