"""``readonly=True`` on SQLite, on real files: a store that is not there is an error and
nothing is created; an existing file is read as it is, while another process writes it or
after its WAL was checkpointed away, and reading it leaves no ``-wal``/``-shm`` behind."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest

import eskit
from eskit.store.sqlite import SQLiteStore
from tests.store.fixtures.pre_chain import write_pre_chain_file
from tests.store.test_sqlite import TIMEOUT, message, spawn, stop

pytestmark = pytest.mark.anyio


def url(path: Path) -> str:
    return f"sqlite:///{path}"


async def write(path: Path, count: int) -> None:
    async with eskit.open_store(url(path)) as store:
        for n in range(count):
            await store.append(f"order-{n % 2}", [eskit.NewEvent("Happened", {"n": n})])


def wal_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def contents(folder: Path) -> list[Path]:
    return list(folder.iterdir())


def size(path: Path) -> int:
    return path.stat().st_size


async def test_a_missing_file_is_not_found_and_nothing_is_created(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    store = eskit.open_store(url(path), readonly=True)
    with pytest.raises(
        eskit.StoreNotFound, match=f"^no such store: {re.escape(str(path))}$"
    ) as raised:
        await store.open()
    assert raised.value.location == str(path)
    assert not store.is_open
    assert contents(tmp_path) == []


async def test_a_path_in_a_missing_folder_creates_no_folder(tmp_path: Path) -> None:
    path = tmp_path / "nodir" / "x.db"
    with pytest.raises(eskit.StoreNotFound, match=f"no such store: {re.escape(str(path))}"):
        await eskit.open_store(url(path), readonly=True).open()
    assert contents(tmp_path) == []


async def test_a_relative_path_is_named_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        eskit.StoreNotFound, match=re.escape(f"no such store: {tmp_path / 'typo.db'}")
    ):
        await eskit.open_store("sqlite:///./typo.db", readonly=True).open()
    assert contents(tmp_path) == []


async def test_an_empty_file_is_not_a_store_and_stays_empty(tmp_path: Path) -> None:
    """What earlier versions left behind on a mistyped path: a file of 0 bytes."""
    path = tmp_path / "empty.db"
    path.touch()
    with pytest.raises(eskit.StoreNotFound, match="has no eskit tables"):
        await eskit.open_store(url(path), readonly=True).open()
    assert path.stat().st_size == 0
    assert wal_files(path) == []


async def test_a_file_that_is_not_a_database_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database, but long enough to have a header page\n" * 20)
    with pytest.raises(eskit.StoreNotFound, match="not a SQLite database"):
        await eskit.open_store(url(path), readonly=True).open()
    assert path.read_text().startswith("not a database")


async def test_a_file_whose_schema_needs_an_upgrade_is_refused_and_left_alone(
    tmp_path: Path,
) -> None:
    """A file from before the hash chain (schema version 0): the writer would upgrade it;
    a read-only open cannot, so it says so instead of failing on the first read."""
    path = tmp_path / "old.db"
    write_pre_chain_file(path)
    before = path.read_bytes()
    with pytest.raises(eskit.StoreError, match=r"older than this eskit's.*once for writing"):
        await eskit.open_store(url(path), readonly=True).open()
    assert path.read_bytes() == before


async def test_a_file_newer_than_this_eskit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    await write(path, 2)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 999")
    conn.close()
    with pytest.raises(eskit.StoreError, match=r"version 999, newer than this eskit"):
        await eskit.open_store(url(path), readonly=True).open()


async def test_a_checkpointed_file_is_read_and_left_without_wal_files(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    await write(path, 5)
    assert wal_files(path) == []  # the writer checkpointed and removed its WAL on close
    async with eskit.open_store(url(path), readonly=True) as store:
        assert await store.last_position() == 5
        assert [e.data["n"] for e in await collect_all(store)] == [0, 1, 2, 3, 4]
        assert [s.stream for s in await store.list_streams()] == ["order-0", "order-1"]
    assert wal_files(path) == []


async def test_a_readonly_store_starts_no_thread(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    await write(path, 1)
    async with eskit.open_store(url(path), readonly=True) as store:
        assert isinstance(store, SQLiteStore)
        names = [t.name for t in threading.enumerate()]
        assert not [n for n in names if n.startswith("eskit-sqlite")], names
        with pytest.raises(eskit.StoreError, match="read-only"):
            await store.write_transaction(lambda conn: conn.execute("DELETE FROM events"))
        assert await store.last_position() == 1


async def test_reads_a_file_another_process_writes_and_follows_it_live(tmp_path: Path) -> None:
    """This process writes (its WAL holds what is not checkpointed yet); a child opened
    read-only reads it and follows new events as they commit."""
    path = tmp_path / "events.db"
    count = 5
    async with SQLiteStore(path) as store:
        await store.append("before", [eskit.NewEvent("Happened", {"i": -1, "t": time.time()})])
        child = await spawn("subscribe", str(path), str(count), "readonly")
        try:
            async with asyncio.timeout(TIMEOUT):
                assert await message(child) == {"ready": 1}
                for i in range(count):
                    event = eskit.NewEvent("Happened", {"i": i, "t": time.time()})
                    result = await store.append("live", [event])
                    seen = await message(child)
                    assert (seen["i"], seen["position"]) == (i, result.last_position)
                assert await child.wait() == 0
        finally:
            await stop(child)
        assert await store.last_position() == count + 1  # the child wrote nothing
    assert wal_files(path) == []


async def test_sees_what_a_writer_in_this_process_has_not_checkpointed(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with SQLiteStore(path, idle_checkpoint=3600) as writer:
        await writer.append("order-1", [eskit.NewEvent("Happened", {})])
        assert size(Path(f"{path}-wal")) > 0
        async with eskit.open_store(url(path), readonly=True) as reader:
            assert await reader.last_position() == 1
            await writer.append("order-1", [eskit.NewEvent("Happened", {})])
            assert await reader.stream_version("order-1") == 1
    assert wal_files(path) == []


async def collect_all(store: eskit.EventStore) -> list[eskit.RecordedEvent]:
    return [e async for e in store.read_all()]
