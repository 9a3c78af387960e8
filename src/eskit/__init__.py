"""eskit: CQRS and event sourcing for Python."""

from __future__ import annotations

from eskit.errors import (
    EskitError,
    IdempotencyConflict,
    StoreClosed,
    StoreError,
    StreamDeleted,
    WrongExpectedVersion,
)
from eskit.store import EventStore, open_store
from eskit.store.model import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    Append,
    AppendResult,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StreamMetadata,
    StreamState,
)

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "Append",
    "AppendResult",
    "EskitError",
    "EventStore",
    "ExpectedVersion",
    "IdempotencyConflict",
    "NewEvent",
    "RecordedEvent",
    "Snapshot",
    "StoreClosed",
    "StoreError",
    "StreamDeleted",
    "StreamMetadata",
    "StreamState",
    "WrongExpectedVersion",
    "open_store",
]
