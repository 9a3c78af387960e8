"""The one message format every broker carries: what a consumer on another machine gets.

The body is the recorded event as JSON (id, stream, version, position, type, data,
metadata, recorded_at in ISO-8601), so a consumer needs nothing but a JSON parser. Headers
repeat what routing and deduplication need without parsing the body. Names that go into
broker addresses (NATS subjects, RabbitMQ routing keys) are escaped so that any stream name
the store accepts makes a valid, unambiguous token.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from typing import Final

import msgspec

from eskit.store.model import RecordedEvent

EVENT_ID: Final = "eskit-event-id"
POSITION: Final = "eskit-position"
STREAM: Final = "eskit-stream"
TYPE: Final = "eskit-type"

_PREFIX = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(RecordedEvent)


def body(event: RecordedEvent) -> bytes:
    """The event as JSON, as the store recorded it."""
    return _encoder.encode(event)


def decode(data: bytes) -> RecordedEvent:
    """The event a message body carries; ``ValueError`` if it is not one."""
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as error:
        raise ValueError(f"not an eskit event message: {error}") from error
    except msgspec.DecodeError as error:
        raise ValueError(f"not an eskit event message (bad JSON): {error}") from error


def headers(event: RecordedEvent) -> dict[str, str]:
    """The headers every broker's message carries (ASCII only: stream names are escaped)."""
    return {
        EVENT_ID: str(event.id),
        POSITION: str(event.position),
        STREAM: token(event.stream),
        TYPE: token(event.type),
    }


def token(name: str) -> str:
    """``name`` as one address token: letters, digits, ``-`` and ``_`` kept, every other
    character percent-encoded as UTF-8 (``invoice-4.2`` -> ``invoice-4%2E2``). The empty
    name (the category of ``-x``) is ``%``, which no other name gives."""
    if not name:
        return "%"
    if all(c in _SAFE for c in name):
        return name
    return "".join(c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode()) for c in name)


def partition_of(stream: str, count: int) -> int:
    """The partition of a stream: the same on every machine and Python run (CRC-32), and
    the same as the store-fed partitioned projections use."""
    return zlib.crc32(stream.encode()) % count


def check_prefix(prefix: object) -> str:
    """A prefix names the broker's stream or exchange and starts every address."""
    if not isinstance(prefix, str) or not _PREFIX.match(prefix):
        raise ValueError(
            f"invalid broker prefix {prefix!r}: use 1-40 lower-case letters, digits and"
            " underscores, starting with a letter"
        )
    return prefix


def routing_key(event: RecordedEvent, limit: int = 255) -> str:
    """``{category}.{stream}`` escaped, shortened to ``limit`` bytes by hashing the stream
    part when needed (RabbitMQ's routing keys hold at most 255 bytes)."""
    key = f"{token(event.category)}.{token(event.stream)}"
    if len(key) <= limit:
        return key
    digest = hashlib.sha256(event.stream.encode()).hexdigest()
    return f"{token(event.category)[: limit - len(digest) - 2]}.{digest}"
