"""The event catalog: every event type a registry knows, its versions, the upcasters that
bring old versions up to date, and a JSON Schema of each version's data.

Today's version of a type is described from its class (msgspec's JSON Schema, pydantic's
for a pydantic model). A class's old versions no longer exist as classes: their schemas
come from what was recorded when they were current (the golden fixtures written by
``eskit.testing.write_fixture`` hold one), else they are ``None``. Type names that only
upcasters read (renamed or split away) are listed too, without a class.

``catalog`` is what ``eskit events catalog`` prints and ``GET /events/catalog`` answers;
``json_schema`` turns it into one JSON Schema document of every stored event shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from eskit.domain.events import EventRegistry, EventType

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

Schemas = Mapping[tuple[str, int], dict[str, Any]]
"""Recorded JSON Schemas of old versions, by (type name, version)."""


class EventVersion(msgspec.Struct, frozen=True):
    """One schema version of an event type."""

    version: int
    current: bool
    """Whether new events are written at this version (decoded by the class)."""
    schema: dict[str, Any] | None
    """JSON Schema of the data at this version; None when nothing recorded it."""
    upcaster: str | None = None
    """The function that brings this version to the next (``module.name``); None for the
    current version."""


class EventTypeInfo(msgspec.Struct, frozen=True):
    """An event type: its stable name, its class (None for a name only upcasters read) and
    every version ever stored, oldest first."""

    name: str
    cls: str | None
    version: int | None
    """The current version; None for a type with no class any more."""
    sensitive: list[str]
    """Fields stored encrypted (their schema describes the decrypted value)."""
    versions: list[EventVersion]


class Catalog(msgspec.Struct, frozen=True):
    """Every event type of a registry, by name."""

    types: list[EventTypeInfo]


def catalog(events: EventRegistry, recorded: Schemas | None = None) -> Catalog:
    """The catalog of ``events``; ``recorded`` gives the schemas of old versions (e.g.
    ``recorded_schemas(fixtures)``)."""
    recorded = recorded or {}
    upcasted = events.upcasters.keys()
    names = sorted({*events.names(), *(name for name, _ in upcasted)})
    types = []
    for name in names:
        entry = _registered(events, name)
        old = {version for upcast_name, version in upcasted if upcast_name == name}
        if entry is not None:
            old |= set(range(1, entry.version))
        versions = [
            EventVersion(v, False, recorded.get((name, v)), _function_name(events, name, v))
            for v in sorted(old)
        ]
        if entry is not None:
            versions.append(EventVersion(entry.version, True, class_schema(entry.cls)))
        types.append(
            EventTypeInfo(
                name,
                None if entry is None else f"{entry.cls.__module__}.{entry.cls.__qualname__}",
                None if entry is None else entry.version,
                [] if entry is None else [field.name for field in entry.sensitive],
                versions,
            )
        )
    return Catalog(types)


def recorded_schemas(directory: str | Path) -> Schemas:
    """The JSON Schemas recorded in a folder of golden fixtures (``eskit.testing.golden``),
    by (type, version): the old versions' schemas for ``catalog``."""
    found = {}
    for path in sorted(Path(directory).glob("*.json")):
        raw = json.loads(path.read_text("utf-8"))
        if isinstance(raw, dict) and isinstance(raw.get("schema"), dict):
            found[(str(raw.get("type")), int(raw.get("schema_version", 1)))] = raw["schema"]
    return found


def class_schema(cls: type[Any]) -> dict[str, Any]:
    """The JSON Schema of an event class's data (a dataclass, Struct or pydantic model)."""
    if hasattr(cls, "model_json_schema"):  # pydantic v2
        schema: dict[str, Any] = cls.model_json_schema()
        return schema
    return msgspec.json.schema(cls)


def json_schema(found: Catalog, title: str = "events") -> dict[str, Any]:
    """One JSON Schema document for every stored event: an envelope of ``type``,
    ``schema_version`` and ``data``, one branch (``oneOf``) per type and version, each
    version's data schema under ``$defs`` as ``Name.vN``. Versions with no recorded schema
    take any object."""
    definitions: dict[str, Any] = {}
    branches = []
    for info in found.types:
        for version in info.versions:
            key = f"{info.name}.v{version.version}"
            definitions[key] = _standalone(version.schema, key)
            branch: dict[str, Any] = {
                "title": f"{info.name} v{version.version}",
                "type": "object",
                "properties": {
                    "type": {"const": info.name},
                    "schema_version": {"const": version.version},
                    "data": {"$ref": f"#/$defs/{key}"},
                },
                "required": ["type", "schema_version", "data"],
            }
            if version.upcaster is not None:
                branch["description"] = f"Old version, read through {version.upcaster}."
            branches.append(branch)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": title,
        "description": "Every event type and schema version the registry reads, as stored:"
        " its type name, the schema_version in its metadata, and its data.",
        "oneOf": branches,
        "$defs": definitions,
    }


def _standalone(schema: dict[str, Any] | None, key: str) -> dict[str, Any]:
    """A version's schema with its own ``$defs`` moved under the document's (prefixed by
    the version's key so that two versions' ``Address`` stay apart)."""
    if schema is None:
        return {"type": "object", "description": "No schema was recorded for this version."}
    nested = schema.get("$defs", {})
    if not nested:
        return schema
    prefix = f"#/$defs/{key}/$defs/"

    def moved(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: (prefix + v.removeprefix("#/$defs/"))
                if k == "$ref" and isinstance(v, str)
                else moved(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [moved(item) for item in value]
        return value

    return dict(moved(schema))


def _registered(events: EventRegistry, name: str) -> EventType | None:
    return events.by_name(name) if name in events.names() else None


def _function_name(events: EventRegistry, name: str, version: int) -> str | None:
    function = events.upcasters.function(name, version)
    if function is None:
        return None
    module = getattr(function, "__module__", None) or "?"
    return f"{module}.{getattr(function, '__qualname__', repr(function))}"
