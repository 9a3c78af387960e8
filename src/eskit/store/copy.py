"""Copy one store's log into another: from SQLite to PostgreSQL (and back), between files,
into a fresh store for a test.

``copy_store`` reads the source up to the head it had when the copy started, a page at a
time (bounded memory), and appends its events to the target with their ids, streams,
versions, types, data and metadata, in the source's order, through the same chunked,
read-back-checked appends as an import from a file (``eskit.store.transfer``). Positions
and ``recorded_at`` are the target's own; only the log travels: stream metadata, deletes,
tombstones, snapshots and projections do not.

The target must be empty or hold an earlier copy of the source: its log must be the
beginning of the source's. That part is compared event by event (nothing is written again),
so running a copy twice, or again after it was interrupted, copies only what is missing;
a target holding anything else is refused before anything is written. At the end the
target's whole log is read back and its count and digest compared with the source's.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from eskit.store.base import EventStore
from eskit.store.model import RecordedEvent
from eskit.store.transfer import (
    CHUNK_EVENTS,
    Chunk,
    Digest,
    Line,
    Progress,
    Summary,
    TransferError,
    canonical,
    log_events,
    log_pages,
    to_append,
)

__all__ = ["Copied", "copy_store"]


class Copied(Summary, frozen=True):
    """The source's count and digest (the target's are equal), how many events this copy
    appended (the others were already there), and the last position on each side."""

    copied: int
    source_position: int
    target_position: int


async def copy_store(
    source: EventStore,
    target: EventStore,
    progress: Progress | None = None,
    *,
    verify_progress: Progress | None = None,
) -> Copied:
    """Copy every event of ``source`` up to its current head into ``target``, then check
    that the target's log has the same count and digest.

    ``progress(done, total)`` follows the copy in source positions, ``verify_progress`` the
    final read of the target in target positions. Raises ``TransferError`` (a
    ``ValueError``) when the target holds events that are not an earlier copy of the
    source, and when the check fails (another writer appended to the target meanwhile).
    Events appended before an error stay: a later copy continues after them.
    """
    head = await source.last_position()
    digest = Digest()
    async with contextlib.aclosing(log_events(source, head)) as events:
        await _skip_copied(events, target, digest, progress, head)
        chunk = Chunk(target, lambda position: f"source position {position}")
        copied = 0
        async for event in events:
            line = Line(event.position, to_append(event), canonical(event))
            digest.add(line.encoded)
            if not chunk.fits(line):
                copied += await chunk.flush()
                if progress is not None:
                    progress(line.number - 1, head)
            chunk.add(line)
        copied += await chunk.flush()
    if progress is not None:
        progress(head, head)
    expected = digest.summary()
    target_position = await target.last_position()
    found = Digest()
    async with contextlib.aclosing(log_pages(target, target_position)) as pages:
        async for page in pages:
            for event in page:
                found.add(canonical(event))
            if verify_progress is not None and page[-1].position < target_position:
                verify_progress(page[-1].position, target_position)
    if verify_progress is not None:
        verify_progress(target_position, target_position)
    if found.summary() != expected:
        actual = found.summary()
        raise TransferError(
            f"the copy does not match its source: the source holds {expected.count} events"
            f" (digest {expected.digest}), the target {actual.count} (digest {actual.digest});"
            " was the target written to during the copy?"
        )
    return Copied(expected.count, expected.digest, copied, head, target_position)


async def _skip_copied(
    events: AsyncIterator[RecordedEvent],
    target: EventStore,
    digest: Digest,
    progress: Progress | None,
    head: int,
) -> None:
    """Walk the target's log beside the source's, taking from ``events`` the ones the
    target already holds; raise if the target's log is not a beginning of the source's."""
    held = await target.last_position()
    async with contextlib.aclosing(log_events(target, held)) as theirs:
        async for stored in theirs:
            event = await anext(events, None)
            if event is None:
                raise TransferError(
                    f"the target holds more events than the source: its position"
                    f" {stored.position} ({_describe(stored)}) has no counterpart in the"
                    f" source's {digest.count} events; copy into an empty store"
                )
            encoded = canonical(event)
            if canonical(stored) != encoded and stored.id == event.id:
                raise TransferError(
                    f"the target already holds other events: its position {stored.position}"
                    f" is {_describe(stored)} with other content (type, data or metadata) than"
                    f" the source's position {event.position}; copy into an empty store"
                )
            if canonical(stored) != encoded:
                raise TransferError(
                    f"the target already holds other events: its position {stored.position}"
                    f" is {_describe(stored)} where the source's position {event.position} is"
                    f" {_describe(event)}; copy into an empty store, or into one holding an"
                    " earlier copy of this source"
                )
            digest.add(encoded)
            if progress is not None and not digest.count % CHUNK_EVENTS and event.position < head:
                progress(event.position, head)


def _describe(event: RecordedEvent) -> str:
    return f"{event.stream} v{event.version} {event.type} (id {event.id})"
