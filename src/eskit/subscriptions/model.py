"""What a consumer group is made of: its source, settings, and the records it keeps."""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from eskit.errors import EskitError
from eskit.store import rules
from eskit.store.filters import EventFilter

START: Final = "start"
END: Final = "end"
Start = Literal["start", "end"] | int
"""Where a new group begins: the first event, after the newest one, or after a position."""

Strategy = Literal["round_robin", "pinned"]
Action = Literal["retry", "park", "skip"]
ACTIONS: Final = ("retry", "park", "skip")


class GroupNotFound(EskitError, LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no consumer group named {name!r}")
        self.name = name


class GroupExists(EskitError, ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"a consumer group named {name!r} exists already")
        self.name = name


class Source(msgspec.Struct, frozen=True):
    """What a group reads: one stream, one category, or the whole log (``$all``), with an
    optional ``filter`` on the events of those (stream name or event type: prefixes or a
    regex). Events the filter leaves out are never handed out: they move the group's
    checkpoint as if acked."""

    kind: Literal["stream", "category", "all"]
    name: str = ""
    filter: EventFilter | None = None

    @classmethod
    def stream(cls, name: str) -> Source:
        rules.check_name(name)
        return cls("stream", name)

    @classmethod
    def category(cls, name: str) -> Source:
        if not name or "-" in name:
            raise ValueError(f"a category is a stream name's part before '-': {name!r}")
        return cls("category", name)

    @classmethod
    def all(cls, filter: EventFilter | None = None) -> Source:
        return cls("all", "", filter)

    def filtered(self, filter: EventFilter | None) -> Source:
        """This source with ``filter`` on its events."""
        return msgspec.structs.replace(self, filter=filter)

    def matches(self, stream: str, event_type: str) -> bool:
        """Whether an event of the log read with ``category_filter`` is the group's."""
        if self.kind == "stream" and stream != self.name:
            return False
        return self.filter is None or self.filter.matches(stream, event_type)

    @classmethod
    def parse(cls, text: str) -> Source:
        """``$all``, ``$ce-<category>`` (KurrentDB's spelling) or a stream name."""
        if text == "$all":
            return cls.all()
        if text.startswith("$ce-"):
            return cls.category(text[4:])
        return cls.stream(text)

    @property
    def category_filter(self) -> str | None:
        """The category to read the log with (a stream's, for a stream group)."""
        return None if self.kind == "all" else rules.category(self.name) if self.name else None

    def __str__(self) -> str:
        return {"all": "$all", "category": f"$ce-{self.name}"}.get(self.kind, self.name)


class Settings(msgspec.Struct, frozen=True):
    """How a group hands out events."""

    message_timeout: float = 30.0
    """Seconds a consumer has to ack or nack an event before it goes to another."""
    max_retries: int = 10
    """Deliveries after the first before an event is parked."""
    max_in_flight: int = 100
    """Events one consumer holds unacked at most."""
    strategy: Strategy = "round_robin"
    """``pinned``: all events of one stream go to the same consumer while it lives."""
    retry_backoff: float = 0.1
    """Seconds before a nacked event is handed out again, doubled each time (jittered:
    ``eskit.retry.backoff``)."""

    def __post_init__(self) -> None:
        if not self.message_timeout > 0:
            raise ValueError("message_timeout must be more than 0 seconds")
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        if self.max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if self.strategy not in ("round_robin", "pinned"):
            raise ValueError("strategy is 'round_robin' or 'pinned'")
        if self.retry_backoff < 0:
            raise ValueError("retry_backoff must be 0 or more")


class Group(msgspec.Struct, frozen=True):
    """A group as stored, with its counts: what ``list``/``info`` and status pages show."""

    name: str
    source: Source
    settings: Settings
    checkpoint: int
    """Every event of the source up to here is acked, skipped or parked."""
    read_position: int
    """The log is read up to here; events after the checkpoint and up to here are waiting
    or in flight."""
    in_flight: int = 0
    waiting: int = 0
    parked: int = 0
    retried_total: int = 0
    parked_total: int = 0
    replayed_total: int = 0
    consumers: tuple[str, ...] = ()
    """Consumers seen within ``message_timeout``."""
    created_at: int = 0


class Claimed(msgspec.Struct, frozen=True):
    """An event handed to a consumer: where it is, and how many times it was handed out."""

    position: int
    stream: str
    event_id: str
    attempt: int
    replay: int = 0
    """The replay it came back with (0: first time round)."""


class Parked(msgspec.Struct, frozen=True):
    """A parked event: ``seq`` is its place in the group's parked list (replay up to it)."""

    seq: int
    position: int
    stream: str
    event_type: str
    event_id: str
    attempts: int
    reason: str
    parked_at: int


class Replay(msgspec.Struct, frozen=True):
    """A replay of parked events, as recorded: who asked, up to where, how many so far."""

    id: int
    group: str
    requested_by: str
    up_to: int
    requested_at: int
    replayed: int = 0
    finished_at: int | None = None
