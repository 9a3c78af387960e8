"""Sealing and opening fields through the registry: AES-GCM per field, bound to stream,
event id and field name; a ciphertext moved or altered never reads as data."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eskit.domain import EventRegistry
from eskit.domain.sensitive import SensitiveField
from eskit.privacy import Keyring, MasterKey, MemoryKeyStore, PrivacyError
from eskit.store.base import utc_now
from eskit.store.model import JSONObject, RecordedEvent
from tests.privacy import events as examples

STREAM = "customer-c-1"


def recorded(
    data: JSONObject, type_: str = "CustomerRegistered", *, stream: str = STREAM, id: uuid.UUID
) -> RecordedEvent:
    return RecordedEvent(id, stream, 0, 1, type_, data, {}, utc_now())


def sealed(events: EventRegistry, event: object, stream: str = STREAM) -> RecordedEvent:
    """``event`` encoded as the repository would, then as the store would return it."""
    event_id = uuid.uuid4()
    entry, data = events.encode(event, stream=stream, event_id=event_id)
    return recorded(data, entry.name, stream=stream, id=event_id)


def test_sensitive_fields_are_stored_as_tagged_ciphertext(events: EventRegistry) -> None:
    stored = sealed(events, examples.registered("c-1", "ann@example.com"))
    assert stored.data["customer_id"] == "c-1"
    assert stored.data["country"] == "NL"
    for name in ("email", "born"):
        assert set(stored.data[name]) == {"$enc", "k", "n", "c"}
    assert stored.data["email"]["k"] == stored.data["born"]["k"]  # one key per subject
    assert "ann@example.com" not in msgspec.json.encode(stored.data).decode()
    assert events.decode(stored) == [examples.registered("c-1", "ann@example.com")]


def test_the_same_value_twice_gives_different_ciphertexts(events: EventRegistry) -> None:
    first = sealed(events, examples.CustomerRenamed("Ann"))
    second = sealed(events, examples.CustomerRenamed("Ann"))
    assert first.data["name"]["c"] != second.data["name"]["c"]
    assert first.data["name"]["n"] != second.data["name"]["n"]


def test_a_ciphertext_moved_to_another_event_does_not_decrypt(events: EventRegistry) -> None:
    one = sealed(events, examples.CustomerRenamed("Ann"))
    other = sealed(events, examples.CustomerRenamed("Bob"))
    swapped = msgspec.structs.replace(other, data=one.data)
    with pytest.raises(PrivacyError, match=r"field 'name' of event .* does not decrypt"):
        events.decode(swapped)


def test_a_ciphertext_moved_to_another_stream_does_not_decrypt(events: EventRegistry) -> None:
    one = sealed(events, examples.CustomerRenamed("Ann"))
    with pytest.raises(PrivacyError, match=r"does not decrypt"):
        events.decode(msgspec.structs.replace(one, stream="customer-c-2"))


def test_a_ciphertext_moved_to_another_field_does_not_decrypt(events: EventRegistry) -> None:
    stored = sealed(events, examples.registered("c-1", "ann@example.com"))
    moved = {**stored.data, "email": stored.data["born"], "born": stored.data["email"]}
    with pytest.raises(PrivacyError, match=r"does not decrypt"):
        events.decode(msgspec.structs.replace(stored, data=moved))


def test_an_altered_ciphertext_does_not_decrypt(events: EventRegistry) -> None:
    stored = sealed(events, examples.CustomerRenamed("Ann"))
    tag = stored.data["name"]
    flipped = ("A" if tag["c"][0] != "A" else "B") + tag["c"][1:]
    altered = msgspec.structs.replace(stored, data={"name": {**tag, "c": flipped}})
    with pytest.raises(PrivacyError, match=r"does not decrypt"):
        events.decode(altered)


def test_without_a_keyring_nothing_is_encoded_in_plaintext() -> None:
    events = examples.registry()
    with pytest.raises(PrivacyError, match=r"CustomerRenamed has sensitive fields: give"):
        events.encode(examples.CustomerRenamed("Ann"), stream=STREAM, event_id=uuid.uuid4())


def test_without_a_keyring_encrypted_events_are_refused_clearly(events: EventRegistry) -> None:
    stored = sealed(events, examples.CustomerRenamed("Ann"))
    with pytest.raises(PrivacyError, match=r"holds encrypted fields: give the registry"):
        examples.registry().decode(stored)


def test_encoding_needs_the_stream_and_the_event_id(events: EventRegistry) -> None:
    with pytest.raises(PrivacyError, match=r"needs the stream and the event id"):
        events.encode(examples.CustomerRenamed("Ann"))


def test_an_empty_subject_is_refused_without_showing_the_data(events: EventRegistry) -> None:
    with pytest.raises(ValueError, match=r"subject named by 'customer_id'") as raised:
        sealed(events, examples.registered("", "ann@example.com"))
    assert "ann@example.com" not in str(raised.value)


def test_events_without_sensitive_fields_are_stored_as_before(events: EventRegistry) -> None:
    _, data = events.encode(examples.OrderPlaced("o-1", 12))
    assert data == {"order_id": "o-1", "amount": 12}


def test_a_wrong_master_key_raises_instead_of_masking(events: EventRegistry) -> None:
    keyring = events.cipher
    assert isinstance(keyring, Keyring)
    stored = sealed(events, examples.CustomerRenamed("Ann"))
    other = examples.registry()
    other.encrypt_with(Keyring(keyring.keys, MasterKey.generate()))
    with pytest.raises(PrivacyError, match=r"wrapped by master key .* which this keyring"):
        other.decode(stored)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(value=JSON, stream=st.text(min_size=1, max_size=30), subject=st.text(min_size=1))
def test_any_json_value_reads_back_as_written(value: Any, stream: str, subject: str) -> None:
    keyring = Keyring(MemoryKeyStore(), MasterKey.generate())
    data = {"who": subject, "value": value}
    field = SensitiveField("value", subject="who", mask=None)
    event_id = uuid.uuid4()
    stored = keyring.seal([field], data, stream, event_id)
    assert stored["value"]["$enc"] == "v1"
    assert keyring.open(stored, stream, event_id, {}) == data
