"""``eskit backup`` and ``eskit restore-backup``: a whole store to a file and back, proved
by digests and ``verify`` with anchors; refusals are one red line and exit status 1."""

from __future__ import annotations

import asyncio
from pathlib import Path

import eskit
from tests.cli.conftest import invoke


def test_backup_then_restore_proves_the_copy_identical(url: str, tmp_path: Path) -> None:
    file, anchors = tmp_path / "events.backup", tmp_path / "anchors.jsonl"
    copy = f"sqlite:///{tmp_path}/copy.db"
    saved = invoke(["verify", url, "--save-anchors", str(anchors)])
    backed_up = invoke(["backup", url, str(file)])
    after = tmp_path / "after.jsonl"
    restored = invoke(
        ["restore-backup", str(file), copy, "--anchors", str(anchors), "--save-anchors", str(after)]
    )

    for result in (saved, backed_up, restored):
        assert result.exit_code == 0, result.output
    assert "backed up 5 events (head 5) and" in backed_up.stdout
    assert "copying" in backed_up.stderr
    assert "writing" in backed_up.stderr
    assert "every table matches the backup's digest" in restored.stdout
    assert "│      5 │       3 │        0 │        0 │" in restored.stdout  # verify's table
    assert "checking" in restored.stderr
    assert "verifying" in restored.stderr

    async def logs() -> list[list[eskit.RecordedEvent]]:
        found = []
        for each in (url, copy):
            async with eskit.open_store(each, readonly=True) as store:
                found.append([e async for e in store.read_all()])
        return found

    original, restored_log = asyncio.run(logs())
    assert original == restored_log
    assert after.read_text() == anchors.read_text()  # nothing was appended in between


def test_restore_refuses_a_store_that_is_not_empty_unless_forced(url: str, tmp_path: Path) -> None:
    file = tmp_path / "events.backup"
    assert invoke(["backup", url, str(file)]).exit_code == 0

    refused = invoke(["restore-backup", str(file), url])
    forced = invoke(["restore-backup", str(file), url, "--force"])

    assert refused.exit_code == 1
    assert "error: sqlite:///" in refused.stderr
    assert "is not empty: restoring over it needs force (--force)" in refused.stderr
    assert forced.exit_code == 0, forced.output


def test_restore_refuses_a_file_cut_short(url: str, tmp_path: Path) -> None:
    file = tmp_path / "events.backup"
    assert invoke(["backup", url, str(file)]).exit_code == 0
    file.write_bytes(file.read_bytes()[:-100])
    target = tmp_path / "copy.db"

    refused = invoke(["restore-backup", str(file), f"sqlite:///{target}"])

    assert refused.exit_code == 1
    assert "is cut short: the closing manifest is missing" in refused.stderr
    assert not target.exists()


def test_a_missing_file_or_an_unknown_url_is_one_red_line(url: str, tmp_path: Path) -> None:
    missing = invoke(["restore-backup", str(tmp_path / "nothing.backup"), url])
    unknown = invoke(["backup", "ftp://somewhere/events", str(tmp_path / "x.backup")])

    assert missing.exit_code == unknown.exit_code == 1
    assert "error: no such backup file:" in missing.stderr
    assert "error: unsupported store URL 'ftp://somewhere/events'" in unknown.stderr
