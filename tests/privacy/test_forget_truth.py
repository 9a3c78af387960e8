"""``forget`` tells the truth: while another process holds a read transaction on a SQLite
key store, the deleted key stays in its write-ahead log, so forget raises rather than report
success; once the reader is gone, forgetting again empties the log. A subject that has no
key and was never forgotten is an error on every key store, not a silent success."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

import eskit
from eskit.application import Repository
from eskit.privacy import (
    FORGOTTEN_STREAM,
    ForgetIncomplete,
    Keyring,
    KeyStore,
    MasterKey,
    MemoryKeyStore,
    SubjectForgotten,
    UnknownSubject,
    forget,
)
from eskit.privacy.sqlite_keys import SQLiteKeyStore
from tests.privacy import events as examples
from tests.privacy.conftest import files_bytes
from tests.privacy.reader import reader_holding

pytestmark = pytest.mark.anyio


async def records(store: eskit.EventStore) -> list[eskit.RecordedEvent]:
    return [e async for e in store.read_stream(FORGOTTEN_STREAM)]


async def test_forget_fails_loudly_while_a_reader_keeps_the_key_in_the_log(
    store: eskit.EventStore, tmp_path: Path, master: MasterKey
) -> None:
    path = tmp_path / "keys.db"
    keyring = Keyring(SQLiteKeyStore(path, forget_timeout=0.5), master)
    events = examples.registry()
    events.encrypt_with(keyring)
    customers = Repository(store, events, examples.Customer.model())
    await customers.save("c-1", [examples.CustomerRenamed("Ann")], eskit.NO_STREAM)
    stored = keyring.keys.current("c-1")
    assert stored is not None
    try:
        with reader_holding(path):
            with pytest.raises(ForgetIncomplete, match=r"keys\.db-wal .* run forget again"):
                await forget(store, keyring, "c-1", by="dpo")
            assert stored.wrapped in path.with_name("keys.db-wal").read_bytes()  # it was true
            assert keyring.keys.current("c-1") is None  # deleted all the same
            assert await records(store) == []  # nothing claims it is done
            (ann,) = [e async for e in store.read_stream("customer-c-1")]
            assert events.decode(ann)[0].name == "[forgotten]"

        await forget(store, keyring, "c-1", by="dpo")  # the reader is gone: finish the job
        assert path.with_name("keys.db-wal").stat().st_size == 0
        assert stored.wrapped not in files_bytes(tmp_path, "keys")
        (record,) = await records(store)
        assert record.data["subject"] == "c-1"
    finally:
        keyring.close()


async def test_forgetting_an_unknown_subject_is_an_error(
    store: eskit.EventStore, keystore: KeyStore, master: MasterKey
) -> None:
    keyring = Keyring(keystore, master)
    events = examples.registry()
    events.encrypt_with(keyring)
    customers = Repository(store, events, examples.Customer.model())
    await customers.save("c-1", [examples.CustomerRenamed("Ann")], eskit.NO_STREAM)

    with pytest.raises(UnknownSubject, match=r"no such subject: 'nobody'"):
        await forget(store, keyring, "nobody", by="dpo")
    assert await records(store) == []
    assert not keystore.forgotten("nobody")

    await forget(store, keyring, "c-1", by="dpo")
    again = await forget(store, keyring, "c-1", by="dpo")  # known: forgotten before
    first, second = await records(store)
    assert second.position == again.last_position
    assert (len(first.data["key_ids"]), second.data["key_ids"]) == (1, [])


async def test_an_unknown_subject_is_told_apart_even_while_a_reader_holds_the_log(
    store: eskit.EventStore, tmp_path: Path, master: MasterKey
) -> None:
    path = tmp_path / "keys.db"
    keyring = Keyring(SQLiteKeyStore(path, forget_timeout=0.2), master)
    keyring.key_for("c-1")
    try:
        with reader_holding(path), pytest.raises(UnknownSubject):
            await forget(store, keyring, "nobody", by="dpo")
    finally:
        keyring.close()


async def test_a_subject_forgotten_before_the_key_store_listed_them_is_known(
    store: eskit.EventStore, master: MasterKey
) -> None:
    """A key store written by an older eskit has no list of forgotten subjects: the record
    in the store still tells a forgotten subject from an unknown one."""
    old_record = SubjectForgotten("c-9", ["k9"], "dpo")
    await store.append(
        FORGOTTEN_STREAM,
        [eskit.NewEvent("SubjectForgotten", msgspec.to_builtins(old_record), {"by": "dpo"})],
    )
    keyring = Keyring(MemoryKeyStore(), master)
    again = await forget(store, keyring, "c-9", by="dpo")
    assert again.last_version == 1
    with pytest.raises(UnknownSubject):
        await forget(store, keyring, "c-10", by="dpo")
