"""The argument checks and page cursors of the store's public methods, shared by both faces.

``EventStore`` (async) and ``eskit.sync.SyncStore`` (blocking) call the same function for
each method, so they accept and refuse exactly the same arguments, with the same errors
(``TypeError`` for a wrong type, ``ValueError`` for a wrong value), and page the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from eskit.store import rules
from eskit.store.engine import versions_up_to
from eskit.store.model import RecordedEvent

StreamCursor = tuple[int | None, int | None]
"""Where a stream read goes on: the version to read from, and how many events are still
wanted (None: all)."""
LogCursor = tuple[int, int | None]
"""Where a read of the log goes on: the position searched up to, and how many events are
still wanted (None: all)."""


def read_stream(stream: str, from_version: object, backwards: object, limit: object) -> None:
    rules.check_name(stream)
    rules.check_optional_count("from_version", from_version, minimum=0)
    rules.check_flag("backwards", backwards)
    rules.check_optional_count("limit", limit, minimum=0)


def snapshot(stream: str, snapshot_version: object, max_version: int | None) -> int:
    """Check a snapshot read's arguments; the highest version it may return."""
    rules.check_name(stream)
    rules.check_number("snapshot_version", snapshot_version)
    rules.check_optional_count("max_version", max_version, minimum=0)
    return rules.MAX_INT64 if max_version is None else rules.clamp(max_version)


def events_after_snapshot(snapshot_taken_at: int | None, max_version: int | None) -> StreamCursor:
    """Where ``read_from_snapshot`` reads on after the snapshot (taken at that version)."""
    start = None if snapshot_taken_at is None else snapshot_taken_at + 1
    wanted = None if max_version is None else versions_up_to(max_version, start)
    return start, wanted


def event_id(value: object) -> uuid.UUID:
    if not isinstance(value, uuid.UUID):
        raise TypeError(f"event_id must be a uuid.UUID, got {value!r:.60}")
    return value


def list_streams(category: str | None, after: object, limit: object) -> bool:
    """Check ``list_streams``' arguments; False when the answer is empty whatever is stored
    (a category never holds a ``-``)."""
    if category is not None:
        rules.check_name(category, "category")
    if after is not None and not isinstance(after, str):
        raise TypeError(f"after must be a stream name (str) or None, got {after!r:.60}")
    rules.check_count("limit", limit, minimum=1)
    return category is None or "-" not in category


def log_filter(
    after: int, types: Iterable[str] | None, category: str | None
) -> tuple[str, ...] | None:
    """Check the arguments that select events of the log; the type filter to use."""
    rules.check_count("after", after)
    type_filter = rules.check_types(types)
    if category is not None:
        rules.check_name(category, "category")
    return type_filter


def read_backwards(backwards: object, before: object) -> bool:
    """Check ``read_all``'s direction: whether it reads backwards. ``before`` bounds only a
    backwards read (a forward read stops where the log ends)."""
    rules.check_flag("backwards", backwards)
    rules.check_optional_count("before", before)
    if before is not None and not backwards:
        raise ValueError("before= bounds a backwards read: pass backwards=True too")
    return bool(backwards)


def backwards_cursor(after: int, before: int | None, limit: int | None) -> LogCursor | None:
    """Where a backwards read of the log starts (None: it reads nothing)."""
    below = rules.MAX_INT64 if before is None else rules.clamp(before)
    return None if limit == 0 or below <= after + 1 else (below, limit)


def next_backwards_cursor(
    page: list[RecordedEvent], remaining: int | None, count: int
) -> LogCursor | None:
    """Where a backwards read of the log goes on after ``page``: below its last (oldest)
    event; None: done."""
    left = None if remaining is None else remaining - len(page)
    return None if len(page) < count or left == 0 else (page[-1].position, left)


def page_count(remaining: int | None, page_size: int) -> int:
    """How many events to ask for next."""
    return page_size if remaining is None else min(remaining, page_size)


def next_stream_cursor(
    page: list[RecordedEvent], cursor: StreamCursor, count: int, backwards: bool
) -> StreamCursor | None:
    """Where a stream read goes on after ``page`` (``count`` were asked for); None: done."""
    _, remaining = cursor
    if len(page) < count or count == 0:
        return None
    following = page[-1].version + (-1 if backwards else 1)
    if following < 0:
        return None
    return following, None if remaining is None else remaining - len(page)


def next_log_cursor(
    page: list[RecordedEvent], searched: int, remaining: int | None, count: int
) -> LogCursor | None:
    """Where a read of the log goes on after ``page``; None: done."""
    left = None if remaining is None else remaining - len(page)
    return None if len(page) < count or left == 0 else (searched, left)
