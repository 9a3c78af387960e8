"""The hash chain each stream carries, so that an event altered, moved or removed behind
eskit's back is found (``eskit verify``).

Every event stores ``link(previous, ...)``: a BLAKE2b-256 hash over the link of the
stream's previous event and everything a reader relies on (global position, stream,
version, id, type, data and metadata as stored, recording time). Changing any of it,
swapping two events' positions or removing an event breaks the chain from there on. The
category is not linked: it is the stream name's prefix, and verify recomputes it. Whoever
can write the database could recompute a plain chain; with an audit key
(``ESKIT_AUDIT_KEY``, kept away from the database) the links are keyed BLAKE2b (a MAC) and
cannot be recomputed without it. BLAKE2b rather than SHA-256: a third cheaper on CPUs
without SHA instructions, and keyed natively. A removed tail is only seen against anchors
saved earlier (``eskit verify --save-anchors``).

Two link formats exist. Stores written before eskit covered the position hold ``v1``
links (``link_v1``: no position) or none. Each store records its *chain start*
(``ChainStart``), the first position whose event must carry a ``v2`` link: 1 for a store
created with it, the next position for a store upgraded to it. The record is keyed like
the links (``chain_start_hash``), so that moving it to hide edited events behind it is
found; saved anchors hold it too.
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
    category: str
    version: int
    id: bytes
    type: str
    data: str
    metadata: str
    recorded_at: int
    hash: bytes | None
    """None for events written before the store kept a chain."""
    content_type: str | None = None
    """The content type of data kept as bytes (``raw_data``); None: ``data`` is the data."""
    raw_data: bytes | None = None
    raw_metadata: bytes | None = None
    """Metadata kept as bytes; None: ``metadata`` is the metadata."""

    def expected(self, previous: bytes | None, key: bytes | None, v2: bool = True) -> bytes:
        """What the link of this row must be, after ``previous``: in the current format, or
        (``v2=False``) in the one of events written before the store's chain start."""
        if not v2:
            return link_v1(
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
        return link(
            previous,
            self.position,
            self.stream,
            self.version,
            self.id,
            self.type,
            self.data,
            self.metadata,
            self.recorded_at,
            key,
            self.content_type,
            self.raw_data,
            self.raw_metadata,
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


class ChainStart(msgspec.Struct, frozen=True):
    """The store's record of where its chain starts, and that record's own hash."""

    position: int
    hash: bytes

    def holds(self, key: bytes | None) -> bool:
        """Whether the record is as a writer with ``key`` made it."""
        return chain_start_hash(self.position, key) == self.hash


_CHAIN_START: Final = b"eskit chain start"
"""Domain separation: no event's link message can equal a chain start's (nor its length)."""


def chain_start_hash(position: int, key: bytes | None) -> bytes:
    """The hash of a chain start record: keyed BLAKE2b-256 with the audit key, plain
    without one."""
    return _digest(key, _CHAIN_START, position.to_bytes(8, "big"))


_HEADER: Final = struct.Struct(">2s32s16sqqqIIII")
"""The format's tag, previous link, id, position, version, recorded_at, then the lengths of
stream, type, data and metadata, which follow: no two events hash alike by shifting bytes
between fields."""
_pack_header: Final = _HEADER.pack
_V2: Final = b"v2"
_RAW: Final = b"r2"
"""The tag of a v2 link over an event with raw payloads: their lengths and bytes follow."""
_RAW_LENGTHS: Final = struct.Struct(">III")
_NONE: Final = 0xFFFFFFFF
"""The length of a raw part that is absent (so absent and empty hash differently)."""


def link(
    previous: bytes | None,
    position: int,
    stream: str,
    version: int,
    event_id: uuid.UUID | bytes,
    type_: str,
    data: str,
    metadata: str,
    recorded_at: int,
    key: bytes | None,
    content_type: str | None = None,
    raw_data: bytes | None = None,
    raw_metadata: bytes | None = None,
) -> bytes:
    """The hash of one event at ``position``, chained to ``previous`` (the stream's last
    event's, or None for its first). An event with raw payloads (``RawData``) is hashed
    with its content type and bytes too."""
    raw_id = event_id.bytes if isinstance(event_id, uuid.UUID) else event_id
    return link_event(
        hasher(key),
        stream.encode(),
        recorded_at,
        previous,
        position,
        version,
        raw_id,
        type_,
        data,
        metadata,
        content_type,
        raw_data,
        raw_metadata,
    )


def hasher(key: bytes | None) -> Any:
    """The BLAKE2b-256 state links with ``key`` start from (set up once per key): what
    ``link_event`` copies for each event."""
    return _HASHERS.get(key) or _keyed(key)


def link_event(
    base: Any,
    name: bytes,
    recorded_at: int,
    previous: bytes | None,
    position: int,
    version: int,
    raw_id: bytes,
    type_: str,
    data: str,
    metadata: str,
    content_type: str | None,
    raw_data: bytes | None,
    raw_metadata: bytes | None,
) -> bytes:
    """``link`` for the writers, inside their transaction: ``base`` (``hasher``) and the
    stream's name as bytes are set up once per append by the caller, so an event costs one
    call of ours, one buffer and one hash in C (no closure made per append)."""
    kind, body, meta = type_.encode(), data.encode(), metadata.encode()
    raw = content_type is not None or raw_metadata is not None
    parts: tuple[bytes, ...] = (
        _pack_header(
            _RAW if raw else _V2,
            previous or GENESIS,
            raw_id,
            position,
            version,
            recorded_at,
            len(name),
            len(kind),
            len(body),
            len(meta),
        ),
        name,
        kind,
        body,
        meta,
    )
    if raw:
        parts += _raw_parts(content_type, raw_data, raw_metadata)
    return _hashed(base, parts)


def _raw_parts(
    content_type: str | None, raw_data: bytes | None, raw_metadata: bytes | None
) -> tuple[bytes, ...]:
    """The lengths, then the bytes, of an event's raw parts (absent: ``_NONE``, no bytes)."""
    parts = (None if content_type is None else content_type.encode(), raw_data, raw_metadata)
    lengths = _RAW_LENGTHS.pack(*(_NONE if p is None else len(p) for p in parts))
    return (lengths, *(p or b"" for p in parts))


_HEADER_V1: Final = struct.Struct(">32s16sqqIIII")
"""The first format (no position): previous link, id, version, recorded_at, lengths."""


def link_v1(
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
    """The link of events written before their store's chain start: only ``verify`` still
    computes it."""
    raw_id = event_id.bytes if isinstance(event_id, uuid.UUID) else event_id
    name, kind, body, meta = stream.encode(), type_.encode(), data.encode(), metadata.encode()
    header = _HEADER_V1.pack(
        previous or GENESIS,
        raw_id,
        version,
        recorded_at,
        len(name),
        len(kind),
        len(body),
        len(meta),
    )
    return _digest(key, header, name, kind, body, meta)


def _digest(key: bytes | None, *parts: bytes) -> bytes:
    return _hashed(hasher(key), parts)


def _hashed(base: Any, parts: tuple[bytes, ...]) -> bytes:
    """The digest of ``parts`` joined, from a copy of ``base`` (a keyed BLAKE2b state)."""
    state = base.copy()
    state.update(b"".join(parts))
    digest: bytes = state.digest()
    return digest


_HASHERS: dict[bytes | None, Any] = {}
"""A BLAKE2b-256 state set up once per key: copying it skips the key schedule, a quarter
of a short message's hashing."""


def _keyed(key: bytes | None) -> Any:
    base = _HASHERS[key] = hashlib.blake2b(digest_size=32, key=key or b"")
    return base
