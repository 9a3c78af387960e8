"""``$all`` reads forwards and backwards with server-side filters, ``$ce-``/``$et-``
streams from eskit's category and type filters, and stream metadata through ``$$``."""

from __future__ import annotations

import uuid

import pytest
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState


def made(kind: str) -> NewEvent:
    return NewEvent(type=kind, data=b'{"n":1}')


@pytest.fixture
def category() -> str:
    return f"c{uuid.uuid4().hex[:10]}"


def fill(client: KurrentDBClient, category: str) -> list[int]:
    """Three streams of ``category``; the commit positions of their four events."""
    positions = []
    for stream, kinds in (("1", ["Made", "Paid"]), ("2", ["Made"]), ("3", ["Voided"])):
        for kind in kinds:
            positions.append(
                client.append_to_stream(
                    f"{category}-{stream}", events=made(kind), current_version=StreamState.ANY
                )
            )
    return positions


def test_read_all_forwards_and_backwards_from_a_position(
    client: KurrentDBClient, category: str
) -> None:
    _first, second, third, fourth = fill(client, category)
    forwards = list(client.read_all(commit_position=second, limit=2))
    assert [e.commit_position for e in forwards] == [second, third]
    assert forwards[0].prepare_position == forwards[0].commit_position
    backwards = list(client.read_all(backwards=True, limit=2))
    assert [e.commit_position for e in backwards][:2] == sorted(
        [e.commit_position for e in backwards], reverse=True
    )
    before = list(client.read_all(commit_position=fourth, backwards=True, limit=2))
    assert [e.commit_position for e in before] == [third, second]
    assert client.get_commit_position() >= fourth


def test_read_all_with_server_side_filters(client: KurrentDBClient, category: str) -> None:
    first, *_ = fill(client, category)
    by_stream = client.read_all(
        commit_position=first,
        filter_include=[f"{category}-1", f"{category}-3"],
        filter_by_stream_name=True,
    )
    assert [(e.stream_name, e.type) for e in by_stream] == [
        (f"{category}-1", "Made"),
        (f"{category}-1", "Paid"),
        (f"{category}-3", "Voided"),
    ]
    by_prefix = client.read_all(
        commit_position=first,
        filter_include=[f"{category}-2"],
        filter_by_stream_name=True,
        filter_by_prefix=True,
    )
    assert [e.stream_name for e in by_prefix] == [f"{category}-2"]
    types = client.read_all(commit_position=first, filter_include=["Paid", "Voided"])
    assert [e.type for e in types if e.stream_name.startswith(category)] == ["Paid", "Voided"]
    excluded = client.read_all(commit_position=first, filter_exclude=["Made"])
    assert "Made" not in {e.type for e in excluded}
    backwards = client.read_all(
        backwards=True, filter_include=[f"{category}-.*"], filter_by_stream_name=True, limit=2
    )
    assert [e.type for e in backwards] == ["Voided", "Made"]


def test_category_and_type_streams(client: KurrentDBClient, category: str) -> None:
    positions = fill(client, category)
    in_category = client.get_stream(f"$ce-{category}")
    assert [(e.stream_name, e.stream_position) for e in in_category] == [
        (f"{category}-1", 0),
        (f"{category}-1", 1),
        (f"{category}-2", 0),
        (f"{category}-3", 0),
    ]
    assert [e.link.stream_position for e in in_category if e.link] == positions
    last_paid = client.get_stream("$et-Paid", backwards=True, limit=1)
    assert [(e.stream_name, e.type) for e in last_paid] == [(f"{category}-1", "Paid")]
    indexed = client.read_index(f"ce-{category}", commit_position=positions[0])
    assert [e.commit_position for e in indexed] == positions
    by_type = client.read_index("et-Voided", commit_position=positions[0])
    assert [(e.stream_name, e.type) for e in by_type] == [(f"{category}-3", "Voided")]


def test_stream_metadata_round_trips(client: KurrentDBClient, category: str) -> None:
    stream = f"{category}-1"
    assert client.get_stream_metadata(stream) == ({}, StreamState.NO_STREAM)
    client.append_to_stream(
        stream, events=[made(str(n)) for n in range(5)], current_version=StreamState.NO_STREAM
    )
    written = {
        "$maxCount": 2,
        "$tb": 1,
        "$maxAge": 3600,
        "$acl": {"$r": "$all"},  # kept, not enforced: access is by tokens
        "owner": {"team": "billing"},
    }
    client.set_stream_metadata(stream, metadata=written)
    read, _ = client.get_stream_metadata(stream)
    assert read == written
    assert [e.stream_position for e in client.get_stream(stream)] == [3, 4]
    client.set_stream_metadata(stream, metadata={"$tb": 5})
    assert client.get_stream(stream) == ()  # every event is hidden, the stream still exists
    assert client.get_stream_metadata(stream)[0] == {"$tb": 5}
