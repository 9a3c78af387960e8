"""The event catalog page: every type of the application's registry with its current version,
its sensitive fields, each version with what reads it (the class, an upcaster, or nothing)
and the JSON Schema of its data; behind the admin login like every page."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import uuid
from pathlib import Path
from typing import Annotated

import msgspec
import pytest

from eskit import UnsupportedEventVersion
from eskit.domain import EventRegistry
from eskit.privacy import Sensitive
from eskit.store.model import JSONObject, RecordedEvent
from eskit.web import AppSpec
from tests.web.admin.app import bus_only, served
from tests.web.admin.client import PAGE, Admin, text

pytestmark = pytest.mark.anyio

WARD = EventRegistry()


@WARD.register("PatientAdmitted", version=3)
class PatientAdmitted(msgspec.Struct, frozen=True):
    patient_id: str
    name: Annotated[str, Sensitive(subject="patient_id")]
    ward: str


@WARD.upcasters.register("PatientAdmitted", from_version=1)
def admitted_v1(data: JSONObject) -> JSONObject:
    return {**data, "ward": "general"}  # to v2, which nothing reads: v2 events are unreadable


@WARD.upcasters.register("PersonAdmitted", from_version=1)
def renamed(data: JSONObject) -> list[tuple[str, int, JSONObject]]:
    return [("PatientAdmitted", 1, data)]


def section(page: str, name: str) -> str:
    """The text of the page's section about event type ``name``."""
    found = re.search(rf'<section class="event-type" id="type-{name}".*?</section>', page, re.S)
    assert found is not None, name
    return text(found[0])


def schema_of(page: str, name: str, version: int) -> dict[str, object]:
    """The JSON Schema the page shows for ``name`` at ``version``."""
    body = page[page.index(f'id="type-{name}"') :]
    row = body[body.index(f'<tr data-version="{version}"') :]
    found = re.search(r'<pre class="json">(.*?)</pre>', row[: row.index("</tr>")], re.S)
    assert found is not None, (name, version)
    schema: dict[str, object] = json.loads(html.unescape(found[1]))
    return schema


async def test_the_catalog_shows_each_type_version_and_schema(admin: Admin) -> None:
    await admin.login()
    page = await admin.page("/admin/catalog")
    assert '<a href="/admin/catalog" class="current">Catalog</a>' in page
    shown = text(page)
    assert "Event catalog" in shown
    assert "10 event types" in shown  # the invoicing example's
    created = section(page, "InvoiceCreated")
    assert "current version v2 · sensitive fields: none" in created
    assert "v1 upcaster examples.invoicing.events._invoice_created_v1 no schema recorded" in created
    assert "v2 class examples.invoicing.events.InvoiceCreated JSON Schema" in created
    schema = schema_of(page, "InvoiceCreated", 2)
    assert schema["$ref"] == "#/$defs/InvoiceCreated"
    body = schema["$defs"]["InvoiceCreated"]  # type: ignore[index]
    assert body["properties"]["due_date"] == {"type": "string", "format": "date"}
    assert set(body["required"]) == {"invoice_id", "customer_id", "currency", "due_date"}
    assert "<details><summary>JSON Schema</summary>" in page  # collapsed until opened
    assert "v1 class examples.invoicing.events.InvoicePaid" in section(page, "InvoicePaid")


async def test_the_page_shows_what_the_api_serves(admin: Admin) -> None:
    await admin.login()
    page = await admin.page("/admin/catalog")
    served = await admin.http.get("/events/catalog", headers=admin.as_("reader"))
    types = served.json()["types"]
    assert re.findall(r'<section class="event-type" id="type-([^"]+)"', page) == [
        t["name"] for t in types
    ]
    for t in types:
        for v in t["versions"]:
            if v["schema"] is not None:
                assert schema_of(page, t["name"], v["version"]) == v["schema"]


async def test_sensitive_fields_renamed_types_and_unreadable_versions(tmp_path: Path) -> None:
    async with served(tmp_path, bus_only(WARD)) as ward:
        await ward.login()
        page = await ward.page("/admin/catalog")
    patient = section(page, "PatientAdmitted")
    assert "current version v3 · sensitive fields: name" in patient
    assert "v1 upcaster tests.web.admin.test_catalog.admitted_v1" in patient
    assert "v2 no upcaster: events stored at this version cannot be read" in patient
    assert "v3 class tests.web.admin.test_catalog.PatientAdmitted JSON Schema" in patient
    person = section(page, "PersonAdmitted")
    assert "no class any more: old events of this name are read by upcasters" in person
    assert "v1 upcaster tests.web.admin.test_catalog.renamed" in person
    row = re.search(r'<tr data-type="PersonAdmitted">.*?</tr>', page, re.S)
    assert row is not None
    assert text(row[0]) == "PersonAdmitted none 1 none none: only upcasters read it"
    assert 'href="#type-PatientAdmitted"' in page  # the index links to each section


def test_what_the_catalog_calls_unreadable_cannot_be_read() -> None:
    """The page's "cannot be read" is what the registry does with such an event."""
    data = {"patient_id": "1", "name": "Ada", "ward": "a"}
    now = dt.datetime.now(dt.UTC)
    stored = RecordedEvent(uuid.uuid4(), "patient-1", 0, 1, "PatientAdmitted", data, {}, now)
    assert WARD.decode(msgspec.structs.replace(stored, metadata={"schema_version": 3}))
    stored = msgspec.structs.replace(stored, metadata={"schema_version": 2})
    with pytest.raises(UnsupportedEventVersion):
        WARD.decode(stored)


async def test_an_application_without_a_bus_has_no_catalog(tmp_path: Path) -> None:
    async with served(tmp_path, lambda store: AppSpec()) as bare:
        await bare.login()
        shown = text(await bare.page("/admin/catalog"))
    assert "This application has no command bus, so no event registry to describe" in shown


async def test_the_catalog_needs_an_admin_login(admin: Admin) -> None:
    response = await admin.http.get("/admin/catalog", headers=PAGE)
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/login?next=%2Fadmin%2Fcatalog"
    reader = await admin.http.get("/admin/catalog", headers=admin.as_("reader"))
    assert reader.status_code == 403
    assert (await admin.http.get("/admin/catalog", headers=admin.as_("admin"))).status_code == 200
