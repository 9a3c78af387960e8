"""A tiny run of ``python -m benchmarks.floor``: every side of both workloads runs on a
real SQLite file and is reported against raw ``sqlite3``."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from benchmarks import floor

import eskit
from eskit.store.audit import AuditReport, verify


def test_every_side_runs_and_is_compared_to_raw(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    floor.main(["--scale", "0.01", "--repeat", "1", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    for workload, (_, sides) in floor.WORKLOADS.items():
        assert workload in out
        for name in sides:
            assert any(
                line.strip().startswith(name) and line.rstrip().endswith("of raw")
                for line in out.splitlines()
            ), name
    assert list(tmp_path.iterdir()) == []  # every file was removed


async def _written(path: Path) -> tuple[list[eskit.RecordedEvent], AuditReport]:
    """Every event of the file as eskit reads it, and eskit's audit of its chain."""
    async with eskit.open_store(f"sqlite:///{path}") as store:
        return [e async for e in store.read_all()], await verify(store, key=None)


@pytest.mark.parametrize(
    ("side", "count"),
    [(floor.raw_checked, 30), (floor.w1c_checked, 30), (floor.w1c_checked, 300)],
)
def test_the_checked_floors_write_what_eskit_would(
    tmp_path: Path, side: floor.Side, count: int
) -> None:
    """The floors do eskit's work, not less: their events read back through eskit and
    their links pass its audit (each covers the position and version it was given). (300
    from 100 tasks: groups large enough for several chunks of rows.)"""
    assert side(tmp_path, count) > 0
    events, report = asyncio.run(_written(tmp_path / "checked.db"))
    assert [e.position for e in events] == list(range(1, count + 2))  # eskit's warm-up first
    assert all(e.version == 0 and e.data for e in events[1:])
    assert report.problems == []
    assert (report.events, report.unlinked) == (count + 1, 0)


@pytest.mark.parametrize(
    ("side", "file"), [(floor.w2_raw, "raw.db"), (floor.w2_eskit_table, "table.db")]
)
def test_the_w2_sides_write_every_row_in_order(tmp_path: Path, side: floor.Side, file: str) -> None:
    """300 events, 100 a transaction, each in multi-row INSERTs: all land, in order."""
    assert side(tmp_path, 300) > 0
    conn = sqlite3.connect(tmp_path / file)
    try:
        rows = conn.execute(
            "SELECT version, data FROM events WHERE stream = 'invoice-0' ORDER BY position"
        ).fetchall()
    finally:
        conn.close()
    assert rows == [(version, floor.DATA) for version in range(300)]
