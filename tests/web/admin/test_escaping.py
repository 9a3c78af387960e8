"""Event data is user input: whatever a stream name, an event type, data or metadata holds,
the admin pages show it as text and never as markup (checked by parsing the pages); so are
the names the event catalog shows (types, fields, upcasters, docstrings)."""

from __future__ import annotations

import html.parser
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import eskit
from eskit.domain import EventRegistry
from eskit.privacy import Sensitive
from eskit.store.model import JSONObject
from eskit.web.admin.site import TEMPLATES
from tests.web.admin.app import bus_only, served
from tests.web.admin.client import PAGE, Admin, text

pytestmark = pytest.mark.anyio

STREAM = "x-<img src=x onerror=alert(1)>"
TYPE = "<script>alert(2)</script>"
DATA = {"note": "</pre><script>alert(3)</script>", "<b>key": "\"'><svg onload=alert(4)>"}
METADATA = {
    "user": "<i>mallory</i>",
    "command": "<script>alert(5)</script>",
    "command_id": "<b>c-1</b>",
    "correlation_id": '"><script>alert(6)</script>',
}

HOSTILE = EventRegistry()
"""Event types whose names, fields, docstring and upcaster are markup (the catalog)."""
FIELD = "<b>mail</b>"
RENAMED = '"><svg onload=alert(8)>'
UPCASTER = "<img src=x onerror=alert(9)>"


@HOSTILE.register(TYPE)
class Hostile(msgspec.Struct, frozen=True):
    """</pre><script>alert(7)</script>"""

    mail: Annotated[str, Sensitive()] = msgspec.field(name=FIELD)


def _renamed(data: JSONObject) -> list[tuple[str, int, JSONObject]]:
    return [(TYPE, 1, data)]


_renamed.__qualname__ = UPCASTER
HOSTILE.upcasters.register(RENAMED, from_version=1)(_renamed)


class Parsed(html.parser.HTMLParser):
    """Every element and attribute of a page, and its text."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, name: str, attributes: list[tuple[str, str | None]]) -> None:
        self.elements.append((name, dict(attributes)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def assert_inert(page: str) -> Parsed:
    """The page holds only the admin's own markup: one script, ours; no handlers."""
    parsed = Parsed(page)
    names = {name for name, _ in parsed.elements}
    assert not names & {"img", "svg", "b", "i", "iframe", "object"}, names
    scripts = [attributes for name, attributes in parsed.elements if name == "script"]
    ours = [{"src": "/admin/static/admin.js", "defer": None}]
    charts = [{"src": "/admin/static/uPlot.iife.min.js", "defer": None}, *ours]
    assert scripts in ([], ours, charts)  # none in a fragment
    for name, attributes in parsed.elements:
        handlers = [a for a in attributes if a.startswith("on")]
        assert not handlers, (name, attributes)
    return parsed


@given(st.text(), st.text())
def test_any_text_stays_text_in_elements_and_attributes(content: str, title: str) -> None:
    """The templates' environment escapes every value, in text and in attributes."""
    content, title = content.replace("\r", ""), title.replace("\r", "")  # parsers fold CR
    template = TEMPLATES.env.from_string('<td title="{{ title }}">{{ content }}</td>')
    parsed = Parsed(template.render(content=content, title=title))
    assert parsed.elements == [("td", {"title": title})]
    assert "".join(parsed.text) == content


async def test_hostile_events_are_shown_as_text_on_every_page(admin: Admin) -> None:
    await admin.store.append(STREAM, [eskit.NewEvent(TYPE, DATA, METADATA)])
    await admin.login()
    pages: list[tuple[str, dict[str, Any]]] = [
        ("/admin/streams", {}),
        ("/admin/streams", {"type": TYPE}),
        ("/admin/stream", {"name": STREAM}),
        ("/admin/trace", {"correlation_id": METADATA["correlation_id"]}),
        ("/admin/audit", {}),
        ("/admin/audit", {"user": METADATA["user"]}),
        ("/admin/live", {"category": TYPE, "type": TYPE}),
        ("/admin/dashboard", {}),
        ("/admin/projections", {}),
        ("/admin/catalog", {}),
        ("/admin/nowhere/" + TYPE, {}),
    ]
    for path, params in pages:
        response = await admin.http.get(path, params=params or None, headers=PAGE)
        assert response.status_code in (200, 404), response.text
        assert_inert(response.text)
    dashboard = text(await admin.page("/admin/dashboard"))
    assert f"{STREAM} 1 " in dashboard  # among the biggest streams, as text
    shown = text(await admin.page("/admin/stream", name=STREAM))
    assert TYPE in shown
    assert DATA["note"] in shown
    assert "<b>key" in shown
    assert METADATA["user"] in text(await admin.page("/admin/audit"))
    traced = text(await admin.page("/admin/trace", correlation_id=METADATA["correlation_id"]))
    assert f"{STREAM} v0" in traced


async def test_error_pages_escape_what_they_quote(admin: Admin) -> None:
    await admin.login()
    response = await admin.http.get("/admin/aggregates", params={"kind": TYPE, "id": "1"})
    assert response.status_code == 404
    assert_inert(response.text)
    assert f"no aggregate kind {TYPE!r}" in text(response.text)


async def test_the_catalog_shows_hostile_names_as_text(tmp_path: Path) -> None:
    async with served(tmp_path, bus_only(HOSTILE)) as hostile:
        await hostile.login()
        page = await hostile.page("/admin/catalog")
    parsed = assert_inert(page)
    shown = text(page)
    assert f"{TYPE} current version v1 · sensitive fields: {FIELD}" in shown
    assert f"v1 upcaster {__name__}.{UPCASTER}" in shown
    assert RENAMED in shown
    assert '"description": "</pre><script>alert(7)</script>"' in shown  # the docstring
    assert ("section", {"class": "event-type", "id": f"type-{RENAMED}", "data-type": RENAMED}) in (
        parsed.elements
    )
