"""The keyring: subject keys unwrapped on demand, cached, and used to seal and open fields.

Give it to the event registry and every sensitive field is encrypted on encode and
decrypted (or masked) on decode, upcast and replay::

    keyring = Keyring(open_keystore("sqlite:///./keys.db"), MasterKey.from_env())
    events.encrypt_with(keyring)

Caching: a key fetched or created is kept ``ttl`` seconds (default 60). ``forget`` in this
process drops it at once; another process that cached it keeps decrypting the subject's
fields until its entry expires, so ``ttl`` bounds how long a forget takes to reach every
node. A key store that cannot be reached raises (``StoreUnavailable``), never masks:
only a key that is gone from the store reads as forgotten.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from eskit.domain.redaction import DECRYPTED
from eskit.domain.sensitive import FORGOTTEN, SEALED, SensitiveField, subject_of
from eskit.errors import ForgetIncomplete, PrivacyError
from eskit.privacy.cipher import bound_to, key_id_of, open_value, seal_value
from eskit.privacy.keystore import KeyStore, StoredKey
from eskit.privacy.master import MasterKey, by_id
from eskit.store.base import utc_now
from eskit.store.model import JSONObject


class Keyring:
    """Subject keys for sealing and opening sensitive fields (a ``FieldCipher``).

    Thread-safe: SQL projections decode in the thread that commits their batch while
    commands run on the event loop. ``previous`` master keys open keys not yet re-wrapped
    by ``rotate``.
    """

    def __init__(
        self,
        keys: KeyStore,
        master: MasterKey,
        *,
        previous: Sequence[MasterKey] = (),
        ttl: float = 60.0,
        max_cached: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl < 0 or max_cached < 1:
            raise ValueError("ttl must be >= 0 and max_cached >= 1")
        self.keys = keys
        self.master = master
        self._masters = by_id([*previous, master])
        self.ttl = ttl
        self.max_cached = max_cached
        self.clock = clock
        self._by_id: dict[str, tuple[float, AESGCM | None]] = {}
        self._by_subject: dict[str, tuple[float, str, AESGCM]] = {}
        self._create = threading.Lock()

    @classmethod
    def from_env(cls, keys: KeyStore, **options: Any) -> Keyring:
        """A keyring whose master key (and previous ones, during a rotation) come from the
        environment: ``ESKIT_MASTER_KEY`` or ``ESKIT_MASTER_KEY_FILE``, and
        ``ESKIT_PREVIOUS_MASTER_KEYS``."""
        return cls(keys, MasterKey.from_env(), previous=MasterKey.previous_from_env(), **options)

    # -- the FieldCipher the registry calls -----------------------------------------------

    def seal(
        self,
        fields: Sequence[SensitiveField],
        data: JSONObject,
        stream: str,
        event_id: uuid.UUID,
    ) -> JSONObject:
        """``data`` with each sensitive field encrypted with its subject's key (created on
        first use), bound to ``stream``, ``event_id`` and the field."""
        sealed = dict(data)
        event = str(event_id)
        for field in fields:
            if field.name in data:
                key_id, aead = self.key_for(subject_of(field, data, stream))
                bound = bound_to(stream, event, field.name, key_id)
                sealed[field.name] = seal_value(aead, key_id, data[field.name], bound)
        return sealed

    def open(
        self, data: JSONObject, stream: str, event_id: uuid.UUID, masks: Mapping[str, Any]
    ) -> JSONObject:
        """``data`` with its encrypted fields decrypted; a forgotten subject's read as their
        mask. The same object when nothing is encrypted. ``PrivacyError`` (naming the field
        and event) for a ciphertext that was altered or moved."""
        opened, event = None, ""
        for name, value in data.items():
            if type(value) is dict and SEALED in value:
                if opened is None:
                    opened, event = dict(data), str(event_id)
                try:
                    key_id = key_id_of(value)
                    aead = self.key(key_id)
                    opened[name] = (
                        masks.get(name, FORGOTTEN)
                        if aead is None
                        else open_value(aead, value, bound_to(stream, event, name, key_id))
                    )
                except PrivacyError as error:
                    raise PrivacyError(
                        f"field {name!r} of event {event} in {stream!r}: {error}"
                    ) from None
        return data if opened is None else opened

    # -- keys -----------------------------------------------------------------------------

    def key_for(self, subject: str) -> tuple[str, AESGCM]:
        """The subject's key id and key, created (and stored wrapped) on first use."""
        now = self.clock()
        cached = self._by_subject.get(subject)
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        stored = self.keys.current(subject)
        if stored is None:
            with self._create:
                stored = self.keys.current(subject) or self.keys.add(self._new_key(subject))
        aead = AESGCM(self._unwrap(stored))
        self._remember(stored.key_id, aead, now)
        self._by_subject[subject] = (now + self.ttl, stored.key_id, aead)
        return stored.key_id, aead

    def key(self, key_id: str) -> AESGCM | None:
        """The key with this id; None if its subject was forgotten."""
        now = self.clock()
        cached = self._by_id.get(key_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        stored = self.keys.get(key_id)
        aead = None if stored is None else AESGCM(self._unwrap(stored))
        self._remember(key_id, aead, now)
        return aead

    def forget(self, subject: str) -> list[str]:
        """Delete the subject's keys from the key store and from this keyring; return the
        key ids deleted. Every field they encrypted reads as its mask from now on."""
        try:
            gone = self.keys.forget(subject)
        except ForgetIncomplete as incomplete:  # deleted all the same: stop using them
            self._drop(subject, incomplete.key_ids)
            raise
        self._drop(subject, gone)
        return gone

    def forgotten(self, subject: str) -> bool:
        """Whether the subject's keys were deleted by an earlier ``forget``."""
        return self.keys.forgotten(subject)

    def rotate(self, batch: int = 500) -> int:
        """Re-wrap every subject key with the current master key, ``batch`` keys per
        transaction; return how many were re-wrapped. Events are not touched.

        Keys wrapped by an older master key need it among ``previous``; ``PrivacyError``
        names the one missing. Safe to interrupt and run again.
        """
        done = 0
        while stale := self.keys.wrapped_by_others(self.master.id, batch):
            changes = []
            for key in stale:
                secret = self._unwrap(key)
                wrapped = self.master.wrap(key.key_id, key.subject, secret)
                rewrapped = msgspec.structs.replace(
                    key, wrapped=wrapped, master_key_id=self.master.id
                )
                changes.append((key.master_key_id, rewrapped))
            done += self.keys.rewrap(changes)
        return done

    def close(self) -> None:
        """Close the key store and drop every cached key."""
        self._by_id.clear()
        self._by_subject.clear()
        self.keys.close()

    def _new_key(self, subject: str) -> StoredKey:
        key_id = secrets.token_hex(16)
        secret = AESGCM.generate_key(bit_length=256)
        wrapped = self.master.wrap(key_id, subject, secret)
        return StoredKey(key_id, subject, wrapped, self.master.id, utc_now())

    def _unwrap(self, stored: StoredKey) -> bytes:
        master = self._masters.get(stored.master_key_id)
        if master is None:
            raise PrivacyError(
                f"subject key {stored.key_id} is wrapped by master key {stored.master_key_id},"
                " which this keyring does not have: give it as a previous master key"
                " (ESKIT_PREVIOUS_MASTER_KEYS) until `eskit keys rotate` has run"
            )
        return master.unwrap(stored.key_id, stored.subject, stored.wrapped)

    def _drop(self, subject: str, key_ids: list[str]) -> None:
        """Forget the subject's keys here too, and the values they decrypted."""
        self._by_subject.pop(subject, None)
        for key_id in key_ids:
            self._by_id[key_id] = (math.inf, None)  # ids are never reused
        DECRYPTED.drop_keys(key_ids)

    def _remember(self, key_id: str, aead: AESGCM | None, now: float) -> None:
        if len(self._by_id) >= self.max_cached:  # simple bound: start over
            self._by_id.clear()
            self._by_subject.clear()
        self._by_id[key_id] = (now + self.ttl, aead)
