"""``eskit export`` and ``eskit import``: a round trip between two SQLite files."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import eskit
from tests.cli.conftest import invoke


def digest_of(output: str) -> str:
    found = re.search(r"digest sha256:([0-9a-f]{64})", output)
    assert found, output
    return found.group(1)


def test_export_then_import_into_another_file(url: str, tmp_path: Path) -> None:
    copy = f"sqlite:///{tmp_path}/copy.db"
    exported = invoke(["export", url, str(tmp_path / "log.jsonl")])
    imported = invoke(["import", copy, str(tmp_path / "log.jsonl")])
    again = invoke(["export", copy, str(tmp_path / "again.jsonl")])

    for result in (exported, imported, again):
        assert result.exit_code == 0, result.output
    assert "exported 5 events" in exported.stdout
    assert "5 written, 0 already present: 5 events" in imported.stdout
    assert digest_of(exported.stdout) == digest_of(imported.stdout) == digest_of(again.stdout)
    assert "exporting" in exported.stderr  # the progress bar
    assert "events/s" in exported.stderr
    assert "checking" in imported.stderr  # both passes show progress
    assert "importing" in imported.stderr

    async def logs() -> list[list[tuple[object, ...]]]:
        found: list[list[tuple[object, ...]]] = []
        for each in (url, copy):
            async with eskit.open_store(each) as store:
                found.append([(e.id, e.stream, e.version, e.data) async for e in store.read_all()])
        return found

    source, target = asyncio.run(logs())
    assert source == target


def test_importing_twice_writes_nothing_and_says_so(url: str, tmp_path: Path) -> None:
    invoke(["export", url, str(tmp_path / "log.jsonl")])
    again = invoke(["import", url, str(tmp_path / "log.jsonl")])  # into the source itself
    assert again.exit_code == 0, again.output
    assert "0 written, 5 already present: 5 events" in again.stdout
    assert "5" in invoke(["info", url]).stdout


def test_a_damaged_file_is_refused_and_creates_no_store(url: str, tmp_path: Path) -> None:
    invoke(["export", url, str(tmp_path / "log.jsonl")])
    text = (tmp_path / "log.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "cut.jsonl").write_text("".join(text[:3]))
    result = invoke(["import", f"sqlite:///{tmp_path}/new.db", str(tmp_path / "cut.jsonl")])
    assert result.exit_code == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert re.match(r"error: .*cut\.jsonl:3: the file is incomplete: it ends after 3 events", line)
    assert not (tmp_path / "new.db").exists()


def test_a_malformed_file_is_one_error_line_naming_the_line(url: str, tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"id": "x"}\n')
    result = invoke(["import", url, str(tmp_path / "bad.jsonl")])
    assert result.exit_code == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert re.match(r"error: .*bad\.jsonl:1: not an exported event", line)


def test_a_missing_file_is_one_error_line(url: str, tmp_path: Path) -> None:
    result = invoke(["import", url, str(tmp_path / "none.jsonl")])
    assert result.exit_code == 1
    assert "No such file or directory" in result.stderr
