"""Forgetting a data subject: delete its key, then record that it was done.

The record is a ``SubjectForgotten`` event in the ``privacy-forgotten`` stream: who asked,
why, and which key ids went, with the time the store gives it. It holds no personal data
beyond the subject's id, which is meant to be a pseudonymous id (``c-7``, a UUID) and is
already in the stream names and plain fields of the subject's events. Projections handle
it to anonymise the rows they built from the subject's plaintext.
"""

from __future__ import annotations

import asyncio
from typing import Final

import msgspec

from eskit.domain.events import to_json_object
from eskit.privacy.keyring import Keyring
from eskit.privacy.keystore import KeyStore
from eskit.store.base import EventStore
from eskit.store.model import AppendResult, NewEvent

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
    """Delete every key of ``subject`` and append a ``SubjectForgotten`` record of it.

    The key goes first: if the record then fails, the subject is still forgotten and
    running ``forget`` again records it (with no key left to delete). Give the keyring
    rather than its key store to drop the keys from its cache at once.
    """
    if not isinstance(subject, str) or not subject.strip():
        raise ValueError(f"the subject to forget must be a non-empty string, got {subject!r}")
    if not isinstance(by, str) or not by.strip():
        raise ValueError("say who asked to forget (by=...)")
    gone = await asyncio.to_thread(keys.forget, subject)
    record = SubjectForgotten(subject, gone, by, reason)
    event = NewEvent(type(record).__name__, to_json_object(record), {"by": by})
    return await store.append(FORGOTTEN_STREAM, [event])
