"""``eskit.testing.check_event_fixtures``: a registered type that changes shape without a new
version, a version without a fixture, and an upcaster that changes what old events mean all
fail with a message saying what to do; ``write_fixture`` writes what is missing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import msgspec
import pytest

from eskit.domain import EventRegistry
from eskit.store.model import JSONObject
from eskit.testing import check_event_fixtures, write_fixture, write_old_fixture
from eskit.testing.golden import goldens, recorded_schemas


class ParcelSent(msgspec.Struct, frozen=True):
    parcel_id: str
    grams: int


def registry(cls: type, version: int = 1) -> EventRegistry:
    events = EventRegistry()
    events.register("ParcelSent", version=version)(cls)
    return events


def test_a_version_without_a_fixture_fails_saying_how_to_write_it(tmp_path: Path) -> None:
    events = registry(ParcelSent)

    with pytest.raises(AssertionError) as failed:
        check_event_fixtures(events, tmp_path)

    assert "no fixture for ParcelSent version 1 (today's)" in str(failed.value)
    assert "eskit.testing.write_fixture(events" in str(failed.value)
    assert f"{tmp_path}/ParcelSent.v1.json" in str(failed.value)


def test_a_written_fixture_passes_and_records_the_schema(tmp_path: Path) -> None:
    events = registry(ParcelSent)

    path = write_fixture(events, tmp_path, ParcelSent("p-1", 900), about="the first shape")
    check_event_fixtures(events, tmp_path)

    written = json.loads(path.read_text())
    assert path.name == "ParcelSent.v1.json"
    assert written["data"] == {"parcel_id": "p-1", "grams": 900}
    assert written["expected"] == [{"type": "ParcelSent", "data": written["data"]}]
    assert written["schema"]["$defs"]["ParcelSent"]["required"] == ["parcel_id", "grams"]
    assert recorded_schemas(tmp_path)[("ParcelSent", 1)] == written["schema"]


def test_a_field_added_without_a_new_version_fails(tmp_path: Path) -> None:
    write_fixture(registry(ParcelSent), tmp_path, ParcelSent("p-1", 900))

    class ParcelSentWithCarrier(msgspec.Struct, frozen=True):  # same name, same version
        parcel_id: str
        grams: int
        carrier: str = "post"

    with pytest.raises(AssertionError) as failed:
        check_event_fixtures(registry(ParcelSentWithCarrier), tmp_path)

    message = str(failed.value)
    assert "ParcelSent.v1.json: ParcelSent changed shape without a new version" in message
    assert "register the class as version 2 with an upcaster from version 1" in message


def test_a_field_whose_type_changed_fails_through_the_recorded_schema(tmp_path: Path) -> None:
    write_fixture(registry(ParcelSent), tmp_path, ParcelSent("p-1", 900))

    @dataclasses.dataclass(frozen=True)
    class ParcelSentInKilos:  # 900 still decodes as a float and encodes back as 900
        parcel_id: str
        grams: float

    with pytest.raises(AssertionError, match="its JSON Schema differs from the one recorded"):
        check_event_fixtures(registry(ParcelSentInKilos), tmp_path)


def test_a_docstring_edited_is_no_change_of_shape(tmp_path: Path) -> None:
    write_fixture(registry(ParcelSent), tmp_path, ParcelSent("p-1", 900))

    class Documented(msgspec.Struct, frozen=True):
        """A parcel left the warehouse; its weight in grams."""

        parcel_id: str
        grams: int

    Documented.__name__ = Documented.__qualname__ = "ParcelSent"  # the same class, documented
    check_event_fixtures(registry(Documented), tmp_path)


def test_a_new_version_needs_its_own_fixture_and_keeps_the_old_one(tmp_path: Path) -> None:
    write_fixture(registry(ParcelSent), tmp_path, ParcelSent("p-1", 900))

    class ParcelSentV2(msgspec.Struct, frozen=True):
        parcel_id: str
        grams: int
        carrier: str

    events = registry(ParcelSentV2, version=2)

    @events.upcasters.register("ParcelSent", from_version=1)
    def _carrier(data: JSONObject) -> JSONObject:
        return {**data, "carrier": "post"}

    with pytest.raises(AssertionError) as failed:
        check_event_fixtures(events, tmp_path)
    assert "no fixture for ParcelSent version 2 (today's)" in str(failed.value)
    assert "ParcelSent.v1.json: ParcelSent version 1 is not today's any more" in str(failed.value)
    assert "write_old_fixture(events, directory, 'ParcelSent', 1, data)" in str(failed.value)

    write_fixture(events, tmp_path, ParcelSentV2("p-2", 300, "dhl"))
    write_old_fixture(events, tmp_path, "ParcelSent", 1, {"parcel_id": "p-1", "grams": 900})
    check_event_fixtures(events, tmp_path)
    (v1, _) = goldens(tmp_path)
    assert v1.expected == [
        {"type": "ParcelSent", "data": {"parcel_id": "p-1", "grams": 900, "carrier": "post"}}
    ]
    assert v1.schema is not None  # the shape version 1 had, for the catalog
    assert "carrier" not in v1.schema["$defs"]["ParcelSent"]["properties"]


def test_an_upcaster_that_changes_what_an_old_event_means_fails(tmp_path: Path) -> None:
    def kilos_to_grams(factor: int) -> EventRegistry:
        events = registry(ParcelSent, version=2)
        events.upcasters.register("ParcelSent", from_version=1)(
            lambda data: {"parcel_id": data["parcel_id"], "grams": data["kilos"] * factor}
        )
        return events

    events = kilos_to_grams(1000)
    write_fixture(events, tmp_path, ParcelSent("p-1", 900))
    write_old_fixture(events, tmp_path, "ParcelSent", 1, {"parcel_id": "p-0", "kilos": 5})
    check_event_fixtures(events, tmp_path)
    changed = kilos_to_grams(1)

    with pytest.raises(AssertionError, match="an upcaster changed what old events mean"):
        check_event_fixtures(changed, tmp_path)


def test_an_old_version_without_a_fixture_and_a_stray_fixture_fail(tmp_path: Path) -> None:
    events = registry(ParcelSent, version=2)
    events.upcasters.register("ParcelSent", from_version=1)(lambda data: data)
    write_fixture(events, tmp_path, ParcelSent("p-1", 900))
    stray = json.loads((tmp_path / "ParcelSent.v2.json").read_text())
    (tmp_path / "ParcelSent.v3.json").write_text(json.dumps({**stray, "schema_version": 3}))

    with pytest.raises(AssertionError) as failed:
        check_event_fixtures(events, tmp_path)

    message = str(failed.value)
    assert "no fixture for ParcelSent version 1 (an old version)" in message
    assert "eskit.testing.write_old_fixture(events" in message
    assert "ParcelSent.v3.json: no class or upcaster reads ParcelSent version 3" in message
