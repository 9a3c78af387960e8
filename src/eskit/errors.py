"""One hierarchy for every error eskit raises on purpose.

Input errors (bad names, non-JSON data, oversized events, clashing ids) are also
``ValueError`` so that callers who validate input generically catch them.
"""

from __future__ import annotations


class EskitError(Exception):
    """Base of every error raised by eskit."""


class StoreError(EskitError):
    """The event store refused or failed an operation."""


class WrongExpectedVersion(StoreError):
    """The stream is not at the version the caller expected; nothing was written."""

    def __init__(self, stream: str, expected: object, actual: int | None) -> None:
        self.stream = stream
        self.expected = expected
        self.actual = actual
        shown = "no stream" if actual is None else f"version {actual}"
        super().__init__(f"stream {stream!r}: expected {expected!r}, but the stream is at {shown}")


class StreamDeleted(StoreError):
    """The stream was hard-deleted (tombstoned): it can never be read or appended again."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        super().__init__(f"stream {stream!r} is deleted (tombstoned) and cannot be used again")


class IdempotencyConflict(StoreError, ValueError):
    """Some, but not all, event ids of a batch were already written, or written elsewhere.

    A retry of an append must send exactly the same events; this error means the
    batch mixes new events with ids that already exist, so it is neither a new
    append nor a retry.
    """

    def __init__(self, stream: str, reason: str) -> None:
        self.stream = stream
        self.reason = reason
        super().__init__(
            f"stream {stream!r}: event ids clash with events already written: {reason}"
        )


class StoreClosed(StoreError):
    """The store is not open: use it inside ``async with eskit.open_store(url)``."""
