"""``eskit migrate-events``: what it prints, a rerun that appends nothing, clear errors; and
a run killed (SIGKILL, a real process) midway on SQLite and PostgreSQL, then run again: the
target ends up as one uninterrupted run would leave it, without a duplicate."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import eskit
from eskit.migration import RECORD_TYPE
from tests import postgres
from tests.cli.conftest import invoke
from tests.migration.apps import history
from tests.processes import eskit_process


async def fill(url: str, orders: int) -> None:
    async with eskit.open_store(url) as store:
        for stream, new in history(orders):
            await store.append(stream, new)


async def log(url: str) -> list[tuple[Any, ...]]:
    async with eskit.open_store(url, readonly=True) as store:
        return [
            (e.id, e.stream, e.version, e.type, e.data, e.metadata) async for e in store.read_all()
        ]


def test_it_prints_what_it_did_and_a_rerun_appends_nothing(tmp_path: Path) -> None:
    blue, green = f"sqlite:///{tmp_path}/blue.db", f"sqlite:///{tmp_path}/green.db"
    asyncio.run(fill(blue, 10))
    args = ["migrate-events", blue, green, "--app", "tests.migration.apps:v2"]

    first, again = invoke(args), invoke(args)

    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines()[0] == (
        "migrated 22 events into 30 (30 appended now): 0 kept, 10 changed, 10 split into"
        " 10 more, 2 dropped"
    )
    assert re.search(
        r"^source: 22 events, last position 22, digest sha256:[0-9a-f]{64}$", first.stdout, re.M
    )
    assert re.search(
        r"^target: 30 events, last position 30, digest sha256:[0-9a-f]{64}$", first.stdout, re.M
    )
    assert "recorded in eskit.migration-orders-v2" in first.stdout
    assert re.search(r"^migrating .* 22/22 ", first.stderr, re.M), first.stderr
    assert "eskit projections rebuild" in first.stderr
    assert again.exit_code == 0, again.output
    assert "(0 appended now)" in again.stdout
    assert "already recorded in eskit.migration-orders-v2" in again.stdout


def test_errors_are_one_line(tmp_path: Path) -> None:
    blue = f"sqlite:///{tmp_path}/blue.db"
    asyncio.run(fill(blue, 1))
    cases = {
        ("tests.migration.apps:history",): "expected an eskit.migration.EventMigration",
        ("tests.migration.nothing:v2",): "cannot import tests.migration.nothing",
    }
    for (spec,), message in cases.items():
        result = invoke(["migrate-events", blue, f"sqlite:///{tmp_path}/g.db", "--app", spec])
        assert result.exit_code == 1
        assert result.stderr.startswith("error: "), result.stderr
        assert message in result.stderr
    same = invoke(["migrate-events", blue, blue, "--app", "tests.migration.apps:v2"])
    assert same.exit_code == 1
    assert "the source and the target are the same store" in same.stderr
    missing = invoke(
        [
            "migrate-events",
            f"sqlite:///{tmp_path}/no.db",
            f"sqlite:///{tmp_path}/g.db",
            "--app",
            "tests.migration.apps:v2",
        ]
    )
    assert missing.exit_code == 1
    assert "no such store" in missing.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_run_killed_midway_resumes_to_the_same_log(backend: str, tmp_path: Path) -> None:
    def url(name: str) -> str:
        return f"sqlite:///{tmp_path}/{name}.db" if backend == "sqlite" else postgres.store_url()

    blue, green, clean = url("blue"), url("green"), url("clean")
    asyncio.run(fill(blue, 1000))  # 2400 events, the slow migration takes >2.4 s
    args = ["migrate-events", blue, green, "--app", "tests.migration.apps:slow"]

    with eskit_process(*args) as process:
        while asyncio.run(written_so_far(green)) < 500:
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.communicate()
    cut = asyncio.run(log(green))
    assert 500 <= len(cut) < 3000  # killed midway: no record yet
    assert not any(e[3] == RECORD_TYPE for e in cut)

    resumed = invoke(args)
    one_go = invoke(["migrate-events", blue, clean, "--app", "tests.migration.apps:slow"])

    assert resumed.exit_code == 0, resumed.output
    assert one_go.exit_code == 0, one_go.output
    appended = int(re.search(r"\((\d+) appended now\)", resumed.stdout).group(1))  # type: ignore[union-attr]
    assert 0 < appended < 3000 - 500
    assert resumed.stdout.replace(f"({appended} appended", "(") == one_go.stdout.replace(
        "(3000 appended", "("
    )
    migrated = asyncio.run(log(green))
    assert migrated == asyncio.run(log(clean))
    assert len({e[0] for e in migrated}) == len(migrated) == 3001


async def written_so_far(url: str) -> int:
    """The target's last position; 0 until the run created it."""
    try:
        async with eskit.open_store(url, readonly=True) as store:
            return await store.last_position()
    except eskit.StoreError:  # not there yet, or its tables not yet made
        return 0
