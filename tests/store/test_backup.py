"""``backup`` and ``restore_backup`` on both backends: a restore brings back everything a
reader could see, exactly; a backup taken under concurrent appends holds a prefix of the
log with its chains and heads intact; a store that holds anything is replaced only when
forced; a file cut short or altered is refused before anything is written."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import msgspec
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eskit
from eskit.privacy.keystore import MemoryKeyStore, StoredKey
from eskit.store import backup_file, sqlite_backup
from eskit.store.audit import verify
from eskit.store.backup import BackupError, backup, restore_backup
from tests.postgres import database_url
from tests.store.backups import BACKENDS, furnish, new_url, picture

pytestmark = pytest.mark.anyio

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_a_restore_brings_back_everything_exactly(backend: str, tmp_path: Path) -> None:
    source_url, target_url = (new_url(backend, tmp_path, n) for n in ("source", "target"))
    file = tmp_path / "store.backup"
    async with eskit.open_store(source_url) as source:
        await furnish(source)
        anchors = (await verify(source)).anchors()
        manifest = await backup(source, file)
        before = await picture(source)
        measured = source.backup_engine()
        assert measured is not None
        tables = measured.digests().tables

    restored = await restore_backup(file, target_url, anchors=anchors)

    assert restored.report.ok, restored.report.problems
    assert restored.report.events == manifest.snapshot.events == len(before["log"])
    assert manifest.snapshot.tables == tables
    async with eskit.open_store(target_url) as target:
        assert await picture(target) == before
        engine = target.backup_engine()
        assert engine is not None
        assert engine.digests().tables == tables
    carried = set(tables)
    assert {"counts__g1", "eskit_projections", "eskit_groups", "eskit_group_parked"} <= carried


async def test_a_backup_under_concurrent_appends_holds_a_prefix_of_the_log(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_backup, "PAGES", 1)  # a page per step: appends land between
    source_url, target_url = (new_url(backend, tmp_path, n) for n in ("source", "target"))
    file = tmp_path / "store.backup"
    async with eskit.open_store(source_url) as source:
        for n in range(20):
            await source.append(f"load-{n}", [eskit.NewEvent("Big", {"x": "y" * 4000})] * 1)
        copying = asyncio.Event()
        appended_while_copying = 0

        async def append_until(done: asyncio.Event) -> None:
            nonlocal appended_while_copying
            n = 0
            while not done.is_set():
                n += 1
                await source.append(
                    f"busy-{n % 7}", [eskit.NewEvent("Tick", {"n": n}), eskit.NewEvent("Tock", {})]
                )
                if copying.is_set():
                    appended_while_copying += 1
                await asyncio.sleep(0)

        def progress(phase: str, done: int, total: int) -> None:
            if phase == "copying":
                copying.set()

        finished = asyncio.Event()
        writers = [asyncio.create_task(append_until(finished)) for _ in range(3)]
        await asyncio.sleep(0.05)
        try:
            manifest = await backup(source, file, progress=progress)
        finally:
            finished.set()
            await asyncio.gather(*writers)
        head = manifest.snapshot.head
        log = [e async for e in source.read_all()]
        prefix = [e for e in log if e.position <= head]
        assert appended_while_copying > 0
        assert log[-1].position > head  # appends went on after the copy's moment

    restored = await restore_backup(file, target_url)

    assert restored.report.ok, restored.report.problems
    async with eskit.open_store(target_url, readonly=True) as target:
        copied = [e async for e in target.read_all()]
        assert copied == prefix
        assert [e.position for e in copied] == list(range(1, head + 1))
        assert await target.last_position() == head
        last: dict[str, int] = {}
        for event in prefix:
            last[event.stream] = event.version
        for stream, version in last.items():
            assert await target.stream_version(stream) == version
        # the copy's heads are the prefix's: appending goes on where the prefix ended
    async with eskit.open_store(target_url) as target:
        stream = prefix[-1].stream
        result = await target.append(stream, [eskit.NewEvent("After", {})], last[stream])
        assert (result.last_version, result.last_position) == (last[stream] + 1, head + 1)
        assert (await verify(target)).ok


async def test_a_store_that_is_not_empty_is_replaced_only_when_forced(
    backend: str, tmp_path: Path
) -> None:
    source_url, target_url = (new_url(backend, tmp_path, n) for n in ("source", "target"))
    file = tmp_path / "store.backup"
    async with eskit.open_store(source_url) as source:
        await source.append("a-1", [eskit.NewEvent("A", {"n": 1})])
        await backup(source, file)
        wanted = [e async for e in source.read_all()]
    async with eskit.open_store(target_url) as target:
        await target.set_stream_metadata("b-1", eskit.StreamMetadata(max_count=1))
        kept = await target.get_stream_metadata("b-1")

    with pytest.raises(BackupError, match="is not empty: restoring over it needs force"):
        await restore_backup(file, target_url)

    async with eskit.open_store(target_url) as target:
        assert [e async for e in target.read_all()] == []
        assert await target.get_stream_metadata("b-1") == kept
    restored = await restore_backup(file, target_url, force=True)
    assert restored.report.ok
    async with eskit.open_store(target_url) as target:
        assert [e async for e in target.read_all()] == wanted
        assert await target.get_stream_metadata("b-1") == eskit.StreamMetadata()


async def test_a_new_empty_store_is_no_obstacle(backend: str, tmp_path: Path) -> None:
    source_url, target_url = (new_url(backend, tmp_path, n) for n in ("source", "target"))
    file = tmp_path / "store.backup"
    async with eskit.open_store(source_url) as source:
        await source.append("a-1", [eskit.NewEvent("A", {"n": 1})])
        await backup(source, file)
    async with eskit.open_store(target_url):
        pass  # created and migrated, nothing written

    assert (await restore_backup(file, target_url)).report.events == 1


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a small SQLite backup."""
    folder = tmp_path_factory.mktemp("sealed")

    async def make() -> None:
        async with eskit.open_store(f"sqlite:///{folder}/source.db") as source:
            await source.append("a-1", [eskit.NewEvent("A", {"n": n}) for n in range(30)])
            await backup(source, folder / "store.backup")

    asyncio.run(make())
    return (folder / "store.backup").read_bytes()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_file_cut_short_or_altered_anywhere_is_refused(
    sealed: bytes, tmp_path: Path, data: st.DataObject
) -> None:
    if data.draw(st.booleans(), label="cut"):
        damaged = sealed[: data.draw(st.integers(0, len(sealed) - 1), label="length")]
    else:
        at = data.draw(st.integers(0, len(sealed) - 1), label="at")
        bit = data.draw(st.integers(0, 7), label="bit")
        damaged = sealed[:at] + bytes([sealed[at] ^ (1 << bit)]) + sealed[at + 1 :]
    file = tmp_path / "damaged.backup"
    file.write_bytes(damaged)
    target = tmp_path / "target.db"
    with contextlib.suppress(FileNotFoundError):
        target.unlink()

    with pytest.raises(BackupError, match=r"damaged\.backup (is|has) |not an eskit backup"):
        asyncio.run(restore_backup(file, f"sqlite:///{target}"))

    assert not target.exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:-1], "is cut short: the closing manifest is missing"),
        (lambda b: b[: len(b) // 2], "is cut short: the closing manifest is missing"),
        (lambda b: b"not a backup at all" + b, "is not an eskit backup"),
        (lambda b: b[:-60] + b"}" + b[-59:], "is corrupted: its manifest does not match"),
    ],
    ids=["last-byte-cut", "half-cut", "foreign", "manifest-edited"],
)
def test_the_refusal_says_what_is_wrong(
    sealed: bytes, tmp_path: Path, damage: Callable[[bytes], bytes], message: str
) -> None:
    file = tmp_path / "damaged.backup"
    file.write_bytes(damage(sealed))
    with pytest.raises(BackupError, match=message):
        backup_file.check(file)


def test_a_flipped_payload_byte_names_the_checksum(sealed: bytes, tmp_path: Path) -> None:
    at = len(backup_file.MAGIC) + 100
    file = tmp_path / "damaged.backup"
    file.write_bytes(sealed[:at] + bytes([sealed[at] ^ 1]) + sealed[at + 1 :])
    with pytest.raises(BackupError, match="is corrupted: its payload's SHA-256 is"):
        backup_file.check(file)


async def test_a_second_backup_to_the_same_file_is_refused_while_the_first_runs(
    tmp_path: Path,
) -> None:
    """Both would use one working folder beside the file: the second is refused at once,
    and the first ends whole."""
    url = f"sqlite:///{tmp_path}/source.db"
    file = tmp_path / "store.backup"
    copying, go_on = threading.Event(), threading.Event()

    def held_while_copying(phase: str, done: int, total: int) -> None:
        if phase == "copying":
            copying.set()
            go_on.wait(30)

    async with eskit.open_store(url) as source:
        await source.append("load-1", [eskit.NewEvent("Loaded", {"n": n}) for n in range(50)])
        first = asyncio.ensure_future(backup(source, file, progress=held_while_copying))
        assert await asyncio.to_thread(copying.wait, 30)
        with pytest.raises(BackupError, match="another backup or restore is using"):
            await backup(source, file)
        go_on.set()
        manifest = await first
    assert manifest.snapshot.events == 50
    assert backup_file.check(file).snapshot == manifest.snapshot
    assert sorted(os.listdir(tmp_path)) == ["source.db", "store.backup"]
    restored = await restore_backup(file, f"sqlite:///{tmp_path}/target.db")
    assert restored.report.ok


async def test_two_files_of_one_name_restore_at_once(tmp_path: Path) -> None:
    """Restores unpack in a working folder named after the file's whole path: two backups
    called store.backup, from two folders, restore side by side."""
    files = []
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
        async with eskit.open_store(f"sqlite:///{tmp_path / side}/source.db") as source:
            await source.append(f"{side}-1", [eskit.NewEvent("Made", {"side": side})])
            await backup(source, tmp_path / side / "store.backup")
        files.append(tmp_path / side / "store.backup")
    restoring, go_on = threading.Event(), threading.Event()

    def held_while_restoring(phase: str, done: int, total: int) -> None:
        if phase == "restoring":
            restoring.set()
            go_on.wait(30)

    first = asyncio.ensure_future(
        restore_backup(files[0], f"sqlite:///{tmp_path}/a.db", progress=held_while_restoring)
    )
    assert await asyncio.to_thread(restoring.wait, 30)
    second = await restore_backup(files[1], f"sqlite:///{tmp_path}/b.db")
    go_on.set()
    assert (await first).report.ok
    assert second.report.ok
    for side in ("a", "b"):
        async with eskit.open_store(f"sqlite:///{tmp_path}/{side}.db") as restored:
            assert [e.stream async for e in restored.read_all()] == [f"{side}-1"]


async def test_a_memory_store_cannot_be_backed_up(tmp_path: Path) -> None:
    async with eskit.open_store("memory://") as store:
        with pytest.raises(BackupError, match="MemoryStore keeps nothing to back up"):
            await backup(store, tmp_path / "x.backup")
    assert not (tmp_path / "x.backup").exists()


async def test_a_sqlite_backup_restores_only_into_sqlite(tmp_path: Path) -> None:
    async with eskit.open_store(f"sqlite:///{tmp_path}/source.db") as source:
        await source.append("a-1", [eskit.NewEvent("A", {})])
        await backup(source, tmp_path / "store.backup")
    with pytest.raises(BackupError, match="is a sqlite backup: it restores into a sqlite store"):
        await restore_backup(tmp_path / "store.backup", new_url("postgresql", tmp_path, "t"))


async def test_keys_are_counted_never_copied_and_missing_ones_are_named(
    tmp_path: Path,
) -> None:
    keys = MemoryKeyStore()
    for n, master in enumerate(("m-old", "m-old", "m-new")):
        keys.add(StoredKey(f"k{n}", f"s{n}", b"\x01wrapped-secret", master, NOW))
    file = tmp_path / "store.backup"
    async with eskit.open_store(f"sqlite:///{tmp_path}/source.db") as source:
        await source.append("a-1", [eskit.NewEvent("A", {})])
        manifest = await backup(source, file, keys=keys)
    keys.forget("s0")
    keys.forget("s1")  # every key wrapped by m-old is gone now

    restored = await restore_backup(file, f"sqlite:///{tmp_path}/target.db", keys=keys)

    assert manifest.keys == {"m-old": 2, "m-new": 1}
    assert b"wrapped-secret" not in file.read_bytes()
    assert restored.keys_missing == ["m-old"]


def test_a_password_reaches_the_postgresql_tools_in_their_environment_only() -> None:
    from eskit.store.postgres_backup import _without_password

    dsn, env = _without_password("postgresql://owner:s3cret@db.internal:5432/billing")

    assert "s3cret" not in dsn
    assert "billing" in dsn
    assert env["PGPASSWORD"] == "s3cret"


async def test_a_restore_whose_tables_differ_from_the_manifest_is_refused(
    backend: str, tmp_path: Path
) -> None:
    """A manifest sealed over other digests (as a bug in a copy would leave it): the
    restore says which table differs, before anything is written (SQLite) or before COMMIT
    (PostgreSQL), so the target keeps what it held."""
    source_url, target_url = (new_url(backend, tmp_path, n) for n in ("source", "target"))
    file, forged = tmp_path / "store.backup", tmp_path / "forged.backup"
    async with eskit.open_store(source_url) as source:
        await source.append("a-1", [eskit.NewEvent("A", {"n": 1})])
        manifest = await backup(source, file)
    events = "events" if backend == "sqlite" else "eskit_events"
    tables = dict(manifest.snapshot.tables)
    tables[events] = backup_file.TableDigest(tables[events].rows, "0" * 32)
    snapshot = msgspec.structs.replace(manifest.snapshot, tables=tables)
    backup_file.extract(file, tmp_path / "payload")
    backup_file.write(
        forged,
        tmp_path / "payload",
        lambda size, sha: msgspec.structs.replace(
            manifest, snapshot=snapshot, payload_size=size, payload_sha256=sha
        ),
    )
    async with eskit.open_store(target_url) as target:
        await target.append("old-1", [eskit.NewEvent("Old", {})])

    with pytest.raises(BackupError, match=f"table {events} differs"):
        await restore_backup(forged, target_url, force=True)

    async with eskit.open_store(target_url) as target:
        assert [e.stream async for e in target.read_all()] == ["old-1"]


async def test_a_postgresql_backup_restores_into_another_database_under_its_own_name(
    tmp_path: Path,
) -> None:
    source_url = new_url("postgresql", tmp_path, "source")
    file = tmp_path / "store.backup"
    async with eskit.open_store(source_url) as source:
        await source.append("a-1", [eskit.NewEvent("A", {"n": n}) for n in range(3)])
        await backup(source, file)
        wanted = [e async for e in source.read_all()]
    server = database_url().rsplit("/", 1)[0]
    other = f"eskit_backup_{uuid.uuid4().hex[:8]}"
    schema = source_url.rsplit("schema=", 1)[1]
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{other}"')
    try:
        target_url = f"{server}/{other}?schema={schema}"
        assert (await restore_backup(file, target_url)).report.ok
        async with eskit.open_store(target_url, readonly=True) as target:
            assert [e async for e in target.read_all()] == wanted
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')
