"""The envelopes the store moves: NewEvent in, RecordedEvent out, append outcomes, snapshots."""

from __future__ import annotations

import base64
import datetime as dt
import enum
import uuid
from collections.abc import Sequence
from typing import Any, Final, Literal, NamedTuple, TypeAlias

import msgspec


class StreamState(enum.Enum):
    """Expected states of a stream that are not an exact version."""

    ANY = "any"
    NO_STREAM = "no_stream"
    STREAM_EXISTS = "stream_exists"

    def __repr__(self) -> str:
        return f"eskit.{self.name}"


ANY: Final = StreamState.ANY
"""Append whatever the stream's state (no concurrency check)."""
NO_STREAM: Final = StreamState.NO_STREAM
"""Append only if the stream has no events (never written, or soft-deleted)."""
STREAM_EXISTS: Final = StreamState.STREAM_EXISTS
"""Append only if the stream has at least one event."""

ExpectedVersion: TypeAlias = StreamState | int
"""``ANY``, ``NO_STREAM``, ``STREAM_EXISTS`` or the version of the stream's last event."""

JSONObject: TypeAlias = dict[str, Any]

JSON_CONTENT_TYPE: Final = "application/json"
"""The content type of event data that is a JSON object (``RecordedEvent.content_type``)."""


class RawData(msgspec.Struct, frozen=True):
    """A payload that is not a JSON object, kept byte for byte with its content type.

    KurrentDB's clients send data and metadata as bytes: JSON that is not an object
    (``[1, 2]``), text under a JSON content type that is not JSON at all, binary data. eskit
    stores such a payload as it came and gives it back in ``RecordedEvent.raw`` (data) or
    ``RecordedEvent.raw_metadata`` (metadata, whose content type is not kept). Raw events are
    not domain events: upcasters and aggregates do not take them.
    """

    content_type: str
    body: bytes


class NewEvent(msgspec.Struct, frozen=True):
    """An event to append: a type name, a JSON object of data, optional metadata and id.

    Give an ``id`` to make the append idempotent: retrying it writes nothing twice. Data or
    metadata that must be kept as bytes (not a JSON object) is given as ``RawData``.
    """

    type: str
    data: JSONObject | RawData
    metadata: JSONObject | RawData | None = None
    id: uuid.UUID | None = None


class Append(msgspec.Struct, frozen=True):
    """One stream's part of an atomic append to several streams (``EventStore.append_many``)."""

    stream: str
    events: Sequence[NewEvent]
    expected_version: ExpectedVersion = ANY


class RecordedEvent(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """An event as stored: where it sits in its stream (version) and in the log (position).

    Encoded (msgspec: the HTTP API, brokers), ``raw`` and ``raw_metadata`` appear only when
    set, their bytes as base64."""

    id: uuid.UUID
    stream: str
    version: int
    position: int
    type: str
    data: JSONObject
    metadata: JSONObject
    recorded_at: dt.datetime
    raw: RawData | None = None
    """The data as given when it was not a JSON object (``data`` is then ``{}``)."""
    raw_metadata: bytes | None = None
    """The metadata as given when it was not a JSON object (``metadata`` is then ``{}``)."""

    @property
    def category(self) -> str:
        """The part of the stream name before the first ``-``."""
        return self.stream.split("-", 1)[0]

    @property
    def content_type(self) -> str:
        """``application/json`` for JSON object data, else the raw data's content type."""
        return JSON_CONTENT_TYPE if self.raw is None else self.raw.content_type


def readable(body: bytes) -> str:
    """Bytes kept as they came (``RawData``), for a person: the text when they are UTF-8
    without control characters, else base64; with their length."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        text = None
    if text is not None and (text.isprintable() or not text):
        return f"{text} ({len(body)} bytes)"
    return f"base64:{base64.b64encode(body).decode()} ({len(body)} bytes)"


def raw_data(content_type: str | None, body: bytes | None) -> RawData | None:
    """The ``RecordedEvent.raw`` of a stored event (content type None: JSON object data)."""
    return None if content_type is None else RawData(content_type, body or b"")


class AppendResult(msgspec.Struct, frozen=True, gc=False):
    """Where an append landed: its last event's version in the stream and position in the log.

    Untracked by the garbage collector (``gc=False``): it holds only ints, so it can never
    be part of a cycle, and one is made per append."""

    last_version: int
    last_position: int

    @property
    def first_position(self) -> int:
        """Position of the append's first event (the events of one append are consecutive)."""
        return self.last_position - self.count + 1

    count: int = 1


class Page(NamedTuple):
    """One page of the global log and how far it was searched.

    ``next_after`` is the position to pass as ``after`` for the next page. With a type or
    category filter it can lie past the last event yielded (the events in between did not
    match), so a filtered reader that checkpoints it never searches the same span twice.
    """

    events: list[RecordedEvent]
    next_after: int


StreamStatus: TypeAlias = Literal["live", "deleted", "tombstoned"]
"""Whether a stream reads normally, was soft-deleted, or was tombstoned (hard-deleted)."""


class StreamInfo(msgspec.Struct, frozen=True):
    """A stream as ``EventStore.list_streams`` shows it: its last event in the log.

    Deleted and tombstoned streams are listed too, flagged by ``status``: their events stay
    in the log, and an operator looking for a stream wants to see that it was deleted rather
    than find nothing. ``last_*`` describe the newest event written to the stream, even when
    stream metadata or a delete hides it from ``read_stream``.
    """

    stream: str
    last_version: int
    last_position: int
    last_type: str
    last_recorded_at: dt.datetime
    status: StreamStatus = "live"

    @property
    def event_count(self) -> int:
        """Events ever written to the stream (versions are contiguous from 0)."""
        return self.last_version + 1

    @property
    def category(self) -> str:
        """The part of the stream name before the first ``-``."""
        return self.stream.split("-", 1)[0]


class StreamMetadata(msgspec.Struct, frozen=True):
    """Per-stream rules applied on every read of the stream (KurrentDB's ``$tb``, ``$maxCount``,
    ``$maxAge``).

    ``truncate_before``: versions below it are hidden. ``max_count``: only the newest n
    events are visible. ``max_age``: events older than this many seconds are hidden. When
    several are set, an event is hidden as soon as one of them says so. Nothing is deleted
    from the log: ``read_all`` still yields hidden events.

    ``custom``: any other keys (KurrentDB clients keep their own in stream metadata), a JSON
    object stored and given back as it was set; eskit applies no rule of its own to it.
    """

    truncate_before: int | None = None
    max_count: int | None = None
    max_age: float | None = None
    custom: JSONObject | None = None


class Snapshot(msgspec.Struct, frozen=True):
    """An aggregate's state folded from its stream's events up to and including ``version``.

    ``snapshot_version`` is the aggregate code's schema number for ``state``: a snapshot is
    only loaded by code asking for that very number, so changing the state's shape means
    bumping it, and old snapshots are simply not found. ``recorded_at`` is set by the store.
    """

    stream: str
    version: int
    snapshot_version: int
    state: JSONObject
    recorded_at: dt.datetime | None = None
