"""The public API is exactly this list: adding or removing a name is a deliberate change."""

from __future__ import annotations

import eskit

PUBLIC = {
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "Aggregate",
    "AggregateNotFound",
    "AlsoAppend",
    "BrokerUnavailable",
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
    "OutcomeUnknown",
    "ProjectionError",
    "RawData",
    "RecordedEvent",
    "Repository",
    "Snapshot",
    "StoreClosed",
    "StoreNotFound",
    "StoreError",
    "StoreUnavailable",
    "Unavailable",
    "StreamDeleted",
    "StreamMetadata",
    "StreamState",
    "UnknownEventType",
    "UnsupportedEventVersion",
    "WrongExpectedVersion",
    "applies",
    "open_store",
}


def test_all_lists_exactly_the_public_names() -> None:
    assert set(eskit.__all__) == PUBLIC


def test_the_version_is_public_beside_the_names() -> None:
    """``eskit.__version__`` is public too, outside ``__all__`` as is usual for dunders."""
    assert isinstance(eskit.__version__, str)
    assert "__version__" not in eskit.__all__


def test_every_public_name_exists() -> None:
    for name in PUBLIC:
        assert hasattr(eskit, name), name


def test_errors_form_one_hierarchy() -> None:
    for error in (eskit.WrongExpectedVersion, eskit.StreamDeleted, eskit.IdempotencyConflict):
        assert issubclass(error, eskit.StoreError)
    for domain_error in (
        eskit.UnknownEventType,
        eskit.UnsupportedEventVersion,
        eskit.AggregateNotFound,
        eskit.ConcurrencyError,
    ):
        assert issubclass(domain_error, eskit.DomainError)
    assert issubclass(eskit.StoreError, eskit.EskitError)
    assert issubclass(eskit.DomainError, eskit.EskitError)
    assert issubclass(eskit.IdempotencyConflict, ValueError)


def test_new_event_takes_type_data_metadata_and_id_in_that_order() -> None:
    event = eskit.NewEvent("InvoiceCreated", {"amount": 1}, {"user": "u"}, None)
    assert (event.type, event.data, event.metadata, event.id) == (
        "InvoiceCreated",
        {"amount": 1},
        {"user": "u"},
        None,
    )
