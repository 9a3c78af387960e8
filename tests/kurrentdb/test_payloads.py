"""Data and metadata are bytes in KurrentDB: every client gets back the bytes it sent, and
eskit's own API reads them, as ``data`` when they are a JSON object in eskit's encoding and
as ``raw`` / ``raw_metadata`` otherwise. Ids, content types and ``created`` round-trip."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

import pytest
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState

import eskit.sync
from tests.kurrentdb.servers import GrpcProcess

PAYLOADS = [
    pytest.param(
        b'{"order_id":1,"name":"Foo"}',
        "application/json",
        {"order_id": 1, "name": "Foo"},
        id="compact_object",
    ),
    pytest.param(b'{"order_id": 1}', "application/json", None, id="spaced_object"),
    pytest.param(b"I wrote my first event", "application/json", None, id="quickstart_text"),
    pytest.param(b"[1, 2, 3]", "application/json", None, id="json_array"),
    pytest.param(b'"a string"', "application/json", None, id="json_string"),
    pytest.param(bytes(range(256)), "application/octet-stream", None, id="binary"),
    pytest.param(b"", "application/octet-stream", None, id="empty"),
]


@pytest.mark.parametrize(("body", "content_type", "as_data"), PAYLOADS)
def test_data_round_trips_byte_for_byte(
    server: GrpcProcess,
    client: KurrentDBClient,
    stream: str,
    body: bytes,
    content_type: Literal["application/json", "application/octet-stream"],
    as_data: dict[str, object] | None,
) -> None:
    sent = NewEvent(type="Raw", data=body, content_type=content_type, metadata=b'{"by":"me"}')
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    client.append_to_stream(stream, events=sent, current_version=StreamState.NO_STREAM)
    (got,) = client.get_stream(stream)
    assert (got.data, got.content_type, got.metadata, got.id) == (
        body,
        content_type,
        b'{"by":"me"}',
        sent.id,
    )
    assert got.recorded_at is not None
    assert before < got.recorded_at < before + dt.timedelta(minutes=1)
    with eskit.sync.open_store(server.store_url) as store:
        (event,) = store.read_stream(stream)
    assert event.metadata == {"by": "me"}
    assert event.id == sent.id
    assert event.recorded_at == got.recorded_at
    if as_data is not None:
        assert (event.data, event.raw) == (as_data, None)
    else:
        assert event.data == {}
        assert event.raw == eskit.RawData(content_type, body)


def test_metadata_that_is_not_a_json_object_round_trips(
    server: GrpcProcess, client: KurrentDBClient, stream: str
) -> None:
    metadata = [b"not json", b'{"spaced": true}', b"[1]", bytes([0, 1, 255])]
    events = [NewEvent(type="M", data=b"{}", metadata=m) for m in metadata]
    client.append_to_stream(stream, events=events, current_version=StreamState.NO_STREAM)
    assert [e.metadata for e in client.get_stream(stream)] == metadata
    with eskit.sync.open_store(server.store_url) as store:
        read = list(store.read_stream(stream))
    assert [(e.metadata, e.raw_metadata) for e in read] == [({}, m) for m in metadata]


def test_an_event_written_by_eskit_reads_as_compact_json(
    server: GrpcProcess, client: KurrentDBClient
) -> None:
    stream = f"order-{uuid.uuid4().hex}"
    with eskit.sync.open_store(server.store_url) as store:
        store.append(stream, [eskit.NewEvent("Placed", {"total": 9.5, "name": "Zoë"}, {"k": 1})])
    (got,) = client.get_stream(stream)
    assert (got.type, got.content_type) == ("Placed", "application/json")
    assert got.data == '{"total":9.5,"name":"Zoë"}'.encode()
    assert got.metadata == b'{"k":1}'
