"""Streams and the global log over HTTP: reading in pages and appending with an expected
version on SQLite and PostgreSQL (``any_api``), and every bad input answered with a clear
4xx (``api``: the web layer's own checks, the same whatever the backend)."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

import eskit
from eskit.store.archive import archive
from tests.web.api import Api, error

pytestmark = pytest.mark.anyio


async def test_append_then_read_the_stream_back(any_api: Api) -> None:
    response = await any_api.append(
        "invoice-1", "Created", "Paid", **{"Expected-Version": "no_stream"}
    )
    assert response.status_code == 201, response.text
    assert response.json() == {
        "stream": "invoice-1",
        "last_version": 1,
        "last_position": 2,
        "count": 2,
    }
    page = (await any_api.http.get("/streams/invoice-1", headers=any_api.as_("reader"))).json()
    assert [(e["version"], e["type"], e["data"]) for e in page["events"]] == [
        (0, "Created", {"n": 0}),
        (1, "Paid", {"n": 1}),
    ]
    assert page["next_from_version"] is None
    assert page["next"] is None
    stored = [e async for e in any_api.store.read_stream("invoice-1")]
    assert [str(e.id) for e in stored] == [e["id"] for e in page["events"]]


async def test_a_stream_reads_in_pages_both_ways(any_api: Api) -> None:
    await any_api.append("invoice-1", *[f"E{i}" for i in range(5)])
    seen, link = [], "/streams/invoice-1?limit=2"
    while link is not None:
        page = (await any_api.http.get(link, headers=any_api.as_("reader"))).json()
        seen += [e["version"] for e in page["events"]]
        link = page["next"]
    assert seen == [0, 1, 2, 3, 4]
    newest = await any_api.http.get(
        "/streams/invoice-1",
        params={"backwards": "true", "limit": 2},
        headers=any_api.as_("reader"),
    )
    assert [e["version"] for e in newest.json()["events"]] == [4, 3]
    assert newest.json()["next_from_version"] == 2


async def test_a_stream_that_never_existed_reads_as_empty(any_api: Api) -> None:
    response = await any_api.http.get("/streams/invoice-404", headers=any_api.as_("reader"))
    assert response.status_code == 200
    assert response.json()["events"] == []


async def test_an_odd_stream_name_travels_percent_encoded(api: Api) -> None:
    name = "invoice-a/b c?d#é"
    path = f"/streams/{urllib.parse.quote(name, safe='')}"
    appended = await api.http.post(
        path, json={"events": [{"type": "T", "data": {}}]}, headers=api.as_("admin")
    )
    assert appended.status_code == 201, appended.text
    assert await api.store.stream_version(name) == 0
    read = await api.http.get(path, headers=api.as_("reader"))
    assert read.json()["stream"] == name
    assert len(read.json()["events"]) == 1


async def test_a_version_conflict_answers_409_with_the_actual_version(any_api: Api) -> None:
    await any_api.append("invoice-1", "Created")
    response = await any_api.append("invoice-1", "Paid", **{"Expected-Version": "5"})
    assert response.status_code == 409
    assert error(response) == {
        "type": "WrongExpectedVersion",
        "message": "stream 'invoice-1': expected version 5, but the stream is at version 0",
        "stream": "invoice-1",
        "expected": 5,
        "actual": 0,
    }
    missing = await any_api.append("invoice-2", "Paid", **{"Expected-Version": "stream_exists"})
    assert missing.status_code == 409
    assert error(missing)["actual"] is None
    assert error(missing)["expected"] == "stream_exists"
    assert await any_api.store.stream_version("invoice-2") is None


async def test_a_retried_append_with_event_ids_writes_nothing_twice(any_api: Api) -> None:
    body = {"events": [{"type": "Paid", "data": {}, "id": "0e7c5b0e-8f11-4a37-9a6b-1f1d0c9a7a01"}]}
    headers = any_api.as_("writer", **{"Expected-Version": "no_stream"})
    first = await any_api.http.post("/streams/invoice-1", json=body, headers=headers)
    again = await any_api.http.post("/streams/invoice-1", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert await any_api.store.last_position() == 1


async def test_a_tombstoned_stream_answers_410(any_api: Api) -> None:
    await any_api.append("invoice-1", "Created")
    await any_api.store.tombstone_stream("invoice-1")
    read = await any_api.http.get("/streams/invoice-1", headers=any_api.as_("reader"))
    write = await any_api.append("invoice-1", "Paid")
    assert read.status_code == write.status_code == 410
    assert error(read)["type"] == "StreamDeleted"


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "not valid JSON"),
        (b'{"events": []}', 422, "length >= 1 - at `$.events`"),
        (b'{"events": [{"type": "T"}]}', 422, "`data`"),
        (b'{"events": [{"type": "T", "data": []}]}', 422, "$.events[0].data"),
        (b'{"events": [{"type": "T", "data": {}}], "extra": 1}', 422, "extra"),
        (b'{"events": [{"type": "", "data": {}}]}', 422, "event type"),
        (b'{"events": [{"type": "T", "data": {}, "id": "x"}]}', 422, "$.events[0].id"),
        (b'{"events": [{"type": "T", "data": {"n": NaN}}]}', 400, "not valid JSON"),
    ],
)
async def test_a_bad_append_body_is_refused_and_writes_nothing(
    api: Api, body: bytes, status: int, says: str
) -> None:
    headers = api.as_("admin", **{"Content-Type": "application/json"})
    response = await api.http.post("/streams/invoice-1", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert says in error(response)["message"]
    assert await api.store.last_position() == 0


@pytest.mark.parametrize("header", ["5x", "-1", "ANY ", "next", "", "9" * 30])
async def test_a_bad_expected_version_header_is_a_400(api: Api, header: str) -> None:
    response = await api.append("invoice-1", "T", **{"Expected-Version": header})
    if header.strip().lower() == "any":
        assert response.status_code == 201
        return
    assert response.status_code == 400, response.text
    assert error(response)["message"].startswith("Expected-Version must be")


@pytest.mark.parametrize("name", ["$system", "a" * 201, "bad\x01name", "two\nlines"])
async def test_an_invalid_stream_name_is_a_422(any_api: Api, name: str) -> None:
    path = f"/streams/{urllib.parse.quote(name, safe='')}"
    read = await any_api.http.get(path, headers=any_api.as_("admin"))
    write = await any_api.http.post(
        path, json={"events": [{"type": "T", "data": {}}]}, headers=any_api.as_("admin")
    )
    assert read.status_code == write.status_code == 422
    assert "stream name" in error(read)["message"]


async def test_a_body_over_the_limit_is_a_413(api: Api) -> None:
    big = {"events": [{"type": "T", "data": {"blob": "x" * (1024 * 1024)}}]}
    response = await api.http.post("/streams/invoice-1", json=big, headers=api.as_("admin"))
    assert response.status_code == 413
    assert error(response)["type"] == "PayloadTooLarge"

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"events": [{"type": "T", "data": {"blob": "'
        for _ in range(300):
            yield b"x" * 4096
        yield b'"}}]}'

    headers = api.as_("admin", **{"Content-Type": "application/json"})
    streamed = await api.http.post("/streams/invoice-1", content=chunks(), headers=headers)
    assert streamed.status_code == 413
    assert await api.store.last_position() == 0


async def test_the_log_reads_in_pages_with_a_next_link(any_api: Api) -> None:
    for i in range(5):
        await any_api.append(f"invoice-{i}", "Created")
        await any_api.append(f"customer-{i}", "Registered")
    positions, link = [], "/events?limit=3&category=invoice"
    for _ in range(4):
        page = (await any_api.http.get(link, headers=any_api.as_("reader"))).json()
        positions += [e["position"] for e in page["events"]]
        link = page["next"]
        assert "category=invoice" in link
        assert "limit=3" in link
    assert positions == [1, 3, 5, 7, 9]
    assert page["events"] == []
    assert page["next_after"] == 10
    typed = await any_api.http.get(
        "/events",
        params=[("types", "Registered"), ("types", "Nothing"), ("after", "6")],
        headers=any_api.as_("reader"),
    )
    assert [e["position"] for e in typed.json()["events"]] == [8, 10]


@pytest.mark.parametrize("query", ["after=-1", "limit=0", "limit=1001", "after=x", "limit=1.5"])
async def test_bad_log_parameters_are_a_422_naming_them(api: Api, query: str) -> None:
    response = await api.http.get(f"/events?{query}", headers=api.as_("reader"))
    assert response.status_code == 422
    assert query.split("=")[0] in error(response)["message"]


async def test_unknown_paths_and_methods_answer_json(api: Api) -> None:
    missing = await api.http.get("/nowhere")
    assert missing.status_code == 404
    assert error(missing)["type"] == "NotFound"
    wrong = await api.http.delete("/events")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET"
    both = await api.http.put("/streams/invoice-1")
    assert both.headers["allow"] == "GET, POST"


async def test_the_openapi_document_and_docs_are_served(api: Api) -> None:
    document = (await api.http.get("/openapi.json")).json()
    operations = {op["operationId"] for path in document["paths"].values() for op in path.values()}
    assert {"read_stream", "append_to_stream", "read_log", "follow_log"} <= operations
    assert document["info"]["version"] == eskit.__version__
    assert "command_CreateInvoice" in operations
    schemas = document["components"]["schemas"]
    assert schemas["CreateInvoice"]["required"] == [
        "invoice_id",
        "customer_id",
        "currency",
        "due_date",
    ]
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    docs = await api.http.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


async def test_store_unavailable_is_a_503_that_says_retry(any_api: Api) -> None:
    await any_api.store.close()
    response = await any_api.http.get("/streams/invoice-1", headers=any_api.as_("reader"))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert error(response)["type"] == "StoreClosed"
    await any_api.store.open()
    assert isinstance(any_api.store, eskit.EventStore)


async def test_appended_events_name_the_token_that_wrote_them(api: Api) -> None:
    """Who did what: the server stamps the token's name as ``user``; a body cannot claim
    another's name."""
    events = [{"type": "Paid", "data": {}, "metadata": {"user": "admin", "note": "kept"}}]
    response = await api.http.post(
        "/streams/invoice-1", json={"events": events}, headers=api.as_("writer")
    )
    assert response.status_code == 201, response.text
    (stored,) = [e async for e in api.store.read_stream("invoice-1")]
    assert stored.metadata == {"user": "writer", "note": "kept"}


async def test_events_kept_as_bytes_read_back_as_base64_with_their_content_type(
    any_api: Api,
) -> None:
    """Reads of a stream and of the log show a raw event's bytes as base64 beside its
    content type; other events carry no raw fields at all."""
    body = bytes(range(256))
    await any_api.store.append(
        "blob-1",
        [
            eskit.NewEvent("Blob", eskit.RawData("application/octet-stream", body), {"m": 1}),
            eskit.NewEvent("Note", {"n": 1}, eskit.RawData("", b"I wrote my first event")),
        ],
    )
    for path in ("/streams/blob-1", "/events"):
        events = (await any_api.http.get(path, headers=any_api.as_("reader"))).json()["events"]
        blob, note = events
        assert blob["data"] == {}
        assert blob["raw"] == {
            "content_type": "application/octet-stream",
            "body": base64.b64encode(body).decode(),
        }
        assert "raw_metadata" not in blob
        assert (note["data"], note["metadata"]) == ({"n": 1}, {})
        assert base64.b64decode(note["raw_metadata"]) == b"I wrote my first event"
        assert "raw" not in note


def test_a_raw_event_encodes_as_the_api_shows_it() -> None:
    """The live feed and brokers encode RecordedEvent the same way (msgspec)."""
    raw = eskit.RawData("text/plain", b"hi")
    event = eskit.RecordedEvent(
        uuid.uuid4(), "blob-1", 0, 1, "Blob", {}, {}, dt.datetime.now(dt.UTC), raw, b"m"
    )
    encoded = msgspec.json.decode(msgspec.json.encode(event))
    assert encoded["raw"] == {"content_type": "text/plain", "body": "aGk="}
    assert encoded["raw_metadata"] == "bQ=="
    assert msgspec.json.decode(msgspec.json.encode(event), type=eskit.RecordedEvent) == event


async def test_a_stream_reads_through_to_the_servers_archive(any_api: Api, tmp_path: Path) -> None:
    await any_api.append("invoice-1", "E0", "E1", "E2")
    shelf = tmp_path / "2025"
    store, later = any_api.store, dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    now = store.clock
    store.clock = lambda: later
    report = await archive(store, shelf, category="invoice", older_than=dt.timedelta(days=1))
    store.clock = now
    assert report.removed == 3
    await any_api.append("invoice-1", "E3")
    reader = any_api.as_("reader")
    through: dict[str, str | int] = {"through_archive": "true", "limit": 2}

    refused = await any_api.http.get("/streams/invoice-1", params=through, headers=reader)
    assert refused.status_code == 422
    assert "no archive to read through to" in error(refused)["message"]

    context = any_api.app.state.eskit
    context.settings = dataclasses.replace(context.settings, archive=shelf)
    seen, link = [], "/streams/invoice-1?through_archive=true&limit=2"
    while link is not None:
        page = (await any_api.http.get(link, headers=reader)).json()
        seen += [(e["version"], e["type"]) for e in page["events"]]
        link = page["next"]
    assert seen == [(0, "E0"), (1, "E1"), (2, "E2"), (3, "E3")]
    store_only = (await any_api.http.get("/streams/invoice-1", headers=reader)).json()
    assert [e["version"] for e in store_only["events"]] == [3]
    backwards = await any_api.http.get(
        "/streams/invoice-1", params={**through, "backwards": "true"}, headers=reader
    )
    assert backwards.status_code == 422
    assert "forwards only" in error(backwards)["message"]
