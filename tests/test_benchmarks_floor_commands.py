"""A tiny run of ``python -m benchmarks.floor_commands``: the round trip is measured and
every async target is set against its floor, on real SQLite files."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks import floor_commands


def test_every_async_target_is_set_against_its_floor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    floor_commands.main(["--commands", "100", "--repeat", "1", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "round trip of thread hand-offs:" in out
    for workload in floor_commands.TARGETS:
        line = next(line for line in out.splitlines() if line.startswith(workload))
        assert "async floor (raw + one round trip)" in line
        assert line.endswith(("within reach", "OUT OF REACH with no eskit code"))
    assert list(tmp_path.iterdir()) == []  # every file was removed
