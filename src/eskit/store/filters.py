"""A filter on the events of the log by stream name or event type: a list of prefixes, a
regular expression (searched, as .NET's ``Regex.IsMatch`` does: KurrentDB's server-side
filters), or both (an event must pass both). One implementation for every reader that
filters the log in Python: the gRPC layer's ``$all`` reads and subscriptions, and consumer
groups (stored with the group as JSON)."""

from __future__ import annotations

import functools
import re
from typing import Literal

import msgspec

MAX_PREFIXES = 1000
MAX_TEXT = 1000
"""Characters of a prefix or regex at most (a filter is stored with a group)."""


class EventFilter(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Events whose stream name (``by="stream"``) or event type (``by="type"``) starts with
    one of ``prefixes`` (none given: any) and contains a match of ``regex`` (empty: any)."""

    by: Literal["stream", "type"]
    prefixes: tuple[str, ...] = ()
    regex: str = ""

    def __post_init__(self) -> None:
        if self.by not in ("stream", "type"):
            raise ValueError(f"a filter is by 'stream' or 'type', not {self.by!r}")
        if len(self.prefixes) > MAX_PREFIXES:
            raise ValueError(f"a filter has at most {MAX_PREFIXES} prefixes")
        for text in (*self.prefixes, self.regex):
            if not isinstance(text, str) or len(text) > MAX_TEXT:
                raise ValueError(f"a filter's prefix or regex is a text of at most {MAX_TEXT}")
        if self.regex:
            try:
                _compiled(self.regex)
            except re.error as error:
                raise ValueError(
                    f"the filter's regex {self.regex!r} is not valid: {error}"
                ) from None

    def matches(self, stream: str, event_type: str) -> bool:
        subject = stream if self.by == "stream" else event_type
        if self.prefixes and not subject.startswith(self.prefixes):
            return False
        return not self.regex or _compiled(self.regex).search(subject) is not None

    def __str__(self) -> str:
        by = "stream" if self.by == "stream" else "event type"
        parts = []
        if self.prefixes:
            parts.append(f"{by} prefix {', '.join(map(repr, self.prefixes))}")
        if self.regex:
            parts.append(f"{by} regex {self.regex!r}")
        return " and ".join(parts) or f"any {by}"


@functools.lru_cache(maxsize=256)
def _compiled(regex: str) -> re.Pattern[str]:
    return re.compile(regex)
