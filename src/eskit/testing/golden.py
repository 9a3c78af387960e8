"""Golden fixtures of stored events: one JSON file per (event type, schema version) an
application ever wrote, with what it must decode to today.

Stored events are never rewritten, so every payload ever written must keep decoding for as
long as the code lives. ``check_event_fixtures`` fails a test when:

- a registered version (or an old name an upcaster reads) has no fixture;
- a fixture no longer decodes to what it says (an upcaster changed);
- a class changed shape without a new version: its current fixture does not decode and
  encode back to the same data, or its JSON Schema differs from the one recorded;
- a fixture names a version nobody registered.

Each problem says what to do. ``write_fixture`` writes the fixture of a type's current
version from an example event (with its JSON Schema, which the catalog then shows for that
version once it is old); ``write_old_fixture`` one for an older version from a payload it
stored. A fixture file (``InvoiceCreated.v1.json``)::

    {"about": "…", "type": "InvoiceCreated", "schema_version": 1,
     "data": {…}, "expected": [{"type": "InvoiceCreated", "data": {…}}], "schema": {…}}
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec

from eskit.domain.catalog import class_schema, recorded_schemas
from eskit.domain.events import SCHEMA_VERSION, EventRegistry
from eskit.store.model import JSONObject, RecordedEvent

__all__ = [
    "Golden",
    "check_event_fixtures",
    "check_golden",
    "goldens",
    "recorded_schemas",
    "write_fixture",
    "write_old_fixture",
]


class Golden(msgspec.Struct, frozen=True):
    """One fixture file: a payload stored as ``type`` at ``schema_version``, and the events
    (type and data) it decodes to today."""

    file: str
    type: str
    schema_version: int
    data: JSONObject
    expected: list[JSONObject]
    about: str = ""
    schema: dict[str, Any] | None = None
    """The JSON Schema of the data when the fixture was written (None if not recorded)."""


def goldens(directory: str | Path) -> list[Golden]:
    """The fixtures in ``directory``, by file name (for ``pytest.mark.parametrize``)."""
    found = []
    for path in sorted(Path(directory).glob("*.json")):
        raw = json.loads(path.read_text("utf-8"))
        found.append(msgspec.convert({**raw, "file": path.name}, Golden))
    return found


def check_event_fixtures(events: EventRegistry, directory: str | Path) -> None:
    """Check every fixture in ``directory`` and that each version ``events`` reads has
    one; raise ``AssertionError`` listing every problem and what to do about each."""
    directory = Path(directory)
    found = goldens(directory) if directory.is_dir() else []
    problems = []
    for golden in found:
        problems += _problems(events, golden)
    covered = Counter((g.type, g.schema_version) for g in found)
    wanted = _versions(events)
    for name, version in sorted(wanted - set(covered)):
        problems.append(_missing(events, directory, name, version))
    for name, version in sorted(set(covered) - wanted):
        problems.append(
            f"{name}.v{version}.json: no class or upcaster reads {name} version {version};"
            " delete the fixture, or register what reads it"
        )
    for (name, version), count in sorted(covered.items()):
        if count > 1:
            problems.append(f"{count} fixtures for {name} version {version}: keep one")
    if problems:
        raise AssertionError(
            f"event fixtures in {directory}:\n" + "\n".join(f"- {p}" for p in problems)
        )


def check_golden(events: EventRegistry, golden: Golden) -> None:
    """Check one fixture (``AssertionError`` saying what is wrong and what to do)."""
    problems = _problems(events, golden)
    if problems:
        raise AssertionError("\n".join(problems))


def write_fixture(
    events: EventRegistry, directory: str | Path, event: object, about: str = ""
) -> Path:
    """Write the fixture of ``event``'s type at its current version (``Name.vN.json``,
    replacing one there), holding its data, what it decodes to and the class's schema."""
    entry, data = events.encode(event)
    golden = Golden(
        f"{entry.name}.v{entry.version}.json",
        entry.name,
        entry.version,
        data,
        [{"type": entry.name, "data": data}],
        about,
        class_schema(entry.cls),
    )
    return _write(Path(directory), golden)


def write_old_fixture(
    events: EventRegistry,
    directory: str | Path,
    name: str,
    version: int,
    data: JSONObject,
    about: str = "",
) -> Path:
    """Write the fixture of ``name`` at an old ``version`` from a payload it stored; what
    it must decode to is what it decodes to now (check that once by eye). The schema and
    note of a fixture already there are kept (what was recorded when it was today's)."""
    decoded = _decoded(events, name, version, data)
    path = Path(directory) / f"{name}.v{version}.json"
    before = goldens(directory) if Path(directory).is_dir() else []
    schema = next((g.schema for g in before if g.file == path.name), None)
    about = about or next((g.about for g in before if g.file == path.name), "")
    golden = Golden(path.name, name, version, data, decoded, about, schema)
    return _write(Path(directory), golden)


def _write(directory: Path, golden: Golden) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / golden.file
    shown = {
        k: v for k, v in msgspec.structs.asdict(golden).items() if k != "file" and v is not None
    }
    path.write_text(json.dumps(shown, indent=2, ensure_ascii=False) + "\n", "utf-8")
    return path


def _versions(events: EventRegistry) -> set[tuple[str, int]]:
    """Every (type, version) the registry reads: each class's versions up to today's, and
    each version an upcaster reads (types renamed away too)."""
    wanted = {
        (name, version)
        for name in events.names()
        for version in range(1, events.by_name(name).version + 1)
    }
    return wanted | set(events.upcasters.keys())


def _problems(events: EventRegistry, golden: Golden) -> list[str]:
    where = golden.file
    current = events.by_name(golden.type) if golden.type in events.names() else None
    try:
        decoded = _decoded(events, golden.type, golden.schema_version, golden.data)
    except Exception as error:
        if current is not None and current.version == golden.schema_version:
            return [_changed(where, golden, f"its data no longer decodes ({error})")]
        return [f"{where}: no longer decodes: {type(error).__name__}: {error}"]
    if decoded != golden.expected:
        if current is not None and current.version == golden.schema_version:
            return [_changed(where, golden, f"it decodes and encodes back as {decoded}")]
        if golden.expected == [{"type": golden.type, "data": golden.data}]:  # was today's
            return [
                f"{where}: {golden.type} version {golden.schema_version} is not today's any"
                f" more: it now decodes to {decoded}; if that is right, record it with"
                f" eskit.testing.write_old_fixture(events, directory, {golden.type!r},"
                f" {golden.schema_version}, data) (it keeps the payload and schema)"
            ]
        return [
            f"{where}: decodes to {decoded}, the fixture expects {golden.expected}: an"
            " upcaster changed what old events mean; fix it (stored events never change)"
        ]
    if (
        current is not None
        and current.version == golden.schema_version
        and golden.schema is not None
        and _shape(golden.schema) != _shape(class_schema(current.cls))
    ):
        return [_changed(where, golden, "its JSON Schema differs from the one recorded")]
    return []


_WORDS = frozenset({"title", "description", "examples"})
"""What a schema says for people: a docstring edited is no change of shape."""
_NAMED = frozenset({"properties", "$defs", "patternProperties"})
"""Keywords whose keys are names (a field may be called ``description``), not keywords."""


def _shape(schema: Any) -> Any:
    """A JSON Schema without its words for people."""
    if isinstance(schema, list):
        return [_shape(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    shaped = {}
    for key, value in schema.items():
        if key in _WORDS:
            continue
        if key in _NAMED and isinstance(value, dict):
            shaped[key] = {name: _shape(sub) for name, sub in value.items()}
        else:
            shaped[key] = _shape(value)
    return shaped


def _changed(where: str, golden: Golden, how: str) -> str:
    name, version = golden.type, golden.schema_version
    return (
        f"{where}: {name} changed shape without a new version: {how}. Events stored at"
        f" version {version} keep their old shape: register the class as version"
        f" {version + 1} with an upcaster from version {version}, then write its fixture"
        f" with eskit.testing.write_fixture(events, directory, {name}(...))"
    )


def _missing(events: EventRegistry, directory: Path, name: str, version: int) -> str:
    file = directory / f"{name}.v{version}.json"
    current = events.by_name(name) if name in events.names() else None
    if current is not None and current.version == version:
        return (
            f"no fixture for {name} version {version} (today's): write {file} from an example"
            f" with eskit.testing.write_fixture(events, {str(directory)!r}, {name}(...))"
        )
    return (
        f"no fixture for {name} version {version} (an old version): write {file} from a"
        f" payload that version stored with eskit.testing.write_old_fixture(events,"
        f" {str(directory)!r}, {name!r}, {version}, data)"
    )


def _decoded(events: EventRegistry, name: str, version: int, data: JSONObject) -> list[Any]:
    """What a payload stored as ``name`` at ``version`` decodes to today, as JSON."""
    recorded = RecordedEvent(
        id=uuid.UUID(int=0),
        stream="fixture-1",
        version=0,
        position=1,
        type=name,
        data=data,
        metadata={SCHEMA_VERSION: version},
        recorded_at=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
    )
    return [
        {"type": events.type_of(e).name, "data": msgspec.json.decode(msgspec.json.encode(e))}
        for e in events.decode(recorded)
    ]
