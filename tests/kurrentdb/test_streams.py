"""KurrentDB's Python client appends, reads and deletes through ``eskit grpc``, on SQLite
and PostgreSQL."""

from __future__ import annotations

import json
import uuid

import grpc
import pytest
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import (
    NotFoundError,
    StreamIsDeletedError,
    StreamTombstonedError,
    WrongCurrentVersionError,
)

from eskit.grpc.protos import streams_pb2, streams_pb2_grpc


def event(kind: str = "OrderPlaced", **data: object) -> NewEvent:
    return NewEvent(type=kind, data=json.dumps(data, separators=(",", ":")).encode())


def test_append_with_each_expected_state(client: KurrentDBClient, stream: str) -> None:
    first = client.append_to_stream(
        stream, events=event(n=0), current_version=StreamState.NO_STREAM
    )
    with pytest.raises(WrongCurrentVersionError) as refused:
        client.append_to_stream(stream, events=event(n=9), current_version=StreamState.NO_STREAM)
    assert refused.value.actual_version == 0
    client.append_to_stream(stream, events=event(n=1), current_version=StreamState.EXISTS)
    client.append_to_stream(stream, events=event(n=2), current_version=1)
    with pytest.raises(WrongCurrentVersionError) as stale:
        client.append_to_stream(stream, events=[event(n=9), event(n=9)], current_version=1)
    assert stale.value.actual_version == 2
    last = client.append_to_stream(
        stream, events=[event(n=3), event(n=4)], current_version=StreamState.ANY
    )
    assert last > first
    assert [json.loads(e.data)["n"] for e in client.get_stream(stream)] == [0, 1, 2, 3, 4]
    assert client.get_current_version(stream) == 4
    missing = f"order-{uuid.uuid4().hex}"
    with pytest.raises(WrongCurrentVersionError) as absent:
        client.append_to_stream(missing, events=event(), current_version=StreamState.EXISTS)
    assert absent.value.actual_version is StreamState.NO_STREAM


def test_a_retried_append_is_idempotent(client: KurrentDBClient, stream: str) -> None:
    events = [event(n=0), event(n=1)]
    client.append_to_stream(stream, events=events, current_version=StreamState.NO_STREAM)
    client.append_to_stream(stream, events=events, current_version=StreamState.NO_STREAM)
    assert len(client.get_stream(stream)) == 2


def test_reads_forwards_and_backwards_from_a_revision(client: KurrentDBClient, stream: str) -> None:
    client.append_to_stream(
        stream, events=[event(n=n) for n in range(5)], current_version=StreamState.NO_STREAM
    )
    forwards = client.get_stream(stream, stream_position=2, limit=2)
    assert [e.stream_position for e in forwards] == [2, 3]
    backwards = client.get_stream(stream, backwards=True, limit=3)
    assert [e.stream_position for e in backwards] == [4, 3, 2]
    from_two = client.get_stream(stream, stream_position=2, backwards=True)
    assert [e.stream_position for e in from_two] == [2, 1, 0]
    with pytest.raises(NotFoundError):
        client.get_stream(f"order-{uuid.uuid4().hex}")


def test_delete_and_tombstone(client: KurrentDBClient, stream: str) -> None:
    client.append_to_stream(
        stream, events=[event(), event()], current_version=StreamState.NO_STREAM
    )
    with pytest.raises(WrongCurrentVersionError):
        client.delete_stream(stream, current_version=0)
    client.delete_stream(stream, current_version=1)
    with pytest.raises(NotFoundError):
        client.get_stream(stream)
    with pytest.raises(WrongCurrentVersionError) as stale:
        client.append_to_stream(stream, events=event(n=2), current_version=0)
    assert stale.value.actual_version is StreamState.NO_STREAM
    # a soft-deleted stream is at its last revision (KurrentDB) and absent (eskit): both match
    client.delete_stream(stream, current_version=1)
    client.delete_stream(stream, current_version=StreamState.NO_STREAM)
    client.append_to_stream(stream, events=event(n=2), current_version=1)
    assert [e.stream_position for e in client.get_stream(stream)] == [2]
    client.delete_stream(stream, current_version=2)
    client.append_to_stream(stream, events=event(n=3), current_version=StreamState.NO_STREAM)
    assert [e.stream_position for e in client.get_stream(stream)] == [3]
    client.delete_stream(stream, current_version=3)
    client.tombstone_stream(stream, current_version=3)
    with pytest.raises(StreamIsDeletedError):
        client.get_stream(stream)
    with pytest.raises(StreamTombstonedError):  # KurrentDB 25's rich error detail
        client.append_to_stream(stream, events=event(), current_version=StreamState.ANY)
    with pytest.raises(StreamIsDeletedError):  # batch appends carry KurrentDB 20's detail
        client.append_to_stream(stream, events=[event(), event()], current_version=StreamState.ANY)


def test_reads_from_the_start_and_the_end(client: KurrentDBClient, stream: str) -> None:
    client.append_to_stream(
        stream, events=[event(n=n) for n in range(3)], current_version=StreamState.NO_STREAM
    )
    with grpc.insecure_channel(client.connection_target) as channel:
        stub = streams_pb2_grpc.StreamsStub(channel)  # type: ignore[no-untyped-call]

        def read(where: str, backwards: bool, on_all: bool = False) -> list[int]:
            options = streams_pb2.ReadReq.Options(count=10)
            if backwards:
                options.read_direction = streams_pb2.ReadReq.Options.Backwards
            place = options.all if on_all else options.stream
            if not on_all:
                options.stream.stream_identifier.stream_name = stream.encode()
            getattr(place, where).SetInParent()
            options.no_filter.SetInParent()
            options.uuid_option.string.SetInParent()
            found = stub.Read(streams_pb2.ReadReq(options=options))
            return [r.event.event.stream_revision for r in found if r.HasField("event")]

        assert read("start", backwards=False) == [0, 1, 2]
        assert read("start", backwards=True) == [0]
        assert read("end", backwards=False) == []
        assert read("end", backwards=True) == [2, 1, 0]
        assert read("start", backwards=True, on_all=True) == []
        assert read("end", backwards=False, on_all=True) == []
