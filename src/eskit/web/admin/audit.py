"""The audit view: who did what, newest first, from the metadata the command bus and the
HTTP API stamp on every event of a command (``command``, ``command_id``,
``correlation_id``, and ``user``: the name of the token that sent it).

The log is read a window of positions at a time, from the head back, until a page of
commands is found (or ``SCAN`` windows were read: a filter that matches little does not
read the whole log at once): a command is one row (its events grouped by ``command_id``).
Raw appends (``POST /streams/...``) carry the token's name too but no command, so only
commands are listed; a token allowed to append could still write metadata that looks like
a command's, which the audit cannot tell apart.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated, Final

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from eskit.store import rules
from eskit.store.base import EventStore
from eskit.store.model import RecordedEvent
from eskit.web.admin.session import user_page, visitor
from eskit.web.admin.site import admin_of, base, url
from eskit.web.auth import USER

WINDOW: Final = 1000
"""Positions of the log read per query."""
SCAN: Final = 20
"""Windows read at most per page."""
PAGE: Final = 50
"""Commands shown per page."""
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
    store: EventStore,
    before: int | None,
    user: str = "",
    command: str = "",
    limit: int = PAGE,
) -> tuple[list[Entry], int]:
    """Up to ``limit`` commands (of ``user``, of type ``command``) among the positions up to
    ``before`` (default: the head), newest first, and where the next page starts (0: the
    log's start was reached)."""
    head = await store.last_position()
    start = head if before is None else min(before, head)
    found: dict[str, Entry] = {}
    for _ in range(SCAN):
        if start == 0:
            break
        low = max(0, start - WINDOW)
        page = await store.read_page(after=low, limit=WINDOW)
        for event in page.events:
            if event.position <= start:
                _add(found, event)
        start = low
        if sum(1 for e in found.values() if _matches(e, user, command)) > limit:
            break
    kept = sorted(
        (e for e in found.values() if _matches(e, user, command)), key=lambda e: -e.first_position
    )
    if len(kept) > limit:  # the next page starts just before the last command shown
        return kept[:limit], kept[limit - 1].first_position - 1
    return kept, start


def _matches(entry: Entry, user: str, command: str) -> bool:
    return (not user or entry.user == user) and (not command or entry.command == command)


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
        limit: Annotated[int, Query(ge=1, le=500)] = PAGE,
    ) -> Response:
        """Commands by time, newest first, a page at a time; filtered by user and command
        type."""
        who = visitor(request)
        store = admin_of(request).store
        found, start = await entries(store, before, user, command, limit)
        root = base(request)
        here = {"user": user, "command": command, "limit": None if limit == PAGE else limit}
        links: list[tuple[str | None, str]] = []
        if before is not None:
            links.append((url(f"{root}/audit", here), "newest commands"))
        if start > 0:
            links.append((url(f"{root}/audit", {"before": start, **here}), "older commands"))
        end = await store.last_position() if before is None else before
        return user_page(
            request,
            who,
            "audit.html",
            "Audit",
            user_filter=user,
            command=command,
            found=found,
            links=links,
            searched=(start, end),
        )
