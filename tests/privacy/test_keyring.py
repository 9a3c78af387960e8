"""The keyring: a forget reaches other nodes within the cache's TTL, and master-key
rotation re-wraps every subject key without touching an event."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import eskit
from eskit.application import Repository
from eskit.domain import EventRegistry
from eskit.privacy import FORGOTTEN, Keyring, KeyStore, MasterKey, PrivacyError
from tests.privacy import events as examples

pytestmark = pytest.mark.anyio


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def node(keys: KeyStore, master: MasterKey, **options: object) -> EventRegistry:
    """One process's registry, encrypting with its own keyring over the shared key store."""
    events = examples.registry()
    events.encrypt_with(Keyring(keys, master, **options))  # type: ignore[arg-type]
    return events


async def names(store: eskit.EventStore, events: EventRegistry) -> list[str]:
    return [e.name for r in [x async for x in store.read_all()] for e in events.decode(r)]


async def test_another_node_stops_decrypting_once_its_cache_expires(
    keystore: KeyStore, master: MasterKey, store: eskit.EventStore
) -> None:
    clock = Clock()
    writer = node(keystore, master)
    reader = node(keystore, master, ttl=30.0, clock=clock)
    customers = Repository(store, writer, examples.Customer.model())
    await customers.save("c-1", [examples.CustomerRenamed("Ann")], eskit.NO_STREAM)
    assert await names(store, reader) == ["Ann"]  # the reader caches the key

    assert isinstance(writer.cipher, Keyring)
    assert writer.cipher.forget("c-1") != []
    assert await names(store, writer) == [FORGOTTEN]  # at once where it was forgotten
    clock.now = 29.0
    assert await names(store, reader) == ["Ann"]  # cached elsewhere: at most ttl longer
    clock.now = 31.0
    assert await names(store, reader) == [FORGOTTEN]


async def test_rotation_rewraps_every_key_and_leaves_the_events_alone(
    keystore: KeyStore, tmp_path: Path, store: eskit.EventStore
) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    events = node(keystore, old)
    customers = Repository(store, events, examples.Customer.model())
    for i in range(5):
        await customers.save(f"c-{i}", [examples.CustomerRenamed(f"name {i}")], eskit.NO_STREAM)
    before = await log_digest(store)

    rotating = Keyring(keystore, new, previous=[old])
    assert rotating.rotate(batch=2) == 5
    assert rotating.rotate() == 0  # nothing left: safe to run again
    assert keystore.count_by_master() == {new.id: 5}

    assert await log_digest(store) == before
    assert await names(store, node(keystore, new)) == [f"name {i}" for i in range(5)]
    with pytest.raises(PrivacyError, match=f"wrapped by master key {new.id}"):
        await names(store, node(keystore, old))


async def test_rotation_names_the_master_key_it_lacks(keystore: KeyStore) -> None:
    old = MasterKey.generate()
    Keyring(keystore, old).key_for("c-1")
    with pytest.raises(PrivacyError, match=f"wrapped by master key {old.id}, which this"):
        Keyring(keystore, MasterKey.generate()).rotate()


async def log_digest(store: eskit.EventStore) -> str:
    """Everything stored about every event: a rewrite of any would change it."""
    digest = hashlib.sha256()
    async for e in store.read_all():
        digest.update(repr((e.id, e.stream, e.version, e.position, e.data, e.metadata)).encode())
        digest.update(e.recorded_at.isoformat().encode())
    return digest.hexdigest()


def test_master_keys_come_from_the_environment(tmp_path: Path) -> None:
    key = MasterKey.generate()
    assert MasterKey.from_env({"ESKIT_MASTER_KEY": key.text()}) == key
    (tmp_path / "master.key").write_text(key.text() + "\n")
    assert MasterKey.from_env({"ESKIT_MASTER_KEY_FILE": str(tmp_path / "master.key")}) == key
    other = MasterKey.generate()
    assert MasterKey.previous_from_env(
        {"ESKIT_PREVIOUS_MASTER_KEYS": f"{key.text()}, {other.text()}"}
    ) == [key, other]
    with pytest.raises(PrivacyError, match=r"no master key: set ESKIT_MASTER_KEY"):
        MasterKey.from_env({})
    with pytest.raises(ValueError, match=r"a master key is 32 bytes"):
        MasterKey.from_text("c2hvcnQ=")
    with pytest.raises(ValueError, match=r"must be base64 text"):
        MasterKey.from_text("not base64!")
    assert key.text() not in repr(key)
