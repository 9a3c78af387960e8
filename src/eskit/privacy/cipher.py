"""How one field value is stored encrypted: AES-256-GCM, bound to where it belongs.

The stored field holds a small tagged object in place of the value::

    {"$enc": "v1", "k": "<subject key id>", "n": "<nonce, base64>", "c": "<ciphertext+tag, base64>"}

- The plaintext is the value's JSON, so any JSON value (a string, a number, an object) can
  be sensitive.
- ``n`` is 12 random bytes, fresh for every field: the same value written twice gives two
  different ciphertexts. Random 96-bit nonces are safe for 2^32 encryptions per key (NIST
  SP 800-38D); a subject key encrypts one subject's fields, far fewer.
- The associated data binds the ciphertext to its stream, event id, field name and key id:
  copied into another event or field it fails to decrypt (``PrivacyError``), it never
  reads as someone else's data.
"""

from __future__ import annotations

import binascii
import os
from typing import Any, Final

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from eskit.domain.sensitive import SEALED
from eskit.errors import PrivacyError

FORMAT: Final = "v1"

_encode = msgspec.json.encode
_decode = msgspec.json.decode
_b64 = binascii.b2a_base64
_unb64 = binascii.a2b_base64


def bound_to(stream: str, event_id: str, field: str, key_id: str) -> bytes:
    """The associated data of one field: what the ciphertext may only be opened as."""
    return f"eskit.{FORMAT}\x00{stream}\x00{event_id}\x00{field}\x00{key_id}".encode()


def seal_value(aead: AESGCM, key_id: str, value: Any, bound: bytes) -> dict[str, str]:
    """``value`` encrypted as the tagged object stored in its place."""
    nonce = os.urandom(12)
    sealed = aead.encrypt(nonce, _encode(value), bound)
    return {
        SEALED: FORMAT,
        "k": key_id,
        "n": _b64(nonce, newline=False).decode(),
        "c": _b64(sealed, newline=False).decode(),
    }


def key_id_of(sealed: dict[str, Any]) -> str:
    """The id of the key that encrypted a stored value; ``PrivacyError`` if malformed."""
    key_id = sealed.get("k")
    if sealed.get(SEALED) != FORMAT or not isinstance(key_id, str):
        raise PrivacyError("it holds an encrypted value eskit cannot read (format)")
    return key_id


def open_value(aead: AESGCM, sealed: dict[str, Any], bound: bytes) -> Any:
    """The value a tagged object holds; ``PrivacyError`` if it was altered or moved."""
    try:
        plain = aead.decrypt(_unb64(sealed["n"]), _unb64(sealed["c"]), bound)
    except InvalidTag:
        raise PrivacyError(
            "it does not decrypt: the ciphertext was altered, or moved from another event or field"
        ) from None
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise PrivacyError("it holds an encrypted value eskit cannot read") from None
    return _decode(plain)
