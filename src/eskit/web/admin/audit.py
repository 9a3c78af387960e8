"""The audit view: who did what, newest first, from the metadata the command bus and the
HTTP API stamp on every event of a command (``command``, ``command_id``,
``correlation_id``, and ``user``: the name of the token that sent it).

The log is read a window of positions at a time, from the head back: a command is one row
(its events grouped by ``command_id``). Raw appends (``POST /streams/...``) carry the
token's name too but no command, so only commands are listed; a token allowed to append
could still write metadata that looks like a command's, which the audit cannot tell apart.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated, Final

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from eskit.cli.common import when
from eskit.store import rules
from eskit.store.base import EventStore
from eskit.store.model import RecordedEvent
from eskit.web.admin.html import Html, field, join, link, search_form, table, tag, url
from eskit.web.admin.session import user_page, visitor
from eskit.web.admin.site import admin_of, base
from eskit.web.auth import USER

WINDOW: Final = 1000
"""Positions of the log read per page."""
Filter = Annotated[str, Query(max_length=200)]


@dataclasses.dataclass
class Entry:
    """One command: who sent it, what, and where its events went."""

    command_id: str
    command: str
    user: str | None
    correlation_id: str | None
    recorded_at: dt.datetime
    first_position: int
    streams: list[str]
    events: int = 0


async def entries(
    store: EventStore, before: int | None, user: str = "", command: str = ""
) -> tuple[list[Entry], int]:
    """The commands among the ``WINDOW`` positions up to ``before`` (default: the head),
    newest first, and where the previous window ends (0: none)."""
    head = await store.last_position()
    end = head if before is None else min(before, head)
    start = max(0, end - WINDOW)
    page = await store.read_page(after=start, limit=WINDOW)
    found: dict[str, Entry] = {}
    for event in page.events:
        if event.position <= end:
            _add(found, event)
    kept = [
        e
        for e in found.values()
        if (not user or e.user == user) and (not command or e.command == command)
    ]
    return sorted(kept, key=lambda e: -e.first_position), start


def _add(found: dict[str, Entry], event: RecordedEvent) -> None:
    metadata = event.metadata
    command_id = metadata.get("command_id")
    if command_id is None:
        return
    key = str(command_id)
    entry = found.get(key)
    if entry is None:
        entry = found[key] = Entry(
            key,
            str(metadata.get("command", "")),
            _text(metadata.get(USER)),
            _text(metadata.get("correlation_id")),
            event.recorded_at,
            event.position,
            [],
        )
    entry.events += 1
    if event.stream not in entry.streams:
        entry.streams.append(event.stream)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def add_audit_routes(router: APIRouter) -> None:
    @router.get("/audit")
    async def audit(
        request: Request,
        user: Filter = "",
        command: Filter = "",
        before: Annotated[int | None, Query(ge=0, le=rules.MAX_INT64)] = None,
    ) -> Response:
        """Commands by time, newest first; filtered by user and command type."""
        who = visitor(request)
        root = base(request)
        form = search_form(
            f"{root}/audit",
            "Filter",
            field("User", "user", user, placeholder="token name"),
            field("Command", "command", command, placeholder="PayInvoice"),
        )
        found, start = await entries(admin_of(request).store, before, user, command)
        return user_page(request, who, "Audit", form, _listing(root, found, start, user, command))


def _listing(root: str, found: list[Entry], start: int, user: str, command: str) -> Html:
    rows = [
        (
            when(e.recorded_at),
            tag("span", e.user or "—", class_="user"),
            tag("strong", e.command),
            join((link(url(f"{root}/stream", {"name": s}), s) for s in e.streams), ", "),
            e.events,
            link(url(f"{root}/trace", {"correlation_id": e.correlation_id}), e.correlation_id)
            if e.correlation_id
            else "",
            tag("code", e.command_id),
        )
        for e in found
    ]
    headings = ("when", "user", "command", "streams", "events", "correlation", "command id")
    listed = table(headings, rows, class_="audit") if rows else tag("p", "no commands here")
    if start == 0:
        return listed
    older = {"user": user, "command": command, "before": start}
    return Html(listed + tag("p", link(url(f"{root}/audit", older), "older commands")))
