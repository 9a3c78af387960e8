"""eskit: CQRS and event sourcing for Python."""

from __future__ import annotations

from eskit.application import (
    AlsoAppend,
    CommandBus,
    CommandContext,
    CommandResult,
    Loaded,
    Repository,
)
from eskit.domain import Aggregate, Decider, EventRegistry, Model, applies
from eskit.errors import (
    AggregateNotFound,
    ConcurrencyError,
    DomainError,
    EskitError,
    IdempotencyConflict,
    StoreClosed,
    StoreError,
    StreamDeleted,
    UnknownEventType,
    UnsupportedEventVersion,
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
    "Aggregate",
    "AggregateNotFound",
    "AlsoAppend",
    "Append",
    "AppendResult",
    "CommandBus",
    "CommandContext",
    "CommandResult",
    "ConcurrencyError",
    "Decider",
    "DomainError",
    "EskitError",
    "EventRegistry",
    "EventStore",
    "ExpectedVersion",
    "IdempotencyConflict",
    "Loaded",
    "Model",
    "NewEvent",
    "RecordedEvent",
    "Repository",
    "Snapshot",
    "StoreClosed",
    "StoreError",
    "StreamDeleted",
    "StreamMetadata",
    "StreamState",
    "UnknownEventType",
    "UnsupportedEventVersion",
    "WrongExpectedVersion",
    "applies",
    "open_store",
]
