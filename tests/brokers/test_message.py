"""The shared message format, for every stream name and event the store accepts."""

from __future__ import annotations

import datetime as dt
import urllib.parse
import uuid

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as s

from eskit.brokers import message
from eskit.brokers.nats import subject
from eskit.store.model import RecordedEvent

names = s.text(
    s.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=200
).filter(lambda n: n.isprintable() and not n.startswith("$"))
json_values = s.recursive(
    s.none() | s.booleans() | s.integers(-(2**53), 2**53) | s.text(max_size=20),
    lambda inner: (
        s.lists(inner, max_size=3) | s.dictionaries(s.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
events = s.builds(
    RecordedEvent,
    id=s.uuids(),
    stream=names,
    version=s.integers(0, 2**40),
    position=s.integers(1, 2**50),
    type=names,
    data=s.dictionaries(s.text(max_size=10), json_values, max_size=4),
    metadata=s.dictionaries(s.text(max_size=10), json_values, max_size=2),
    recorded_at=s.datetimes(timezones=s.just(dt.UTC)),
)


@given(names, names)
def test_tokens_are_safe_and_unambiguous(a: str, b: str) -> None:
    token = message.token(a)
    assert token.isascii()
    assert not set(token) & set(". *>\t\r\n:")
    assert urllib.parse.unquote(token) == a
    assert (message.token(a) == message.token(b)) == (a == b)
    assert token != message.token("")


@given(events)
def test_bodies_carry_the_event_as_recorded(event: RecordedEvent) -> None:
    assert message.decode(message.body(event)) == event
    headers = message.headers(event)
    assert headers[message.EVENT_ID] == str(event.id)
    assert headers[message.POSITION] == str(event.position)
    assert all(value.isascii() for value in headers.values())


@given(events, s.integers(1, 64))
def test_every_stream_has_one_subject_of_four_tokens_and_one_routing_key(
    event: RecordedEvent, partitions: int
) -> None:
    tokens = subject("eskit", event, partitions).split(".")
    assert len(tokens) == 4
    assert all(tokens)
    assert tokens[3] == str(message.partition_of(event.stream, partitions))
    assert len(message.routing_key(event).encode()) <= 255


def test_a_stream_with_an_empty_category_gets_a_valid_subject() -> None:
    event = msgspec.structs.replace(_event(), stream="-x")
    assert subject("eskit", event, 4).split(".")[:3] == ["eskit", "%", "-x"]
    assert message.routing_key(event) == "%.-x"


def test_bad_bodies_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="bad JSON"):
        message.decode(b"{not json")
    with pytest.raises(ValueError, match="not an eskit event message"):
        message.decode(b'{"id": "x"}')
    assert message.partition_of("invoice-42", 16) == message.partition_of("invoice-42", 16)
    assert message.token("invoice-4.2") == "invoice-4%2E2"
    assert message.token("") == "%"  # the category of "-x"
    assert uuid.UUID(message.headers(_event())[message.EVENT_ID]) == _event().id


def _event() -> RecordedEvent:
    return RecordedEvent(
        uuid.UUID(int=1), "a-1", 0, 1, "T", {}, {}, dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    )
