"""Conformance: payloads kept as bytes (``RawData``) and custom stream metadata keys."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Final

import pytest

from eskit.store.base import EventStore
from eskit.store.model import (
    Append,
    NewEvent,
    RawData,
    RecordedEvent,
    StreamMetadata,
)
from eskit.testing.conformance.helpers import ConformanceBase, collect, log_of, new, numbered

RAW_EXAMPLES: Final = [
    RawData("application/json", b"[1,2]"),
    RawData("application/json", b'"s"'),
    RawData("application/json", b"3"),
    RawData("application/json", b"I wrote my first event"),
    RawData("application/json", b'{"not": "kept as an object",  "spaces": 1 }'),
    RawData("application/octet-stream", bytes(range(256))),
    RawData("application/octet-stream", b""),
    RawData("", b"\x00\xff"),
    RawData("text/plain; charset=utf-8", "é ✓".encode()),
]
"""Payloads a KurrentDB client may send that are not eskit JSON objects."""


def _raw_events(metadata: bytes | None = None) -> list[NewEvent]:
    meta = None if metadata is None else RawData("", metadata)
    return [NewEvent(f"Raw{i}", raw, meta, uuid.uuid4()) for i, raw in enumerate(RAW_EXAMPLES)]


async def _every_read(store: EventStore, stream: str) -> list[list[RecordedEvent]]:
    """The stream's events as each read gives them, in version order."""
    forwards = await collect(store.read_stream(stream))
    backwards = await collect(store.read_stream(stream, backwards=True))
    log = await collect(store.read_all())
    log_backwards = await collect(store.read_all(backwards=True))
    found = [await store.find_event(e.id) for e in forwards]
    return [forwards, backwards[::-1], log, log_backwards[::-1], [e for e in found if e]]


class RawPayloadConformance(ConformanceBase):
    """Data and metadata that are not JSON objects round-trip byte for byte; stream metadata
    keeps custom keys."""

    async def test_raw_data_round_trips_byte_for_byte_through_every_read(
        self, store: EventStore
    ) -> None:
        sent = _raw_events()
        await store.append("blob-1", sent)
        for read in await _every_read(store, "blob-1"):
            assert [e.raw for e in read] == RAW_EXAMPLES
            assert all(type(e.raw.body) is bytes for e in read if e.raw)
            assert [e.content_type for e in read] == [r.content_type for r in RAW_EXAMPLES]
            assert all(e.data == {} and e.metadata == {} for e in read)
            assert all(e.raw_metadata is None for e in read)
            assert [e.id for e in read] == [e.id for e in sent]

    async def test_raw_metadata_round_trips_byte_for_byte(self, store: EventStore) -> None:
        blob = bytes(range(255, -1, -1))
        await store.append("blob-1", _raw_events(metadata=blob))
        await store.append("blob-1", [NewEvent("Json", {"a": 1}, RawData("x", b"not json"))])
        for read in await _every_read(store, "blob-1"):
            assert [e.raw_metadata for e in read] == [blob] * len(RAW_EXAMPLES) + [b"not json"]
            assert read[-1].data == {"a": 1}
            assert read[-1].raw is None
            assert read[-1].content_type == "application/json"
            assert all(e.metadata == {} for e in read)

    async def test_raw_and_json_events_mix_in_one_append(self, store: EventStore) -> None:
        events = [
            new("A", n=1),
            NewEvent("B", RawData("application/json", b"[1,2]"), {"m": 1}),
            NewEvent("C", {"n": 3}),
        ]
        await store.append("mix-1", events)
        read = await collect(store.read_stream("mix-1"))
        assert [(e.data, e.raw, e.metadata) for e in read] == [
            ({"n": 1}, None, {}),
            ({}, RawData("application/json", b"[1,2]"), {"m": 1}),
            ({"n": 3}, None, {}),
        ]

    async def test_json_object_data_is_not_raw(self, store: EventStore) -> None:
        await store.append("order-1", [NewEvent("A", {"x": [1, 2]}, {"m": "v"})])
        (event,) = await collect(store.read_stream("order-1"))
        assert (event.raw, event.raw_metadata) == (None, None)
        assert event.content_type == "application/json"

    async def test_raw_events_read_with_filters_and_append_many(self, store: EventStore) -> None:
        raw = RawData("application/octet-stream", b"\x01\x02")
        await store.append_many(
            [Append("blob-1", [NewEvent("Blob", raw)]), Append("order-1", numbered(2))]
        )
        (found,) = await collect(store.read_all(types=["Blob"]))
        assert found.raw == raw
        (backwards,) = await collect(store.read_all(category="blob", backwards=True))
        assert backwards.raw == raw

    async def test_raw_events_retried_with_the_same_ids_write_nothing(
        self, store: EventStore
    ) -> None:
        sent = _raw_events(metadata=b"m")
        first = await store.append("blob-1", sent)
        again = await store.append("blob-1", sent)
        assert again == first
        assert len(await log_of(store)) == len(sent)

    async def test_raw_bytes_count_towards_max_event_size(self, tmp_path: Path) -> None:
        async with self.make_store(tmp_path, max_event_size=1000) as store:
            await store.append("blob-1", [NewEvent("Raw", RawData("", bytes(996)))])
            too_big = NewEvent("Raw", RawData("", bytes(999)), RawData("", b"xy"))
            with pytest.raises(ValueError, match="limit is 1000"):
                await store.append("blob-1", [too_big])
            assert len(await log_of(store)) == 1

    @pytest.mark.parametrize(
        ("raw", "error"),
        [
            (RawData("application/json", "text"), TypeError),  # type: ignore[arg-type]
            (RawData("application/json", bytearray(b"x")), TypeError),  # type: ignore[arg-type]
            (RawData(None, b"x"), TypeError),  # type: ignore[arg-type]
            (RawData("line\nbreak", b"x"), ValueError),
            (RawData("x" * 201, b"x"), ValueError),
        ],
    )
    async def test_invalid_raw_data_is_refused_and_nothing_written(
        self, store: EventStore, raw: RawData, error: type[Exception]
    ) -> None:
        for event in (NewEvent("Raw", raw), NewEvent("Raw", {"a": 1}, raw)):
            with pytest.raises(error):
                await store.append("blob-1", [new(), event])
        assert await log_of(store) == []

    # == custom stream metadata keys =======================================================

    async def test_metadata_custom_keys_round_trip_exactly(self, store: EventStore) -> None:
        custom: dict[str, Any] = {"$acl": {"$r": ["ops"]}, "owner": "me", "n": [1, 2.5, None]}
        metadata = StreamMetadata(max_count=3, custom=custom)
        await store.set_stream_metadata("order-1", metadata)
        found = await store.get_stream_metadata("order-1")
        assert found == metadata
        assert list(found.custom or {}) == ["$acl", "owner", "n"]  # key order kept
        await store.set_stream_metadata("order-1", StreamMetadata(custom={"only": True}))
        assert await store.get_stream_metadata("order-1") == StreamMetadata(custom={"only": True})
        await store.set_stream_metadata("order-1", StreamMetadata())
        assert await store.get_stream_metadata("order-1") == StreamMetadata()

    async def test_metadata_custom_keys_survive_a_delete(self, store: EventStore) -> None:
        await store.append("order-1", numbered(2))
        await store.set_stream_metadata("order-1", StreamMetadata(custom={"k": "v"}))
        await store.delete_stream("order-1")
        found = await store.get_stream_metadata("order-1")
        assert found == StreamMetadata(truncate_before=2, custom={"k": "v"})

    async def test_metadata_custom_keys_change_no_read(self, store: EventStore) -> None:
        await store.append("order-1", numbered(3))
        custom = {"$maxCount": 1, "$tb": 2, "truncate_before": 5}
        await store.set_stream_metadata("order-1", StreamMetadata(custom=custom))
        assert len(await collect(store.read_stream("order-1"))) == 3

    @pytest.mark.parametrize(
        ("custom", "error"),
        [
            ([1, 2], TypeError),
            ({"when": object()}, ValueError),
            ({1: "non-string key"}, ValueError),
            ({"nan": float("nan")}, ValueError),
        ],
    )
    async def test_invalid_metadata_custom_keys_are_refused(
        self, store: EventStore, custom: Any, error: type[Exception]
    ) -> None:
        with pytest.raises(error, match="custom"):
            await store.set_stream_metadata("order-1", StreamMetadata(custom=custom))
        assert await store.get_stream_metadata("order-1") == StreamMetadata()
