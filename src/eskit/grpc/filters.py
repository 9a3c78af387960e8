"""Which events of the log a read or subscription of ``$all`` (or ``$ce-``/``$et-``) yields.

KurrentDB's server-side filters select by stream name or event type, with a list of
prefixes or a regular expression (``eskit.store.filters.EventFilter``, which consumer
groups store too). A token
limited to some categories sees only those. ``$ce-<category>`` and ``$et-<type>`` are
answered from the store's own category and type filters, so they read no other events.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from eskit.grpc.errors import denied, invalid
from eskit.store import rules
from eskit.store.filters import EventFilter
from eskit.store.model import RecordedEvent
from eskit.web.tokens import Grant

CATEGORY_STREAM = "$ce-"
TYPE_STREAM = "$et-"
INDEX = "$idx-"
"""KurrentDB 25's secondary indexes are read as a stream-name prefix filter on ``$all``:
``$idx-ce-<category>`` and ``$idx-et-<type>`` are eskit's category and type filters."""


@dataclasses.dataclass(frozen=True)
class Selection:
    """Events of the log to yield: narrowed by the store (``category``, ``types``), then by
    ``matches``."""

    category: str | None = None
    types: tuple[str, ...] | None = None
    filter: EventFilter | None = None
    readable: frozenset[str] | None = None
    """The categories the caller may read; None: all of them."""

    @property
    def narrowed(self) -> bool:
        """Whether the store yields only selected events (no check left to do here)."""
        return self.filter is None and self.readable is None

    def matches(self, event: RecordedEvent) -> bool:
        if self.readable is not None and event.category not in self.readable:
            return False
        return self.filter is None or self.filter.matches(event.stream, event.type)


def of_filter(options: Any, grant: Grant) -> Selection:
    """The selection of a ``$all`` read's ``filter`` / ``no_filter`` options (a prefix
    ``$idx-ce-``/``$idx-et-`` is a secondary index: a category or a type)."""
    readable = _readable(grant)
    only = next(iter(readable)) if readable is not None and len(readable) == 1 else None
    if options.WhichOneof("filter_option") != "filter":
        return Selection(category=only, readable=readable)
    given = options.filter
    which = given.WhichOneof("filter")
    if which is None:
        return Selection(category=only, readable=readable)
    prefixes = tuple(getattr(given, which).prefix)
    if which == "stream_identifier" and len(prefixes) == 1 and prefixes[0].startswith(INDEX):
        index = of_stream("$" + prefixes[0][len(INDEX) :], grant)
        if index is not None:
            return index
    return Selection(
        category=only,  # a token of one category: the store reads no other
        filter=event_filter(given),
        readable=readable,
    )


def event_filter(given: Any) -> EventFilter | None:
    """The ``EventFilter`` of a ``FilterOptions`` message (None if it names none);
    ``INVALID_ARGUMENT`` for a bad regex."""
    which = given.WhichOneof("filter")
    if which is None:
        return None
    expression = getattr(given, which)
    try:
        return EventFilter(
            "stream" if which == "stream_identifier" else "type",
            tuple(expression.prefix),
            expression.regex,
        )
    except ValueError as error:
        raise invalid(str(error)) from None


def of_stream(stream: str, grant: Grant) -> Selection | None:
    """The selection a ``$ce-``/``$et-`` stream name stands for; None for another stream."""
    if stream.startswith(CATEGORY_STREAM):
        category = stream[len(CATEGORY_STREAM) :]
        rules.check_name(category, "category")
        if not grant.allows("read", category):
            raise denied(f"token {grant.name!r} may not read category {category!r}")
        return Selection(category=category)
    if stream.startswith(TYPE_STREAM):
        event_type = stream[len(TYPE_STREAM) :]
        rules.check_name(event_type, "event type")
        return Selection(types=(event_type,), readable=_readable(grant))
    return None


def _readable(grant: Grant) -> frozenset[str] | None:
    """The categories ``grant`` may read, None for all; ``denied`` if none."""
    if grant.allows("read"):
        return None
    if not grant.allows_some("read"):
        raise denied(f"token {grant.name!r} has no read scope")
    return frozenset(grant.categories("read"))
