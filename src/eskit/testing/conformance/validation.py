"""Conformance: invalid input is refused, hostile strings are just data."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from eskit.errors import StreamDeleted
from eskit.store.base import EventStore
from eskit.store.model import NO_STREAM, Append, NewEvent, Snapshot, StreamMetadata
from eskit.store.rules import MAX_NESTING
from eskit.testing.conformance.helpers import (
    HOSTILE_NAMES,
    INVALID_NAMES,
    NOT_JSON,
    ConformanceBase,
    collect,
    log_of,
    nested,
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
        """Every call naming a stream checks the name before touching the store: a name
        that is not a str is a TypeError, a str that breaks the rules a ValueError."""
        bad: Any = INVALID_NAMES[name]
        error = _error_for(bad)
        with pytest.raises(error):
            await store.append(bad, [new()])
        with pytest.raises(error):
            await collect(store.read_stream(bad))
        with pytest.raises(error):
            await store.stream_version(bad)
        with pytest.raises(error):
            await store.delete_stream(bad)
        with pytest.raises(error):
            await store.tombstone_stream(bad)
        with pytest.raises(error):
            await store.set_stream_metadata(bad, StreamMetadata(max_count=1))
        with pytest.raises(error):
            await store.get_stream_metadata(bad)
        with pytest.raises(error):
            await store.append_many([Append(bad, [new()])])
        with pytest.raises(error):
            await store.save_snapshot(Snapshot(bad, 0, 1, {}))
        with pytest.raises(error):
            await store.load_snapshot(bad, 1)
        assert await store.last_position() == 0

    @pytest.mark.parametrize("name", list(INVALID_NAMES))
    async def test_invalid_event_type_is_refused(self, store: EventStore, name: str) -> None:
        bad: Any = INVALID_NAMES[name]
        with pytest.raises(_error_for(bad)):
            await store.append("order-1", [new(), NewEvent(bad, {})])
        assert await store.last_position() == 0

    @pytest.mark.parametrize("name", ["empty", "newline", "dollar", "201_chars", "int", "bytes"])
    async def test_invalid_category_filter_is_refused(self, store: EventStore, name: str) -> None:
        bad: Any = INVALID_NAMES[name]
        with pytest.raises(_error_for(bad)):
            await collect(store.read_all(category=bad))
        with pytest.raises(_error_for(bad)):
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

    @pytest.mark.parametrize(
        "metadata",
        [[], 0, "", False, [1], "text", 1.5, True],
        ids=["empty_list", "zero", "empty_str", "false", "list", "str", "float", "true"],
    )
    async def test_invalid_metadata_not_a_dict_is_refused(
        self, store: EventStore, metadata: Any
    ) -> None:
        """Metadata is a JSON object or None (none): nothing else is taken for ``{}``."""
        for events in ([NewEvent("A", {}, metadata)], [new(), NewEvent("A", {}, metadata)]):
            with pytest.raises(ValueError, match="metadata must be a JSON object"):
                await store.append("order-1", events)
            with pytest.raises(ValueError, match="metadata must be a JSON object"):
                await store.append_many([Append("order-1", events)])
        assert await store.last_position() == 0

    async def test_invalid_metadata_none_or_empty_is_no_metadata(self, store: EventStore) -> None:
        await store.append("order-1", [NewEvent("A", {}, None), NewEvent("A", {}, {})])
        assert [e.metadata for e in await log_of(store)] == [{}, {}]

    @pytest.mark.parametrize("where", ["data", "metadata"])
    @pytest.mark.parametrize("depth", [MAX_NESTING + 1, 1_000, 10_000, 100_000])
    async def test_invalid_nesting_too_deep_is_refused(
        self, store: EventStore, where: str, depth: int
    ) -> None:
        """Nested deeper than ``MAX_NESTING``: a ValueError naming the path, never a
        RecursionError, whatever the depth; nothing is written."""
        deep = nested(depth)
        event = NewEvent("A", deep) if where == "data" else NewEvent("A", {}, deep)
        path = rf"{where}(\.a\[0\]){{{MAX_NESTING // 2}}}"  # data.a[0].a[0]... (100 levels)
        for events in ([event], [new(), new(), event]):
            with pytest.raises(ValueError, match=f"nested deeper than {MAX_NESTING}.*{path}"):
                await store.append("order-1", events)
            with pytest.raises(ValueError, match=path):
                await store.append_many([Append("order-2", [new()]), Append("order-1", events)])
        assert await store.last_position() == 0

    async def test_invalid_nesting_at_the_limit_is_fine(self, store: EventStore) -> None:
        deep = nested(MAX_NESTING)
        await store.append("order-1", [NewEvent("A", deep, metadata=deep)])
        (event,) = await log_of(store)
        assert (event.data, event.metadata) == (deep, deep)

    async def test_invalid_nesting_counts_depth_not_size(self, store: EventStore) -> None:
        """Many objects side by side are not deep: only nesting counts."""
        wide = {"items": [{"a": [{"b": i}]} for i in range(500)]}
        await store.append("order-1", [NewEvent("A", wide, metadata=wide)] * 2)
        assert [e.data for e in await log_of(store)] == [wide, wide]

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
            "A",
        ],
        ids=["bare_event", "generator", "dict", "str_in_list", "none", "str"],
    )
    async def test_invalid_events_argument_is_refused(self, store: EventStore, events: Any) -> None:
        with pytest.raises(TypeError):
            await store.append("order-1", events)
        assert await store.last_position() == 0

    @pytest.mark.parametrize("event_id", ["not-a-uuid", 42, uuid.uuid4().bytes])
    async def test_invalid_event_id_is_refused(self, store: EventStore, event_id: Any) -> None:
        with pytest.raises(TypeError):
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
        ("expected", "error"),
        [
            (-1, ValueError),
            (True, TypeError),
            (False, TypeError),
            ("x", TypeError),
            ("any", TypeError),
            (None, TypeError),
            (1.5, TypeError),
            ([0], TypeError),
        ],
        ids=["negative", "true", "false", "str", "str_any", "none", "float", "list"],
    )
    async def test_invalid_expected_version_is_refused(
        self, store: EventStore, expected: Any, error: type[Exception]
    ) -> None:
        await store.append("order-1", [new()])
        with pytest.raises(error):
            await store.append("order-1", [new()], expected_version=expected)
        with pytest.raises(error):
            await store.append_many([Append("order-1", [new()], expected)])
        with pytest.raises(error):
            await store.delete_stream("order-1", expected_version=expected)
        with pytest.raises(error):
            await store.tombstone_stream("order-1", expected_version=expected)
        assert await versions(store, "order-1") == [0]

    @pytest.mark.parametrize(
        "types",
        ["A", [1], ["A", None], [b"A"], 5, {"A": 1}.items()],
        ids=["bare_str", "int", "none_inside", "bytes", "not_iterable", "pairs"],
    )
    async def test_invalid_types_filter_is_type_error(self, store: EventStore, types: Any) -> None:
        """``types="OrderPlaced"`` would silently filter by letters, ``[1]`` match nothing:
        both are refused, by every method that filters the log."""
        await store.append("order-1", [new("A")])
        with pytest.raises(TypeError):
            await collect(store.read_all(types=types))
        with pytest.raises(TypeError):
            await store.read_page(types=types)
        with pytest.raises(TypeError):
            await anext(store.subscribe(types=types))

    @pytest.mark.parametrize(
        ("read", "error"),
        [
            ({"from_version": -1}, ValueError),
            ({"from_version": True}, TypeError),
            ({"from_version": "1"}, TypeError),
            ({"from_version": 1.0}, TypeError),
            ({"limit": -1}, ValueError),
            ({"limit": 1.0}, TypeError),
            ({"limit": False}, TypeError),
            ({"backwards": "no"}, TypeError),
            ({"backwards": 1}, TypeError),
            ({"backwards": None}, TypeError),
        ],
        ids=repr,
    )
    async def test_invalid_read_stream_arguments(
        self, store: EventStore, read: dict[str, Any], error: type[Exception]
    ) -> None:
        """A wrong type is a TypeError (``backwards="no"`` would read backwards), a wrong
        value a ValueError."""
        await store.append("order-1", numbered(2))
        with pytest.raises(error):
            await collect(store.read_stream("order-1", **read))

    @pytest.mark.parametrize(
        ("read", "error"),
        [
            ({"after": -1}, ValueError),
            ({"after": None}, TypeError),
            ({"after": True}, TypeError),
            ({"after": "1"}, TypeError),
            ({"after": 1.0}, TypeError),
            ({"limit": -1}, ValueError),
            ({"limit": "5"}, TypeError),
            ({"limit": True}, TypeError),
            ({"category": 5}, TypeError),
            ({"category": ["order"]}, TypeError),
            ({"category": ""}, ValueError),
        ],
        ids=repr,
    )
    async def test_invalid_read_all_arguments(
        self, store: EventStore, read: dict[str, Any], error: type[Exception]
    ) -> None:
        await store.append("order-1", [new()])
        with pytest.raises(error):
            await collect(store.read_all(**read))
        with pytest.raises(error):
            await store.read_page(**read)
        if "limit" not in read:
            with pytest.raises(error):
                await anext(store.subscribe(**read))

    @pytest.mark.parametrize(
        ("after", "error"), [(-1, ValueError), ("1", TypeError), (None, TypeError)], ids=repr
    )
    async def test_invalid_wait_for_events_after(
        self, store: EventStore, after: Any, error: type[Exception]
    ) -> None:
        with pytest.raises(error):
            await store.wait_for_events(after)

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


def _error_for(bad: object) -> type[Exception]:
    """What a store raises for an invalid name: TypeError if it is no str at all."""
    return ValueError if isinstance(bad, str) else TypeError
