"""A tiny run of ``python -m benchmarks.floor``: every side of both workloads runs on a
real SQLite file and is reported against raw ``sqlite3``."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks import floor


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
