"""Crypto-shredding: sensitive event fields encrypted per data subject, forgotten by
deleting the subject's key (docs/privacy.md).

    from typing import Annotated
    from eskit.privacy import Keyring, MasterKey, Sensitive, open_keystore

    @events.register("CustomerRegistered")
    class CustomerRegistered(msgspec.Struct):
        customer_id: str
        email: Annotated[str, Sensitive(subject="customer_id")]

    events.encrypt_with(Keyring(open_keystore("sqlite:///./keys.db"), MasterKey.from_env()))
    ...
    await forget(store, keyring, "c-7", by="dpo@example.com")   # email now reads "[forgotten]"

Needs the ``cryptography`` package (``pip install 'eskit[ops]'``).
"""

from eskit.domain.sensitive import FORGOTTEN, Sensitive
from eskit.errors import ForgetIncomplete, PrivacyError, UnknownSubject
from eskit.privacy.forget import FORGOTTEN_STREAM, SubjectForgotten, forget
from eskit.privacy.keyring import Keyring
from eskit.privacy.keystore import KeyStore, MemoryKeyStore, StoredKey, open_keystore
from eskit.privacy.master import MasterKey

__all__ = [
    "FORGOTTEN",
    "FORGOTTEN_STREAM",
    "ForgetIncomplete",
    "KeyStore",
    "Keyring",
    "MasterKey",
    "MemoryKeyStore",
    "PrivacyError",
    "Sensitive",
    "StoredKey",
    "SubjectForgotten",
    "UnknownSubject",
    "forget",
    "open_keystore",
]
