"""The hash chain each stream carries, so that an event altered or removed behind eskit's back
is found (``eskit verify``).

Every event stores ``link(previous, ...)``: a BLAKE2b-256 hash over the link of the
stream's previous event and everything the event is (stream, version, id, type, data and
metadata as stored, recording time). Changing any of it, or removing an event, breaks the
chain from there on. Whoever can write the database could recompute a plain chain; with an
audit key (``ESKIT_AUDIT_KEY``, kept away from the database) the links are keyed BLAKE2b (a
MAC) and cannot be recomputed without it. BLAKE2b rather than SHA-256: a third cheaper on
CPUs without SHA instructions, and keyed natively. A removed tail is only
seen against anchors saved earlier (``eskit verify --save-anchors``).
"""

from __future__ import annotations

import hashlib
import os
import struct
import uuid
from typing import Any, Final

import msgspec

GENESIS: Final = bytes(32)
"""The 'previous hash' of a stream's first event."""
AUDIT_KEY_ENV: Final = "ESKIT_AUDIT_KEY"


class ChainRow(msgspec.Struct, frozen=True, gc=False):
    """An event as stored, with its link: what ``eskit verify`` checks."""

    position: int
    stream: str
    version: int
    id: bytes
    type: str
    data: str
    metadata: str
    recorded_at: int
    hash: bytes | None
    """None for events written before the store kept a chain."""

    def expected(self, previous: bytes | None, key: bytes | None) -> bytes:
        """What the link of this row must be, after ``previous``."""
        return link(
            previous,
            self.stream,
            self.version,
            self.id,
            self.type,
            self.data,
            self.metadata,
            self.recorded_at,
            key,
        )


def audit_key() -> bytes | None:
    """The audit key from ``ESKIT_AUDIT_KEY`` (hex, 16 to 64 bytes), or None."""
    text = os.environ.get(AUDIT_KEY_ENV)
    if not text:
        return None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(
            f"{AUDIT_KEY_ENV} must be hex (e.g. from `openssl rand -hex 32`)"
        ) from None
    if not 16 <= len(key) <= 64:
        raise ValueError(f"{AUDIT_KEY_ENV} must be 16 to 64 bytes (32 to 128 hex digits)")
    return key


_HEADER: Final = struct.Struct(">32s16sqqIIII")
"""previous link, id, version, recorded_at, then the lengths of stream, type, data and
metadata, which follow: no two events hash alike by shifting bytes between fields."""


def link(
    previous: bytes | None,
    stream: str,
    version: int,
    event_id: uuid.UUID | bytes,
    type_: str,
    data: str,
    metadata: str,
    recorded_at: int,
    key: bytes | None,
) -> bytes:
    """The hash of one event, chained to ``previous`` (the stream's last event's, or None
    for its first). Runs on the writer's thread for every event: kept to one buffer and
    one call into C."""
    raw_id = event_id.bytes if isinstance(event_id, uuid.UUID) else event_id
    name, kind, body, meta = stream.encode(), type_.encode(), data.encode(), metadata.encode()
    header = _HEADER.pack(
        previous or GENESIS,
        raw_id,
        version,
        recorded_at,
        len(name),
        len(kind),
        len(body),
        len(meta),
    )
    hasher = (_HASHERS.get(key) or _keyed(key)).copy()
    hasher.update(b"".join((header, name, kind, body, meta)))
    digest: bytes = hasher.digest()
    return digest


_HASHERS: dict[bytes | None, Any] = {}
"""A BLAKE2b-256 state set up once per key: copying it skips the key schedule, a quarter
of a short message's hashing."""


def _keyed(key: bytes | None) -> Any:
    base = _HASHERS[key] = hashlib.blake2b(digest_size=32, key=key or b"")
    return base
