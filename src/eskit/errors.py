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
    """The stream is not at the version the caller expected; nothing was written.

    ``actual`` is the version of the stream's last event, None when it has none or was
    deleted (``deleted``: a soft-deleted stream counts as absent).
    """

    def __init__(
        self, stream: str, expected: object, actual: int | None, deleted: bool = False
    ) -> None:
        self.stream = stream
        self.expected = expected
        self.actual = actual
        self.deleted = deleted
        super().__init__(
            f"stream {stream!r}: expected {_expected(expected)}, but {_actual(actual, deleted)}"
        )


def _expected(expected: object) -> str:
    """``ANY``, ``NO_STREAM`` and ``STREAM_EXISTS`` (``StreamState``) in words, or the int."""
    words = {"any": "any version", "no_stream": "no stream", "stream_exists": "the stream to exist"}
    value = getattr(expected, "value", expected)
    if isinstance(value, str) and value in words:
        return words[value]
    return f"version {expected!r}"


def _actual(actual: int | None, deleted: bool) -> str:
    if deleted:
        return "the stream was deleted"
    return "the stream does not exist" if actual is None else f"the stream is at version {actual}"


class StreamDeleted(StoreError):
    """The stream was hard-deleted (tombstoned): it can never be read or appended again."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        super().__init__(f"stream {stream!r} is deleted (tombstoned) and cannot be used again")


class IdempotencyConflict(StoreError, ValueError):
    """Some, but not all, event ids of a batch were already written, or written elsewhere.

    A retry of an append must send exactly the same events; this error means the
    batch mixes new events with ids that already exist, so it is neither a new
    append nor a retry. The command bus raises it too for a command id sent again with
    another command (type, aggregate or arguments), naming the command that used it first.
    """

    def __init__(self, stream: str, reason: str) -> None:
        self.stream = stream
        self.reason = reason
        super().__init__(
            f"stream {stream!r}: event ids clash with events already written: {reason}"
        )


class StoreClosed(StoreError):
    """The store is not open: use it inside ``async with eskit.open_store(url)``."""


class StoreNotFound(StoreError, LookupError):
    """An existing store was asked for (``open_store(url, readonly=True)``) and there is
    none: no file at the path, a file without eskit's tables, or a PostgreSQL schema
    without them. Nothing was created."""

    def __init__(self, location: str, reason: str | None = None) -> None:
        self.location, self.reason = location, reason
        why = "" if reason is None else f" ({reason})"
        super().__init__(f"no such store: {location}{why}")


class Unavailable(EskitError):
    """A service (database, broker) could not be reached or dropped the connection.
    Transient: the same call may succeed a moment later. Runners never blame an event for
    it: they back off and retry, however long it takes."""


class StoreUnavailable(StoreError, Unavailable):
    """The database could not be reached or dropped the connection. Transient: the same
    call may succeed a moment later (reads and subscriptions retry by themselves)."""


class OutcomeUnknown(StoreUnavailable):
    """The connection died after a write was sent and the database could not be reached
    again within the failover deadline: the write may or may not have been committed.
    Appending the same events again (same ids) is safe: if they were written, the append
    is recognised as a replay and answers as the first one would have."""


class BrokerUnavailable(Unavailable):
    """The message broker could not be reached or did not acknowledge in time."""


class DomainError(EskitError):
    """Typed events, aggregates or commands were used in a way eskit cannot honour."""


class UnknownEventType(DomainError, ValueError):
    """An event type name (or class) that no registry knows."""

    def __init__(self, name: str, registered: bool = True) -> None:
        self.name = name
        where = "is not registered" if registered else "is not a registered event class"
        super().__init__(
            f"event type {name!r} {where}: register it with EventRegistry.register(name, version)"
        )


class UnsupportedEventVersion(DomainError, ValueError):
    """A stored event's schema version that this code cannot read (newer, or no upcaster)."""

    def __init__(self, name: str, version: object, current: int | None) -> None:
        self.name, self.version, self.current = name, version, current
        if current is not None and isinstance(version, int) and version > current:
            why = f"newer than this code's version {current} (written by a newer deployment?)"
        else:
            why = f"has no upcaster towards version {current}"
        super().__init__(f"event {name!r} schema version {version!r} {why}")


class AggregateNotFound(DomainError, LookupError):
    """The aggregate's stream has no events."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        super().__init__(f"no aggregate at stream {stream!r}: it has no events")


class ConcurrencyError(DomainError):
    """A command kept conflicting with concurrent writers and gave up after its retries."""

    def __init__(self, stream: str, attempts: int) -> None:
        self.stream, self.attempts = stream, attempts
        super().__init__(
            f"stream {stream!r} changed under the command {attempts} times in a row; giving up"
        )


class PrivacyError(EskitError):
    """Encrypted fields could not be sealed or opened: no keyring, a master key that does
    not match, or a ciphertext that was altered or moved to another event or field. (A
    forgotten subject is not an error: its fields read as their mask.)"""


class UnknownSubject(PrivacyError, LookupError):
    """``forget`` was given a subject that has no key and was never forgotten: a typo, or
    the wrong key store. Nothing was deleted or recorded."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(
            f"no such subject: {subject!r} has no key in the key store and was never forgotten"
            " (check the id and the key store)"
        )


class ForgetIncomplete(PrivacyError):
    """A subject's keys were deleted, but a copy of them may still be read from the key
    store's write-ahead log: another connection kept a read transaction open. Run
    ``forget`` again once it ended: it finishes the job."""

    def __init__(self, subject: str, key_ids: list[str], where: str, waited: float) -> None:
        self.subject, self.key_ids, self.where, self.waited = subject, key_ids, where, waited
        super().__init__(
            f"subject {subject!r}: its keys are deleted, but a copy stays in {where} because"
            f" another connection held a read transaction open for {waited:.1f} s: end it"
            " (stop or restart the processes that use the key store) and run forget again"
            " to empty the log"
        )


class ProjectionError(EskitError):
    """A projection could not apply an event: a runner's projection is stuck on it, or an
    inline projection refused the append that wrote it (``refused``: the append's stream;
    nothing of that append was written, and the projection goes on with the next one)."""

    def __init__(
        self,
        name: str,
        position: int,
        event_type: str,
        event_id: str,
        error: str,
        *,
        refused: str | None = None,
    ):
        self.name, self.position, self.event_type, self.event_id = (
            name,
            position,
            event_type,
            event_id,
        )
        self.error = error
        self.refused = refused
        if refused is None:
            message = (
                f"projection {name} stuck at position {position} on event {event_type}"
                f" ({event_id}): {error}"
            )
        else:
            message = (
                f"the append to {refused} was refused by projection {name}: {error}"
                f" (on its event {event_type}, {event_id}); nothing of it was written"
            )
        super().__init__(message)
