"""Stream metadata through ``$$<stream>``, as KurrentDB clients read and write it: a JSON
object with ``$maxCount``, ``$maxAge`` (seconds), ``$tb`` (truncate before) and any keys of
the client's own, mapped to eskit's ``StreamMetadata`` (its own keys in ``custom``).

eskit keeps the current metadata, not its history: ``$$<stream>`` reads as one event at
revision 0 (none before metadata was set), and an append to it replaces the metadata.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import msgspec

from eskit.store.model import JSONObject, StreamMetadata

METADATA_STREAM = "$$"
METADATA_TYPE = "$metadata"
_ID_SPACE = uuid.UUID("6f0b5e0a-3c8e-4a33-9d55-8c3f3f5c1a17")
_KEYS = {"$maxCount": "max_count", "$maxAge": "max_age", "$tb": "truncate_before"}


def target(stream: str) -> str | None:
    """The stream whose metadata ``stream`` holds, or None for an ordinary stream."""
    if stream.startswith(METADATA_STREAM) and len(stream) > len(METADATA_STREAM):
        return stream[len(METADATA_STREAM) :]
    return None


def parse(body: bytes) -> StreamMetadata:
    """The ``StreamMetadata`` of a ``$metadata`` event's data; ``ValueError`` if it is not a
    JSON object or a rule has the wrong type."""
    try:
        given = msgspec.json.decode(body)
    except msgspec.DecodeError as error:
        raise ValueError(f"stream metadata must be a JSON object: {error}") from None
    if not isinstance(given, dict):
        raise ValueError("stream metadata must be a JSON object")
    rules: dict[str, Any] = {}
    custom: JSONObject = {}
    for key, value in given.items():
        if key in _KEYS and value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"stream metadata {key} must be a number, got {value!r:.40}")
            rules[_KEYS[key]] = value if key == "$maxAge" else _whole(key, value)
        elif key not in _KEYS:
            custom[key] = value
    return StreamMetadata(**rules, custom=custom or None)


def _whole(key: str, value: float) -> int:
    if value != int(value):
        raise ValueError(f"stream metadata {key} must be a whole number, got {value!r}")
    return int(value)


def dump(metadata: StreamMetadata) -> bytes | None:
    """The JSON clients read from ``$$<stream>``; None when nothing is set."""
    out: JSONObject = dict(metadata.custom or {})
    for key, field in _KEYS.items():
        value = getattr(metadata, field)
        if value is not None:
            out[key] = int(value) if key == "$maxAge" and value == int(value) else value
    return msgspec.json.encode(out) if out else None


def event_id(stream: str) -> uuid.UUID:
    """A stable id for the one event of ``$$<stream>``."""
    return uuid.uuid5(_ID_SPACE, stream)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
