"""Conformance: invalid input is refused, hostile strings are just data."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from eskit.errors import StreamDeleted
from eskit.store.base import EventStore
from eskit.store.model import NO_STREAM, Append, NewEvent, Snapshot, StreamMetadata
from eskit.testing.conformance.helpers import (
    HOSTILE_NAMES,
    INVALID_NAMES,
    NOT_JSON,
    ConformanceBase,
    collect,
    log_of,
    new,
    numbered,
    positions,
    versions,
)


class ValidationConformance(ConformanceBase):
    """Arguments the contract refuses, and names that break naive SQL or formatting."""

    # == invalid input ==========================================================================

    @pytest.mark.parametrize("name", list(INVALID_NAMES))
    async def test_invalid_stream_name_is_refused_everywhere(
        self, store: EventStore, name: str
    ) -> None:
        """Every call naming a stream checks the name before touching the store."""
        bad: Any = INVALID_NAMES[name]
        with pytest.raises(ValueError):
            await store.append(bad, [new()])
        with pytest.raises(ValueError):
            await collect(store.read_stream(bad))
        with pytest.raises(ValueError):
            await store.stream_version(bad)
        with pytest.raises(ValueError):
            await store.delete_stream(bad)
        with pytest.raises(ValueError):
            await store.tombstone_stream(bad)
        with pytest.raises(ValueError):
            await store.set_stream_metadata(bad, StreamMetadata(max_count=1))
        with pytest.raises(ValueError):
            await store.get_stream_metadata(bad)
        with pytest.raises(ValueError):
            await store.append_many([Append(bad, [new()])])
        with pytest.raises(ValueError):
            await store.save_snapshot(Snapshot(bad, 0, 1, {}))
        with pytest.raises(ValueError):
            await store.load_snapshot(bad, 1)
        assert await store.last_position() == 0

    @pytest.mark.parametrize("name", list(INVALID_NAMES))
    async def test_invalid_event_type_is_refused(self, store: EventStore, name: str) -> None:
        with pytest.raises(ValueError):
            await store.append("order-1", [new(), NewEvent(INVALID_NAMES[name], {})])
        assert await store.last_position() == 0

    @pytest.mark.parametrize("name", ["empty", "newline", "dollar", "201_chars", "int", "bytes"])
    async def test_invalid_category_filter_is_refused(self, store: EventStore, name: str) -> None:
        bad: Any = INVALID_NAMES[name]
        with pytest.raises(ValueError):
            await collect(store.read_all(category=bad))
        with pytest.raises(ValueError):
            await anext(store.subscribe(category=bad))

    async def test_invalid_stream_name_at_200_characters_is_fine(self, store: EventStore) -> None:
        name = "x" * 200
        await store.append(name, [new()])
        assert await versions(store, name) == [0]
        assert (await log_of(store))[0].stream == name

    @pytest.mark.parametrize("kind", list(NOT_JSON))
    async def test_invalid_data_not_json_is_refused(self, store: EventStore, kind: str) -> None:
        with pytest.raises(ValueError):
            await store.append("order-1", [NewEvent("A", NOT_JSON[kind])])
        assert await store.last_position() == 0

    @pytest.mark.parametrize("kind", ["set", "datetime", "nan", "int_key"])
    async def test_invalid_metadata_not_json_is_refused(self, store: EventStore, kind: str) -> None:
        with pytest.raises(ValueError):
            await store.append("order-1", [NewEvent("A", {}, metadata=NOT_JSON[kind])])
        assert await store.last_position() == 0

    @pytest.mark.parametrize(
        "data", [[1, 2], "text", None, 42, ("a", 1)], ids=["list", "str", "none", "int", "tuple"]
    )
    async def test_invalid_data_not_a_dict_is_refused(self, store: EventStore, data: Any) -> None:
        with pytest.raises(ValueError):
            await store.append("order-1", [NewEvent("A", data)])
        assert await store.last_position() == 0

    async def test_invalid_empty_event_list_is_refused(self, store: EventStore) -> None:
        with pytest.raises(ValueError):
            await store.append("order-1", [])
        with pytest.raises(ValueError):
            await store.append("order-1", ())
        assert await store.stream_version("order-1") is None

    @pytest.mark.parametrize(
        "events",
        [
            new(),
            (e for e in [new()]),
            [{"type": "A", "data": {}}],
            ["A"],
            None,
        ],
        ids=["bare_event", "generator", "dict", "str", "none"],
    )
    async def test_invalid_events_argument_is_refused(self, store: EventStore, events: Any) -> None:
        with pytest.raises(ValueError):
            await store.append("order-1", events)
        assert await store.last_position() == 0

    @pytest.mark.parametrize("event_id", ["not-a-uuid", 42, uuid.uuid4().bytes])
    async def test_invalid_event_id_is_refused(self, store: EventStore, event_id: Any) -> None:
        with pytest.raises(ValueError):
            await store.append("order-1", [NewEvent("A", {}, id=event_id)])
        assert await store.last_position() == 0

    async def test_invalid_event_over_max_event_size(self, tmp_path: Path) -> None:
        async with self.make_store(tmp_path, max_event_size=1000) as store:
            await store.append("order-1", [new(blob="x" * 500)])
            with pytest.raises(ValueError, match="1000"):
                await store.append("order-1", [new(blob="x" * 1001)])
            with pytest.raises(ValueError):  # metadata counts too
                await store.append("order-1", [NewEvent("A", {}, metadata={"m": "x" * 1001})])
            assert await store.last_position() == 1

    async def test_invalid_event_over_default_max_event_size(self, store: EventStore) -> None:
        with pytest.raises(ValueError):
            await store.append("order-1", [new(blob="x" * (1024 * 1024 + 1))])
        assert await store.last_position() == 0

    @pytest.mark.parametrize(
        "expected",
        [-1, True, False, "x", "any", None, 1.5, [0]],
        ids=["negative", "true", "false", "str", "str_any", "none", "float", "list"],
    )
    async def test_invalid_expected_version_is_refused(
        self, store: EventStore, expected: Any
    ) -> None:
        await store.append("order-1", [new()])
        with pytest.raises(ValueError):
            await store.append("order-1", [new()], expected_version=expected)
        with pytest.raises(ValueError):
            await store.delete_stream("order-1", expected_version=expected)
        with pytest.raises(ValueError):
            await store.tombstone_stream("order-1", expected_version=expected)
        assert await versions(store, "order-1") == [0]

    async def test_invalid_types_filter_bare_string_is_refused(self, store: EventStore) -> None:
        """``types="OrderPlaced"`` would silently filter by letters; it is refused."""
        await store.append("order-1", [new("A")])
        with pytest.raises(ValueError):
            await collect(store.read_all(types="A"))
        with pytest.raises(ValueError):
            await anext(store.subscribe(types="A"))

    @pytest.mark.parametrize(
        "read",
        [
            {"from_version": -1},
            {"from_version": True},
            {"from_version": "1"},
            {"limit": -1},
            {"limit": 1.0},
        ],
        ids=["from_negative", "from_bool", "from_str", "limit_negative", "limit_float"],
    )
    async def test_invalid_read_stream_arguments(
        self, store: EventStore, read: dict[str, Any]
    ) -> None:
        await store.append("order-1", [new()])
        with pytest.raises(ValueError):
            await collect(store.read_stream("order-1", **read))

    @pytest.mark.parametrize(
        "read",
        [{"after": -1}, {"after": None}, {"after": True}, {"limit": -1}, {"limit": "5"}],
        ids=["after_negative", "after_none", "after_bool", "limit_negative", "limit_str"],
    )
    async def test_invalid_read_all_arguments(
        self, store: EventStore, read: dict[str, Any]
    ) -> None:
        await store.append("order-1", [new()])
        with pytest.raises(ValueError):
            await collect(store.read_all(**read))

    async def test_invalid_subscribe_after(self, store: EventStore) -> None:
        with pytest.raises(ValueError):
            await anext(store.subscribe(after=-1))

    # == hostile strings ========================================================================

    @pytest.mark.parametrize("name", list(HOSTILE_NAMES))
    async def test_hostile_strings_round_trip(self, store: EventStore, name: str) -> None:
        """Names, types and data that break naive SQL or formatting are just strings."""
        hostile = HOSTILE_NAMES[name]
        category = hostile.split("-", 1)[0]
        await store.append("control-1", [new()])
        data = {hostile: hostile, "list": [hostile], "nested": {hostile: {"k": hostile}}}
        result = await store.append(
            hostile,
            [NewEvent(hostile, data, metadata={hostile: hostile}), NewEvent(hostile, {})],
            expected_version=NO_STREAM,
        )
        assert (result.last_version, result.last_position) == (1, 3)
        read = await collect(store.read_stream(hostile))
        assert [(e.stream, e.type, e.version) for e in read] == [
            (hostile, hostile, 0),
            (hostile, hostile, 1),
        ]
        assert read[0].data == data
        assert read[0].metadata == {hostile: hostile}
        assert read[0].category == category
        assert await store.stream_version(hostile) == 1
        assert await positions(store, types=[hostile]) == [2, 3]
        assert [e.stream for e in await collect(store.read_all(category=category))] == [
            hostile,
            hostile,
        ]
        await store.append(hostile, [NewEvent(hostile, {})], expected_version=1)
        await store.set_stream_metadata(hostile, StreamMetadata(max_count=1))
        assert await versions(store, hostile) == [2]
        # Nothing else was touched, and the store still works.
        assert await versions(store, "control-1") == [0]
        await store.append("control-1", [new()], expected_version=0)
        assert await store.last_position() == 5

    @pytest.mark.parametrize("name", ["sql_injection", "qmark", "emoji", "rtl"])
    async def test_hostile_stream_delete_and_tombstone(self, store: EventStore, name: str) -> None:
        hostile = HOSTILE_NAMES[name]
        await store.append(hostile, numbered(2))
        await store.append("control-1", numbered(2))
        await store.delete_stream(hostile)
        assert await versions(store, hostile) == []
        await store.tombstone_stream(hostile)
        with pytest.raises(StreamDeleted):
            await store.append(hostile, [new()])
        assert await versions(store, "control-1") == [0, 1]

    async def test_hostile_similar_looking_names_are_different_streams(
        self, store: EventStore
    ) -> None:
        """No normalisation: composed/decomposed, case and trailing spaces all differ."""
        names = ["\u00e9-1", "e\u0301-1", "E\u0301-1", "é-1 ", "é -1"]
        for i, name in enumerate(names):
            await store.append(name, [new(i=i)], expected_version=NO_STREAM)
        for i, name in enumerate(names):
            assert [e.data for e in await collect(store.read_stream(name))] == [{"i": i}]
        assert await positions(store, category="\u00e9") == [1, 4]
