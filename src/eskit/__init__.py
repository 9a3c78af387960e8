"""eskit: CQRS and event sourcing for Python."""

from __future__ import annotations

# The one place the version lives: pyproject.toml reads it from here when building.
__version__ = "0.1.0"

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
    BrokerUnavailable,
    ConcurrencyError,
    DomainError,
    EskitError,
    IdempotencyConflict,
    OutcomeUnknown,
    ProjectionError,
    StoreClosed,
    StoreError,
    StoreNotFound,
    StoreUnavailable,
    StreamDeleted,
    Unavailable,
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
    "BrokerUnavailable",
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
    "OutcomeUnknown",
    "ProjectionError",
    "RecordedEvent",
    "Repository",
    "Snapshot",
    "StoreClosed",
    "StoreError",
    "StoreNotFound",
    "StoreUnavailable",
    "StreamDeleted",
    "StreamMetadata",
    "StreamState",
    "Unavailable",
    "UnknownEventType",
    "UnsupportedEventVersion",
    "WrongExpectedVersion",
    "applies",
    "open_store",
]
