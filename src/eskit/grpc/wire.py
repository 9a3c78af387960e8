"""The ``ReadResp`` of one event, written straight in protobuf's wire format.

A read or subscription sends one message per event; building it as nested protobuf objects
(``mapping.recorded``) costs several times what writing its bytes does, and the server then
serializes it again. The Read method's serializer passes these bytes through
(``streams.register``); they parse as the message ``mapping.recorded`` builds (tested
for all inputs). Fields at their default (0, empty) are left out, as protobuf does, but
for the one a oneof holds.
"""

from __future__ import annotations

from typing import Final

from eskit.grpc.mapping import data_bytes, metadata_bytes, ticks
from eskit.store.model import RecordedEvent

_SMALL: Final = [bytes([n]) for n in range(0x80)]
MASK64: Final = (1 << 64) - 1


def varint(value: int) -> bytes:
    """``value`` (0 to 2**64 - 1) as a protobuf varint."""
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, its length, its bytes."""
    return tag + varint(len(payload)) + payload


def _number(tag: bytes, value: int) -> bytes:
    """A varint field, left out at 0; a negative (int64) as its 64-bit two's complement."""
    return tag + varint(value & MASK64) if value else b""


def _entry(key: str, value: str) -> bytes:
    """A ``map<string, string>`` entry of field 6 (RecordedEvent.metadata)."""
    return _field(b"\x32", _field(b"\x0a", key.encode()) + _field(b"\x12", value.encode()))


_KINDS: dict[tuple[str, str], bytes] = {}
"""The type and content-type entries of the event types seen (few; bounded all the same)."""
MAX_KINDS: Final = 10_000


def _kind(kind: str, content_type: str) -> bytes:
    key = (kind, content_type)
    found = _KINDS.get(key)
    if found is None:
        if len(_KINDS) >= MAX_KINDS:
            _KINDS.clear()
        found = _KINDS[key] = _entry("type", kind) + _entry("content-type", content_type)
    return found


def _uuid(event: RecordedEvent, structured: bool) -> bytes:
    """``RecordedEvent.id`` (field 1): the UUID as a string, or as two signed 64-bit halves."""
    if not structured:
        return _field(b"\x0a", _field(b"\x12", str(event.id).encode()))
    value = event.id.int
    halves = _number(b"\x08", value >> 64) + _number(b"\x10", value & MASK64)
    return _field(b"\x0a", _field(b"\x0a", halves))


def _recorded(
    event: RecordedEvent,
    id_: bytes,
    stream: str,
    revision: int,
    kind: str,
    content_type: str,
    created: bytes,
    custom: bytes,
    data: bytes,
) -> bytes:
    position = event.position
    return b"".join(
        (
            id_,
            _field(b"\x12", _field(b"\x1a", stream.encode())),
            _number(b"\x18", revision),
            _number(b"\x20", position),
            _number(b"\x28", position),
            _kind(kind, content_type),
            created,
            _field(b"\x3a", custom) if custom else b"",
            _field(b"\x42", data) if data else b"",
        )
    )


def read_event(event: RecordedEvent, structured: bool, link: str | None = None) -> bytes:
    """The ``ReadResp`` of ``event``, with a link from ``link`` (``$ce-``/``$et-``) whose
    revision is the event's position."""
    id_ = _uuid(event, structured)
    created = _entry("created", str(ticks(event.recorded_at)))
    body = _field(
        b"\x0a",
        _recorded(
            event,
            id_,
            event.stream,
            event.version,
            event.type,
            event.content_type,
            created,
            metadata_bytes(event),
            data_bytes(event),
        ),
    )
    if link is not None:
        pointer = f"{event.version}@{event.stream}".encode()
        body += _field(
            b"\x12",
            _recorded(
                event,
                id_,
                link,
                event.position,
                "$>",
                "application/octet-stream",
                created,
                b"",
                pointer,
            ),
        )
    # ReadEvent.commit_position is one of a oneof: written even at 0
    return _field(b"\x0a", body + b"\x18" + varint(event.position))
