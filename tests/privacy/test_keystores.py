"""The key stores, each backend against the same expectations: one key per subject,
forgetting deletes for good, re-wrapping is conditional, and keys stay apart from events."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import psycopg
import pytest

import eskit
from eskit.privacy import Keyring, KeyStore, MasterKey, StoredKey, open_keystore
from eskit.store.base import utc_now
from tests import postgres
from tests.privacy.conftest import drop_schema


def key(key_id: str, subject: str, master: str = "m1") -> StoredKey:
    return StoredKey(key_id, subject, f"wrapped {key_id}".encode(), master, utc_now())


def test_a_subject_has_one_key_and_racing_writers_agree_on_it(keystore: KeyStore) -> None:
    first = keystore.add(key("k1", "c-1"))
    second = keystore.add(key("k2", "c-1"))
    assert first == second == keystore.current("c-1") == keystore.get("k1")
    assert first.wrapped == b"wrapped k1"
    assert keystore.get("k2") is None


def test_forgetting_deletes_the_subject_keys_only(keystore: KeyStore) -> None:
    keystore.add(key("k1", "c-1"))
    keystore.add(key("k2", "c-2"))
    assert not keystore.forgotten("c-1")
    assert keystore.forget("c-1") == ["k1"]
    assert keystore.get("k1") is None
    assert keystore.current("c-1") is None
    assert keystore.get("k2") is not None
    assert keystore.forget("c-1") == []
    assert keystore.forgotten("c-1")
    assert not keystore.forgotten("c-2")
    assert keystore.forget("nobody") == []
    assert not keystore.forgotten("nobody")


def test_rewrap_only_changes_keys_still_wrapped_by_the_old_master(keystore: KeyStore) -> None:
    keystore.add(key("k1", "c-1", "old"))
    keystore.add(key("k2", "c-2", "old"))
    keystore.add(key("k3", "c-3", "new"))
    assert [k.key_id for k in keystore.wrapped_by_others("new", 10)] == ["k1", "k2"]
    changed = keystore.rewrap(
        [("old", key("k1", "c-1", "new")), ("elsewhere", key("k2", "c-2", "new"))]
    )
    assert changed == 1
    assert keystore.count_by_master() == {"new": 2, "old": 1}


def test_nodes_racing_to_create_a_key_end_up_with_one(keystore: KeyStore) -> None:
    master = MasterKey.generate()
    nodes = [Keyring(keystore, master) for _ in range(4)]  # each its own cache and lock
    ids: list[str] = []
    threads = [
        threading.Thread(target=lambda node=node: ids.append(node.key_for("c-9")[0]))
        for node in nodes * 2
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 8
    assert len(set(ids)) == 1
    assert keystore.count_by_master() == {master.id: 1}


def test_forgetting_leaves_no_copy_of_the_key_in_the_sqlite_files(tmp_path: Path) -> None:
    keys = open_keystore(f"sqlite:///{tmp_path}/keys.db")
    try:
        keyring = Keyring(keys, MasterKey.generate())
        for subject in ("c-1", "c-2", "c-3"):
            keyring.key_for(subject)
        wrapped = keys.current("c-2")
        assert wrapped is not None
        assert wrapped.wrapped in files_bytes(tmp_path, "keys.db")
        keyring.forget("c-2")
        assert wrapped.wrapped not in files_bytes(tmp_path, "keys.db")
        assert keys.current("c-1") is not None
    finally:
        keys.close()


def files_bytes(directory: Path, name: str) -> bytes:
    """The database file and its write-ahead log, as one blob to search."""
    return b"".join(p.read_bytes() for p in directory.glob(f"{name}*"))


@pytest.mark.anyio
async def test_a_key_store_refuses_the_event_store_file(tmp_path: Path) -> None:
    async with eskit.open_store(f"sqlite:///{tmp_path}/events.db"):
        pass
    with pytest.raises(ValueError, match=r"holds an event store: keep the keys in a file"):
        open_keystore(f"sqlite:///{tmp_path}/events.db")


@pytest.mark.anyio
async def test_a_key_store_refuses_the_event_store_schema() -> None:
    url = postgres.store_url()
    try:
        async with eskit.open_store(url):
            pass
        with pytest.raises(ValueError, match=r"holds an event store: keep the keys in a schema"):
            open_keystore(url)
    finally:
        await asyncio.to_thread(drop_schema, url)


def test_unknown_key_store_urls_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unsupported key store URL 'mysql://x'"):
        open_keystore("mysql://x")


def test_a_key_store_that_is_not_there_is_not_created_when_asked_not_to(
    tmp_path: Path,
) -> None:
    """``create=False`` (the CLI's forget, rotate and status): ``no such key store``, and
    no file, folder or schema appears; an existing key store opens as before."""
    url = postgres.store_url().replace("schema=t_", "schema=k_")
    schema = url.rsplit("schema=", 1)[1]
    cases = {
        "memory://": "memory://",
        f"sqlite:///{tmp_path}/dir/keys.db": f"{tmp_path}/dir/keys.db",
        url: f"PostgreSQL schema {schema}",
    }
    for missing, where in cases.items():
        with pytest.raises(ValueError, match=rf"^no such key store: {where} \("):
            open_keystore(missing, create=False)
    assert list(tmp_path.iterdir()) == []
    with psycopg.connect(postgres.database_url()) as conn:
        assert conn.execute("SELECT to_regnamespace(%s)", (schema,)).fetchone() == (None,)
    try:
        for existing in list(cases)[1:]:
            open_keystore(existing).close()
            keys = open_keystore(existing, create=False)
            assert keys.count_by_master() == {}
            keys.close()
    finally:
        drop_schema(url)
