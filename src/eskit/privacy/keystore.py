"""Where subject keys live, wrapped by the master key: apart from the events.

A key store maps a key id (random, stored in every ciphertext) to one subject's key. Each
subject has at most one key; forgetting a subject deletes it, and every field encrypted with
it is unreadable for good. The store never sees a key in the clear: it holds them wrapped by
the master key (``eskit.privacy.master``), so a copy of the key store alone opens nothing.

The interface is synchronous on purpose: decoding an event is (a replay, or a SQL
projection handler running inside its transaction), and the keyring caches every key it
fetched, so a lookup happens about once per subject, not once per event.
"""

from __future__ import annotations

import datetime as dt
import threading
import urllib.parse
from collections.abc import Sequence
from typing import Protocol

import msgspec


class StoredKey(msgspec.Struct, frozen=True):
    """One subject key as the key store holds it: wrapped by the master key ``master_key_id``."""

    key_id: str
    subject: str
    wrapped: bytes
    master_key_id: str
    created_at: dt.datetime


class KeyStore(Protocol):
    """Wrapped subject keys, one per subject, kept apart from the events."""

    def get(self, key_id: str) -> StoredKey | None:
        """The key with this id; None once its subject was forgotten."""
        ...

    def current(self, subject: str) -> StoredKey | None:
        """The subject's key; None if it has none (never had, or forgotten)."""
        ...

    def add(self, key: StoredKey) -> StoredKey:
        """Store ``key`` unless its subject already has one; return the subject's key
        (so writers racing to create it all end up using the same one)."""
        ...

    def forget(self, subject: str) -> list[str]:
        """Delete the subject's keys for good, and remember that the subject was
        forgotten; return the ids deleted (none if it had no key).

        Raises ``ForgetIncomplete`` if a copy of a deleted key may still be read from the
        store (SQLite's write-ahead log); calling it again finishes the job."""
        ...

    def forgotten(self, subject: str) -> bool:
        """Whether the subject's keys were deleted by an earlier ``forget``."""
        ...

    def wrapped_by_others(self, master_key_id: str, limit: int) -> list[StoredKey]:
        """Up to ``limit`` keys wrapped by another master key than ``master_key_id``."""
        ...

    def rewrap(self, changes: Sequence[tuple[str, StoredKey]]) -> int:
        """Replace wrapped keys in one transaction: each ``(old master key id, key)`` is
        written only if the row is still wrapped by the old one. Returns the rows changed."""
        ...

    def count_by_master(self) -> dict[str, int]:
        """How many keys each master key wraps (to follow a rotation)."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


class MemoryKeyStore:
    """Keys in this process's memory: for tests and examples (forgotten at exit)."""

    def __init__(self) -> None:
        self._keys: dict[str, StoredKey] = {}
        self._forgotten: set[str] = set()
        self._lock = threading.Lock()

    def get(self, key_id: str) -> StoredKey | None:
        return self._keys.get(key_id)

    def current(self, subject: str) -> StoredKey | None:
        return next((k for k in self._keys.values() if k.subject == subject), None)

    def add(self, key: StoredKey) -> StoredKey:
        with self._lock:
            existing = self.current(key.subject)
            if existing is not None:
                return existing
            self._keys[key.key_id] = key
            return key

    def forget(self, subject: str) -> list[str]:
        with self._lock:
            gone = [k.key_id for k in self._keys.values() if k.subject == subject]
            for key_id in gone:
                del self._keys[key_id]
            if gone:
                self._forgotten.add(subject)
            return gone

    def forgotten(self, subject: str) -> bool:
        return subject in self._forgotten

    def wrapped_by_others(self, master_key_id: str, limit: int) -> list[StoredKey]:
        others = [k for k in self._keys.values() if k.master_key_id != master_key_id]
        return others[:limit]

    def rewrap(self, changes: Sequence[tuple[str, StoredKey]]) -> int:
        with self._lock:
            changed = 0
            for old_master, key in changes:
                stored = self._keys.get(key.key_id)
                if stored is not None and stored.master_key_id == old_master:
                    self._keys[key.key_id] = key
                    changed += 1
            return changed

    def count_by_master(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for key in self._keys.values():
            counts[key.master_key_id] = counts.get(key.master_key_id, 0) + 1
        return counts

    def close(self) -> None:
        pass


def open_keystore(url: str, *, create: bool = True) -> KeyStore:
    """The key store named by ``url``: ``memory://``, ``sqlite:///keys.db`` (a file of its
    own) or ``postgresql://user@host/database?schema=eskit_keys`` (a schema of its own).

    Raises ``ValueError`` for a URL it cannot open, and refuses a database that holds an
    event store: keys kept beside the events end up in the same backups, which would bring
    forgotten keys back. With ``create=False`` (to work on keys that are there: forget,
    rotate, status) a key store that does not exist is a ``ValueError`` too, ``no such key
    store: PATH``, and nothing is created.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "memory":
        if not create:
            raise no_such_key_store("memory://", "a memory key store holds nothing when opened")
        return MemoryKeyStore()
    if parsed.scheme == "sqlite":
        from eskit.privacy.sqlite_keys import SQLiteKeyStore

        return SQLiteKeyStore.from_url(parsed, create=create)
    if parsed.scheme in ("postgresql", "postgres"):
        from eskit.privacy.postgres_keys import PostgresKeyStore

        return PostgresKeyStore.from_url(parsed, create=create)
    raise ValueError(
        f"unsupported key store URL {url!r}: use memory://, sqlite:///path/to/keys.db"
        " or postgresql://user@host/database?schema=eskit_keys"
    )


def no_such_key_store(location: str, reason: str) -> ValueError:
    """The error for a key store asked for with ``create=False`` that is not there."""
    return ValueError(f"no such key store: {location} ({reason})")
