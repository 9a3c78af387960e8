"""An event's ``ReadResp`` written in wire format (``eskit.grpc.wire``) parses as the
message built from protobuf objects would, for any event (hypothesis)."""

from __future__ import annotations

import datetime as dt
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from eskit.grpc import wire
from eskit.grpc.mapping import recorded
from eskit.grpc.protos import shared_pb2, streams_pb2
from eskit.store.model import RawData, RecordedEvent

Resp = streams_pb2.ReadResp
Message = Resp.ReadEvent.RecordedEvent


def built(event: RecordedEvent, structured: bool, link: str | None) -> Resp:
    """The message as protobuf objects make it (the oracle)."""
    message = recorded(event, structured)
    pointer = None
    if link is not None:
        pointer = Message(
            id=message.id,
            stream_identifier=shared_pb2.StreamIdentifier(stream_name=link.encode()),
            stream_revision=event.position,
            prepare_position=event.position,
            commit_position=event.position,
            metadata={
                "type": "$>",
                "content-type": "application/octet-stream",
                "created": message.metadata["created"],
            },
            data=f"{event.version}@{event.stream}".encode(),
        )
    return Resp(event=Resp.ReadEvent(event=message, link=pointer, commit_position=event.position))


TEXT = st.text(min_size=1, max_size=300)
JSON = st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3)


@st.composite
def events(draw: st.DrawFn) -> RecordedEvent:
    raw = draw(st.none() | st.builds(RawData, st.text(max_size=40), st.binary(max_size=400)))
    return RecordedEvent(
        uuid.UUID(int=draw(st.integers(0, 2**128 - 1))),
        draw(TEXT),
        draw(st.integers(0, 2**63 - 1)),
        draw(st.integers(0, 2**63 - 1)),
        draw(TEXT),
        {} if raw is not None else draw(JSON),
        draw(JSON),
        draw(st.datetimes(min_value=dt.datetime(1970, 1, 2), timezones=st.just(dt.UTC))),
        raw,
        draw(st.none() | st.binary(max_size=200)),
    )


@settings(max_examples=300, deadline=None)
@given(events(), st.booleans(), st.none() | TEXT)
def test_an_event_in_wire_format_is_the_message(
    event: RecordedEvent, structured: bool, link: str | None
) -> None:
    assert Resp.FromString(wire.read_event(event, structured, link)) == built(
        event, structured, link
    )


def test_varints() -> None:
    for value in (0, 1, 127, 128, 300, 2**32, 2**63, 2**64 - 1):
        message = Resp(first_stream_position=value)
        assert b"\x28" + wire.varint(value) == message.SerializeToString()
