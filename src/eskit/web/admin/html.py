"""Building HTML where everything is escaped unless it is already ``Html``.

Event data, stream names and error messages are user input: every value goes through
``escape`` on its way into a page, and only what these functions build is marked safe.
"""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec


class Html(str):
    """Text that is HTML already (built here): inserted as is, never escaped again."""

    __slots__ = ()


def escape(value: object) -> Html:
    """``value`` as HTML text: ``<``, ``>``, ``&`` and quotes escaped (None: empty)."""
    if isinstance(value, Html):
        return value
    return Html(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[object], separator: str = "") -> Html:
    """The parts, each escaped unless it is ``Html``, one after the other."""
    return Html(escape(separator).join(escape(part) for part in parts))


def tag(element: str, /, *children: object, **attributes: object) -> Html:
    """``<element attributes>children</element>``. ``class_`` is ``class``, ``data_x`` is
    ``data-x``; an attribute that is None or False is left out, True is written bare."""
    parts = [element]
    for key, value in attributes.items():
        if value is None or value is False:
            continue
        attribute = key.rstrip("_").replace("_", "-")
        parts.append(attribute if value is True else f'{attribute}="{escape(value)}"')
    opening = f"<{' '.join(parts)}>"
    if element in ("input", "meta", "link", "br"):
        return Html(opening)
    return Html(f"{opening}{join(children)}</{element}>")


def link(href: str, *children: object, **attributes: object) -> Html:
    return tag("a", *children, href=href, **attributes)


def url(path: str, query: Mapping[str, Any] | None = None) -> str:
    """``path`` with the query's non-empty values (lists repeat the key)."""
    kept = {k: v for k, v in (query or {}).items() if v not in (None, "", [])}
    return f"{path}?{urllib.parse.urlencode(kept, doseq=True)}" if kept else path


def table(headings: Iterable[str], rows: Iterable[Iterable[object]], **attributes: object) -> Html:
    head = tag("thead", tag("tr", *(tag("th", h) for h in headings)))
    body = tag("tbody", *(tag("tr", *(tag("td", cell) for cell in row)) for row in rows))
    return tag("table", head, body, **attributes)


def pretty_json(value: object) -> Html:
    """``value`` as indented JSON in a ``<pre>`` (anything JSON cannot hold is shown as
    its ``str``)."""
    text = msgspec.json.format(msgspec.json.encode(value, enc_hook=str), indent=2).decode()
    return tag("pre", text, class_="json")


def hidden(name: str, value: object) -> Html:
    """A hidden form field."""
    return tag("input", type="hidden", name=name, value=value)


def field(label: str, name: str, value: object = None, **attributes: object) -> Html:
    """A labelled text input."""
    return tag("label", label, " ", tag("input", name=name, value=value or None, **attributes))


def search_form(action: str, button: str, *fields: object) -> Html:
    """A GET form of ``fields`` with one button: the admin pages' search and filter bars."""
    return tag("form", *fields, tag("button", button), method="get", action=action, class_="search")
