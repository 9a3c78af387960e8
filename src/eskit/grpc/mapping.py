"""KurrentDB's messages to eskit's envelopes and back.

- Revisions are versions; commit and prepare positions are both eskit's position.
- Data and metadata are bytes in KurrentDB, and every client gets back the bytes it sent.
  Data under ``application/json`` that is a JSON object in eskit's own (compact) encoding,
  as JSON.stringify, System.Text.Json, Jackson, Go and serde write it, becomes eskit's
  ``data``; custom metadata likewise becomes its ``metadata``. Anything else (JSON that is
  not an object or is spaced differently, such as Python's ``json.dumps``, text, binary) is
  kept as ``RawData`` (``RecordedEvent.raw`` / ``raw_metadata``) and goes back byte for
  byte.
- ``created`` is the time eskit recorded the event, in 100 ns ticks since 1970.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import msgspec

from eskit.grpc.protos import shared_pb2, streams_pb2
from eskit.store.model import (
    ANY,
    JSON_CONTENT_TYPE,
    NO_STREAM,
    STREAM_EXISTS,
    ExpectedVersion,
    JSONObject,
    NewEvent,
    RawData,
    RecordedEvent,
)

OCTET_STREAM = "application/octet-stream"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
RecordedMessage = streams_pb2.ReadResp.ReadEvent.RecordedEvent
MASK64 = (1 << 64) - 1


def uuid_of(message: shared_pb2.UUID) -> uuid.UUID:
    """The UUID of a message, in either of KurrentDB's forms; ``ValueError`` if invalid."""
    if message.WhichOneof("value") == "structured":
        high = message.structured.most_significant_bits & MASK64
        low = message.structured.least_significant_bits & MASK64
        return uuid.UUID(int=(high << 64) | low)
    return uuid.UUID(message.string)


def uuid_message(value: uuid.UUID, structured: bool) -> shared_pb2.UUID:
    if not structured:
        return shared_pb2.UUID(string=str(value))
    high, low = value.int >> 64, value.int & MASK64
    return shared_pb2.UUID(
        structured=shared_pb2.UUID.Structured(
            most_significant_bits=_signed(high), least_significant_bits=_signed(low)
        )
    )


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def expected_of(message: Any, exact: str = "revision") -> ExpectedVersion:
    """The expected version an options message names in its ``expected_stream_revision``
    (``expected_stream_position`` for batch appends) one-of."""
    which = message.WhichOneof(
        "expected_stream_revision" if exact == "revision" else "expected_stream_position"
    )
    if which == "no_stream":
        return NO_STREAM
    if which == "stream_exists":
        return STREAM_EXISTS
    if which == exact:
        return int(getattr(message, exact))
    return ANY


def new_event(proposed: Any) -> NewEvent:
    """The eskit event of a proposed message (append and batch append have the same fields)."""
    properties = proposed.metadata
    event_type = properties.get("type", "")
    if not event_type:
        raise ValueError("an event needs a type (metadata 'type' is missing or empty)")
    content_type = properties.get("content-type", OCTET_STREAM)
    data: JSONObject | RawData = RawData(content_type, bytes(proposed.data))
    if content_type == JSON_CONTENT_TYPE:
        decoded = _object(proposed.data)
        data = data if decoded is None else decoded
    custom = bytes(proposed.custom_metadata)
    metadata: JSONObject | RawData | None = None
    if custom:
        decoded = _object(custom)
        metadata = RawData(OCTET_STREAM, custom) if decoded is None else decoded
    return NewEvent(event_type, data, metadata, uuid_of(proposed.id))


def _object(body: bytes) -> JSONObject | None:
    """``body`` decoded if it is a JSON object that eskit encodes back to the same bytes
    (so that reading it gives the client what it sent), else None."""
    if not body.startswith(b"{"):
        return None
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    if not isinstance(decoded, dict) or msgspec.json.encode(decoded) != body:
        return None
    return decoded


def data_bytes(event: RecordedEvent) -> bytes:
    return event.raw.body if event.raw is not None else msgspec.json.encode(event.data)


def metadata_bytes(event: RecordedEvent) -> bytes:
    if event.raw_metadata is not None:
        return event.raw_metadata
    return msgspec.json.encode(event.metadata) if event.metadata else b""


def ticks(moment: dt.datetime) -> int:
    """100 ns ticks since 1970, as KurrentDB's ``created``."""
    return (moment - EPOCH) // dt.timedelta(microseconds=1) * 10


def recorded(
    event: RecordedEvent, structured: bool, stream: str | None = None, kind: Any = RecordedMessage
) -> Any:
    """The ``RecordedEvent`` message of ``event`` (``stream``: the name to show, when it is
    read through ``$ce-``/``$et-``, which KurrentDB serves as the original event; ``kind``:
    the message class, the persistent subscriptions' has the same fields)."""
    return kind(
        id=uuid_message(event.id, structured),
        stream_identifier=shared_pb2.StreamIdentifier(
            stream_name=(stream or event.stream).encode()
        ),
        stream_revision=event.version,
        prepare_position=event.position,
        commit_position=event.position,
        metadata={
            "type": event.type,
            "content-type": event.content_type,
            "created": str(ticks(event.recorded_at)),
        },
        custom_metadata=metadata_bytes(event),
        data=data_bytes(event),
    )


def read_event(event: RecordedEvent, structured: bool) -> Any:
    """The ``ReadResp`` carrying ``event``."""
    return streams_pb2.ReadResp(
        event=streams_pb2.ReadResp.ReadEvent(
            event=recorded(event, structured), commit_position=event.position
        )
    )


def stream_name(identifier: shared_pb2.StreamIdentifier) -> str:
    try:
        return bytes(identifier.stream_name).decode()
    except UnicodeDecodeError:
        raise ValueError("a stream name must be UTF-8") from None
