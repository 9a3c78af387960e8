"""A restore killed with SIGKILL at a random moment leaves no half store: the target is as
it was (missing, empty, or the store it held) or holds the whole backup, never a part of
it; and running the restore again completes it. Both backends; on PostgreSQL the whole
process group dies (psql and pg_restore with the restoring process), as in a crash."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import eskit
from eskit.store.backup import BackupEngine, backup, restore_backup
from eskit.store.backup_file import Snapshot, TableDigest
from tests.store.backups import BACKENDS, new_url

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CHILD = Path(__file__).with_name("backup_child.py")
ROUNDS = 4
TIMEOUT = 60.0


def engine_of(url: str) -> BackupEngine:
    engine = eskit.open_store(url).backup_engine()
    assert engine is not None
    return engine


def state(engine: BackupEngine) -> dict[str, TableDigest] | None:
    """The target's tables, or None when it holds nothing."""
    return None if engine.is_empty() else engine.digests().tables


def run_and_kill(delay: float, *args: str) -> bool:
    """Run the child with ``args``, SIGKILL its process group ``delay`` seconds after its
    phase began; whether it had finished by then."""
    return run_timed(delay, *args)[0]


def run_timed(delay: float, *args: str) -> tuple[bool, float]:
    """``run_and_kill``, and how many seconds the child's phase ran."""
    child = subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert child.stdout is not None
    try:
        first = child.stdout.readline()
        began = time.monotonic()
        assert first in (b"restoring\n", b"copying\n"), first + child.stdout.read()
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=delay)
        finished = child.poll() == 0
        ran = time.monotonic() - began
        with contextlib.suppress(ProcessLookupError):  # it ended, and its group with it
            os.killpg(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=TIMEOUT)
        child.stdout.close()
    return finished, ran


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_restore_killed_midway_leaves_the_target_whole(
    backend: str, tmp_path: Path
) -> None:
    source_url, target_url = (new_url(backend, tmp_path, n) for n in ("source", "target"))
    file = tmp_path / "store.backup"
    async with eskit.open_store(source_url) as source:
        for n in range(60):
            batch = [eskit.NewEvent("Big", {"n": i, "text": "x" * 500}) for i in range(40)]
            await source.append(f"load-{n}", batch)
        manifest = await backup(source, file)
    backed_up: Snapshot = manifest.snapshot
    await _put_back_old(target_url, tmp_path)
    engine = engine_of(target_url)
    rng = random.Random(19)
    interrupted = 0
    # kill within the first part of the time a whole restore takes on this machine today
    # (its later part checks digests and verifies, after the target's transaction)
    finished, whole = await asyncio.to_thread(run_timed, TIMEOUT, "restore", str(file), target_url)
    assert finished
    await _put_back_old(target_url, tmp_path)
    for _ in range(ROUNDS):
        before = await asyncio.to_thread(state, engine)
        finished = await asyncio.to_thread(
            run_and_kill, rng.uniform(0.0, 0.3 * whole), "restore", str(file), target_url
        )
        after = await asyncio.to_thread(state, engine)
        assert after in (before, backed_up.tables), "a half-restored store"
        if after == before and before != backed_up.tables:
            interrupted += 1
            assert not finished
        if after == backed_up.tables:  # start the next round from the old store again
            await _put_back_old(target_url, tmp_path)
    assert interrupted > 0, "no round killed a restore midway: the test proves nothing"

    restored = await restore_backup(file, target_url, force=True)
    assert restored.report.ok
    assert await asyncio.to_thread(state, engine) == backed_up.tables


async def _put_back_old(url: str, folder: Path) -> None:
    """Replace the target by a store of one old event again."""
    old = folder / "old.backup"
    if not old.exists():
        scratch = "sqlite" if url.startswith("sqlite") else "postgresql"
        async with eskit.open_store(new_url(scratch, folder, "old")) as store:
            await store.append("old-1", [eskit.NewEvent("Old", {})])
            await backup(store, old)
    await restore_backup(old, url, force=True)


async def test_a_backup_killed_midway_leaves_no_file_and_the_next_one_cleans_up(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/source.db"
    async with eskit.open_store(url) as source:
        for n in range(40):
            batch = [eskit.NewEvent("Big", {"n": i, "text": "x" * 500}) for i in range(40)]
            await source.append(f"load-{n}", batch)
    file = tmp_path / "store.backup"

    finished = await asyncio.to_thread(run_and_kill, 0.2, "backup", url, str(file))

    assert not finished
    assert not file.exists()
    assert (tmp_path / ".store.backup.partial.d").exists()  # what the killed run left
    async with eskit.open_store(url) as source:
        manifest = await backup(source, file)
    assert manifest.snapshot.events == 1600
    assert sorted(await asyncio.to_thread(os.listdir, tmp_path)) == ["source.db", "store.backup"]
