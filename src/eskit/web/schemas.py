"""The JSON bodies of the API as msgspec types: encoded fast, and their JSON schemas are
what ``/openapi.json`` documents (``components``)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Final

import msgspec
from starlette.responses import JSONResponse as StarletteJSON

from eskit.store import model
from eskit.store.model import JSONObject, RecordedEvent

JSON: Final = "application/json"

encode = msgspec.json.Encoder().encode


class ErrorDetail(msgspec.Struct, frozen=True, omit_defaults=True):
    """What went wrong. A version conflict also names the stream and both versions
    (``actual`` is null when the stream has no events)."""

    type: str
    message: str
    stream: str | msgspec.UnsetType = msgspec.UNSET
    expected: str | int | msgspec.UnsetType = msgspec.UNSET
    actual: int | msgspec.UnsetType | None = msgspec.UNSET


class ErrorBody(msgspec.Struct, frozen=True):
    error: ErrorDetail


class EventRef(msgspec.Struct, frozen=True):
    """An event a command appended."""

    id: uuid.UUID
    type: str
    version: int


class CommandReply(msgspec.Struct, frozen=True):
    """What a command did. ``replayed``: the same command had run before with this
    ``command_id`` and this is its original result (nothing was written again).
    ``version`` and ``position`` are those of its last event; null when it appended
    nothing to its stream."""

    command_id: uuid.UUID
    stream: str
    version: int | None
    position: int | None
    events: list[EventRef]
    replayed: bool


class NewEvent(msgspec.Struct, frozen=True):
    """An event to append: a type name, a JSON object of data, optional metadata and id.

    Give an ``id`` to make the append idempotent: retrying it writes nothing twice. (The
    store's ``eskit.NewEvent`` also takes payloads kept as bytes, which the HTTP API does
    not: its bodies are JSON.)
    """

    type: str
    data: JSONObject
    metadata: JSONObject | None = None
    id: uuid.UUID | None = None

    def to_store(self, metadata: JSONObject | None) -> model.NewEvent:
        """The event to append, with ``metadata`` in place of the body's."""
        return model.NewEvent(self.type, self.data, metadata, self.id)


class AppendBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Events to append to a stream, all or none. Give each an ``id`` to make a retry
    write nothing twice."""

    events: Annotated[list[NewEvent], msgspec.Meta(min_length=1)]


class AppendReply(msgspec.Struct, frozen=True):
    """Where the append landed: its last event's version and position, and how many events
    it wrote (an idempotent retry answers with the original result)."""

    stream: str
    last_version: int
    last_position: int
    count: int


class StreamPage(msgspec.Struct, frozen=True):
    """A page of a stream's events. ``next_from_version`` continues in the same direction;
    null when the page is the last."""

    stream: str
    events: list[RecordedEvent]
    next_from_version: int | None
    next: str | None


class LogPage(msgspec.Struct, frozen=True):
    """A page of the global log. Pass ``next_after`` as ``after`` for the next page (with
    a filter it may lie past the last event shown: the events in between did not match)."""

    events: list[RecordedEvent]
    next_after: int
    next: str


REPLY_TYPES: Final = (ErrorBody, CommandReply, AppendBody, AppendReply, StreamPage, LogPage)


class JSONResponse(StarletteJSON):
    """JSON encoded by msgspec (content already encoded as bytes is sent as it is)."""

    media_type = JSON

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else encode(content)
