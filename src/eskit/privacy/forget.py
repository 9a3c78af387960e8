"""Forgetting a data subject: delete its key, scrub the stored projection errors about its
events, then record that it was done.

The record is a ``SubjectForgotten`` event in the ``privacy-forgotten`` stream: who asked,
why, and which key ids went, with the time the store gives it. It holds no personal data
beyond the subject's id, which is meant to be a pseudonymous id (``c-7``, a UUID) and is
already in the stream names and plain fields of the subject's events. Projections handle
it to anonymise the rows they built from the subject's plaintext.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Final

import msgspec

from eskit.domain.events import to_json_object
from eskit.domain.sensitive import is_sealed
from eskit.errors import UnknownSubject
from eskit.privacy.keyring import Keyring
from eskit.privacy.keystore import KeyStore
from eskit.projections.scrub import scrub_errors
from eskit.store.base import EventStore
from eskit.store.model import AppendResult, NewEvent, RecordedEvent

FORGOTTEN_STREAM: Final = "privacy-forgotten"
"""The stream that records every forget."""


class SubjectForgotten(msgspec.Struct, frozen=True):
    """A data subject's keys were deleted: its encrypted fields now read as masks.

    Register it in your registry (``events.register("SubjectForgotten")(SubjectForgotten)``)
    to decode it as this class.
    """

    subject: str
    key_ids: list[str]
    by: str
    reason: str | None = None


async def forget(
    store: EventStore,
    keys: Keyring | KeyStore,
    subject: str,
    *,
    by: str,
    reason: str | None = None,
) -> AppendResult:
    """Delete every key of ``subject``, scrub the stored projection errors about its
    events, and append a ``SubjectForgotten`` record of it.

    The key goes first: if the rest then fails, the subject is still forgotten and
    running ``forget`` again finishes the job and records it (with no key left to
    delete). Give the keyring rather than its key store to drop the keys from its cache
    at once.

    Raises ``UnknownSubject`` for a subject that has no key and was never forgotten
    (neither the key store nor the ``privacy-forgotten`` stream knows it): nothing is
    deleted or recorded. Raises ``ForgetIncomplete`` when the key is deleted but a copy may
    still be read from the key store (a SQLite key store whose write-ahead log another
    connection kept from being emptied): nothing is recorded then, and running ``forget``
    again once that connection is gone finishes the job.
    """
    if not isinstance(subject, str) or not subject.strip():
        raise ValueError(f"the subject to forget must be a non-empty string, got {subject!r}")
    if not isinstance(by, str) or not by.strip():
        raise ValueError("say who asked to forget (by=...)")
    gone = await asyncio.to_thread(keys.forget, subject)
    if not gone and not await _known(store, keys, subject):
        raise UnknownSubject(subject)
    key_store = keys.keys if isinstance(keys, Keyring) else keys
    await scrub_errors(store, functools.partial(_unreadable, key_store))
    record = SubjectForgotten(subject, gone, by, reason)
    event = NewEvent(type(record).__name__, to_json_object(record), {"by": by})
    return await store.append(FORGOTTEN_STREAM, [event])


async def _known(store: EventStore, keys: Keyring | KeyStore, subject: str) -> bool:
    """Whether a subject without keys was forgotten before: the key store says so, or
    (a key store older than its list of forgotten subjects) the store holds the record."""
    if await asyncio.to_thread(keys.forgotten, subject):
        return True
    async for record in store.read_stream(FORGOTTEN_STREAM):
        if record.data.get("subject") == subject:
            return True
    return False


def _unreadable(keys: KeyStore, event: RecordedEvent) -> bool:
    """Whether the event holds a field whose key is gone (a forgotten subject's)."""
    return any(
        is_sealed(value) and keys.get(value.get("k", "")) is None for value in event.data.values()
    )
