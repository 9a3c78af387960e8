"""The master key (key-encryption key): it wraps every subject key in the key store.

It never touches an event. Keep it out of the key store and out of its backups (an
environment variable from a secret manager, or a file only the service can read): the key
store alone, or a backup of it, then opens nothing. Rotating it re-wraps the subject keys
(``Keyring.rotate``) and leaves the events as they are.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from eskit.errors import PrivacyError

MASTER_KEY_ENV: Final = "ESKIT_MASTER_KEY"
"""Environment variable holding the master key as base64 (32 bytes)."""
MASTER_KEY_FILE_ENV: Final = "ESKIT_MASTER_KEY_FILE"
"""Environment variable naming a file that holds the master key as base64."""
PREVIOUS_MASTER_KEYS_ENV: Final = "ESKIT_PREVIOUS_MASTER_KEYS"
"""Environment variable with earlier master keys (base64, comma-separated) during a rotation."""

_NONCE = 12


@dataclasses.dataclass(frozen=True, slots=True)
class MasterKey:
    """A 256-bit AES key that wraps subject keys with AES-GCM.

    ``id`` (a fingerprint, not the key) is stored beside every wrapped key, so a key store
    wrapped by several master keys during a rotation knows which one opens which key.
    """

    secret: bytes = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) != 32:
            raise ValueError("a master key is 32 bytes (AES-256)")

    @property
    def id(self) -> str:
        """A fingerprint naming this key: 16 hex digits of a SHA-256 of it."""
        return hashlib.sha256(b"eskit master key\x00" + self.secret).hexdigest()[:16]

    @classmethod
    def generate(cls) -> MasterKey:
        """A new random master key."""
        return cls(AESGCM.generate_key(bit_length=256))

    @classmethod
    def from_text(cls, text: str) -> MasterKey:
        """A master key from its base64 text (what ``text()`` and ``eskit keys generate``
        print); ``ValueError`` if it is not 32 bytes of base64."""
        try:
            secret = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a master key must be base64 text (eskit keys generate)") from None
        return cls(secret)

    @classmethod
    def from_file(cls, path: str | Path) -> MasterKey:
        """A master key from a file holding its base64 text."""
        return cls.from_text(Path(path).read_text())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MasterKey:
        """The master key from ``ESKIT_MASTER_KEY`` (base64) or ``ESKIT_MASTER_KEY_FILE``."""
        env = os.environ if environ is None else environ
        if env.get(MASTER_KEY_ENV):
            return cls.from_text(env[MASTER_KEY_ENV])
        if env.get(MASTER_KEY_FILE_ENV):
            return cls.from_file(env[MASTER_KEY_FILE_ENV])
        raise PrivacyError(
            f"no master key: set {MASTER_KEY_ENV} (base64) or {MASTER_KEY_FILE_ENV} (a file);"
            " `eskit keys generate` makes one"
        )

    @classmethod
    def previous_from_env(cls, environ: Mapping[str, str] | None = None) -> list[MasterKey]:
        """Earlier master keys from ``ESKIT_PREVIOUS_MASTER_KEYS`` (none if unset)."""
        env = os.environ if environ is None else environ
        texts = env.get(PREVIOUS_MASTER_KEYS_ENV, "")
        return [cls.from_text(text) for text in texts.split(",") if text.strip()]

    def text(self) -> str:
        """The key as base64 text."""
        return base64.b64encode(self.secret).decode()

    def wrap(self, key_id: str, subject: str, key: bytes) -> bytes:
        """``key`` encrypted, bound to its id and subject (a wrapped key copied onto
        another row of the key store does not open)."""
        nonce = os.urandom(_NONCE)
        return nonce + AESGCM(self.secret).encrypt(nonce, key, _bound(key_id, subject))

    def unwrap(self, key_id: str, subject: str, wrapped: bytes) -> bytes:
        """The subject key; ``PrivacyError`` if this master key did not wrap it for this
        id and subject."""
        try:
            return AESGCM(self.secret).decrypt(
                wrapped[:_NONCE], wrapped[_NONCE:], _bound(key_id, subject)
            )
        except InvalidTag:
            raise PrivacyError(
                f"subject key {key_id} does not open with master key {self.id}: a wrong"
                " master key, or an altered key store"
            ) from None


def by_id(keys: Sequence[MasterKey]) -> dict[str, MasterKey]:
    """Master keys by their id."""
    return {key.id: key for key in keys}


def _bound(key_id: str, subject: str) -> bytes:
    return b"eskit.key.v1\x00" + key_id.encode() + b"\x00" + subject.encode()
