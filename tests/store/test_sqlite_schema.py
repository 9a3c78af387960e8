"""SQLite store files carry a schema version (``PRAGMA user_version``): the writer applies
the pending migrations on open, in one ``BEGIN IMMEDIATE`` transaction, safely from several
processes at once, and refuses a file newer than this eskit."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import eskit
from eskit.errors import StoreError
from eskit.store import sqlite_schema
from eskit.store.audit import verify
from eskit.store.migrations import Migration
from tests.store.fixtures.make_fixtures import AUDIT_KEY
from tests.store.fixtures.pre_chain import write_pre_chain_file

pytestmark = pytest.mark.anyio

NEWEST = sqlite_schema.migrations()[-1].version
ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "c400693" / "sqlite.db"


def file_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return sqlite_schema.version(conn)


def columns(path: Path, table: str) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


async def test_a_new_file_gets_every_migration(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with eskit.open_store(f"sqlite:///{path}") as store:
        await store.append("order-1", [eskit.NewEvent("Placed", {})])
    assert file_version(path) == NEWEST >= 1
    assert "hash" in columns(path, "events")
    assert columns(path, "streams")
    assert columns(path, "snapshots")


async def test_a_file_from_before_the_chain_gets_its_hash_column(tmp_path: Path) -> None:
    """Its old event reads back (unlinked, not a problem) and new events are linked."""
    path = tmp_path / "events.db"
    write_pre_chain_file(path)
    async with eskit.open_store(f"sqlite:///{path}") as store:
        [old] = [e async for e in store.read_stream("order-0")]
        assert (old.type, old.data, old.version, old.position) == ("Noted", {"n": 0, "s": 0}, 0, 1)
        await store.append("order-0", [eskit.NewEvent("Paid", {})], expected_version=0)
        report = await verify(store)
        assert report.ok
        assert (report.events, report.unlinked) == (2, 1)
    assert file_version(path) == NEWEST
    assert "hash" in columns(path, "events")


async def test_a_file_newer_than_this_eskit_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with eskit.open_store(f"sqlite:///{path}") as store:
        await store.append("order-1", [eskit.NewEvent("Placed", {})])
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {NEWEST + 5}")
    before = path.read_bytes()
    with pytest.raises(StoreError) as raised:
        async with eskit.open_store(f"sqlite:///{path}"):
            pass
    message = str(raised.value)
    assert str(path) in message
    assert f"version {NEWEST + 5}, newer than this eskit knows ({NEWEST})" in message
    assert file_version(path) == NEWEST + 5
    assert path.read_bytes() == before


async def test_a_failing_migration_leaves_the_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.db"
    shutil.copyfile(FIXTURE, path)
    shipped = sqlite_schema.migrations()
    broken = Migration(NEWEST + 1, "broken", "CREATE TABLE later (x);\nSELECT nonsense();\n")
    monkeypatch.setattr(sqlite_schema, "migrations", lambda: [*shipped, broken])
    with pytest.raises(sqlite3.OperationalError, match="nonsense"):
        async with eskit.open_store(f"sqlite:///{path}"):
            pass
    assert file_version(path) == 0  # not even the migrations before the broken one
    with sqlite3.connect(path) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert "later" not in tables
    assert "events" in tables


def test_a_trigger_body_is_one_statement() -> None:
    script = (
        "-- a comment; with a semicolon\nCREATE TABLE t (x);\n"
        "CREATE TRIGGER g BEFORE DELETE ON t BEGIN\n  SELECT 1;\n  SELECT 2;\nEND;\n-- end\n"
    )
    found = list(sqlite_schema.statements(script))
    assert len(found) == 2
    assert found[1].startswith("CREATE TRIGGER")
    assert "SELECT 2;" in found[1]
    with pytest.raises(ValueError, match="inside a statement"):
        list(sqlite_schema.statements("CREATE TABLE t (x)"))


OPEN_AND_APPEND = """
import asyncio, sys, time
import eskit

async def main(path, name, go):
    time.sleep(max(0.0, go - time.time()))
    async with eskit.open_store(f"sqlite:///{path}") as store:
        await store.append(f"opener-{name}", [eskit.NewEvent("Opened", {})])

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
"""


def open_at_once(path: Path, processes: int) -> None:
    """``processes`` processes that open ``path`` at the same moment and append one event."""
    go = time.time() + 3  # every process has imported eskit by then
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AND_APPEND, str(path), str(n), str(go)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]
    for child in children:
        _, errors = child.communicate(timeout=60)
        assert child.returncode == 0, errors


@pytest.mark.parametrize("start", ["new", "old"])
async def test_processes_opening_one_file_at_once_take_turns(
    start: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new file, or one written before versions, opened by four processes at once:
    each migration runs once, every process opens and appends."""
    monkeypatch.setenv("ESKIT_AUDIT_KEY", AUDIT_KEY)  # the fixture's, inherited by the children
    path = tmp_path / "events.db"
    if start == "old":
        shutil.copyfile(FIXTURE, path)
    open_at_once(path, 4)
    assert file_version(path) == NEWEST
    async with eskit.open_store(f"sqlite:///{path}") as store:
        openers = [e.stream async for e in store.read_all(category="opener")]
        assert sorted(openers) == [f"opener-{n}" for n in range(4)]
        report = await verify(store)
        assert report.ok, report.problems
