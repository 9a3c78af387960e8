"""A mistyped store path: the commands that only look say ``no such store: PATH``, exit 1
and create nothing; the commands meant to create a store still do."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest

import eskit
from tests import postgres
from tests.cli.conftest import append, invoke
from tests.processes import eskit_process

APP = "tests.cli.apps:projections"
INSPECTING = {
    "info": ["info", "{url}"],
    "streams list": ["streams", "list", "{url}"],
    "streams show": ["streams", "show", "{url}", "invoice-1"],
    "projections status": ["projections", "status", "{url}"],
    "trace": ["trace", "{url}", "some-correlation-id"],
    "export": ["export", "{url}", "{out}"],
    "verify": ["verify", "{url}"],
    "copy (source)": ["copy", "{url}", "sqlite:///{out}.db"],
}

WORKING = {  # commands that change a store but are not meant to create one
    "projections run": ["projections", "run", "{url}", "--app", APP, "--until-caught-up"],
    "projections rebuild": ["projections", "rebuild", "{url}", "invoice_totals", "--app", APP],
    "projections reset": ["projections", "reset", "{url}", "invoice_totals", "--yes"],
    "projections skip": ["projections", "skip", "{url}", "invoice_totals", "--reason", "typo"],
    "forget": ["forget", "{url}", "c-7", "--keys", "sqlite:///{out}/keys.db", "--yes"],
    "scavenge": ["scavenge", "{url}"],
}


def command(name: str, url: str, out: Path) -> list[str]:
    return [part.format(url=url, out=out) for part in {**INSPECTING, **WORKING}[name]]


def error_line(stderr: str) -> str:
    (line,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    return line


@pytest.mark.parametrize("name", INSPECTING)
def test_a_missing_file_is_no_such_store_and_nothing_is_created(name: str, tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    path = work / "typo.db"
    result = invoke(command(name, f"sqlite:///{path}", out / "events.jsonl"))
    assert result.exit_code == 1, result.output
    assert error_line(result.stderr) == f"error: no such store: {path}"
    assert list(work.iterdir()) == []
    assert not out.exists()


@pytest.mark.parametrize("name", WORKING)
def test_commands_that_change_a_store_do_not_create_one(name: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    for path in (work / "typo.db", work / "nodir" / "x.db"):
        result = invoke(command(name, f"sqlite:///{path}", tmp_path / "out"))
        assert result.exit_code == 1, result.output
        assert error_line(result.stderr) == f"error: no such store: {path}"
        assert list(work.iterdir()) == []


@pytest.mark.parametrize("name", INSPECTING)
def test_a_path_in_a_missing_folder_creates_no_folder(name: str, tmp_path: Path) -> None:
    path = tmp_path / "nodir" / "x.db"
    result = invoke(command(name, f"sqlite:///{path}", tmp_path / "out"))
    assert result.exit_code == 1, result.output
    assert error_line(result.stderr) == f"error: no such store: {path}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["info", "streams list", "verify"])
def test_a_relative_path_is_named_in_full(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(command(name, "sqlite:///./typo.db", tmp_path / "out"))
    assert result.exit_code == 1, result.output
    assert error_line(result.stderr) == f"error: no such store: {tmp_path / 'typo.db'}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", INSPECTING)
def test_the_same_commands_work_on_an_existing_store(name: str, url: str, tmp_path: Path) -> None:
    store = Path(url.removeprefix("sqlite:///"))
    traced = eskit.NewEvent("Traced", {}, {"correlation_id": "some-correlation-id"})
    asyncio.run(append(url, "trace-1", traced))
    result = invoke(command(name, url, tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in store.parent.iterdir() if p.name.startswith(store.name)) == [
        store.name  # reading left no -wal or -shm behind
    ]


def test_tail_of_a_missing_store_fails_at_once_instead_of_following_an_empty_one(
    tmp_path: Path,
) -> None:
    """In a process of its own: were the store created, ``tail`` would follow it for ever."""
    path = tmp_path / "nodir" / "x.db"
    with eskit_process("streams", "tail", f"sqlite:///{path}") as process:
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1
    assert error_line(stderr) == f"error: no such store: {path}"
    assert list(tmp_path.iterdir()) == []


def test_an_empty_file_left_by_earlier_versions_is_no_store(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    path.touch()
    result = invoke(["info", f"sqlite:///{path}"])
    assert result.exit_code == 1
    assert (
        error_line(result.stderr) == f"error: no such store: {path} (the file has no eskit tables)"
    )
    assert path.stat().st_size == 0


def test_a_missing_postgresql_schema_is_no_such_store_and_is_not_created() -> None:
    url = postgres.store_url()
    schema = url.rpartition("schema=")[2]
    for args in (["info", url], ["streams", "list", url], ["projections", "status", url]):
        result = invoke(args)
        assert result.exit_code == 1, result.output
        assert error_line(result.stderr).startswith(
            f"error: no such store: PostgreSQL schema {schema} (it has no eskit tables"
        )
    with psycopg.connect(postgres.database_url()) as conn:
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        assert found.fetchone() is None


def test_import_creates_a_store_in_a_new_folder(url: str, tmp_path: Path) -> None:
    exported = tmp_path / "events.jsonl"
    assert invoke(["export", url, str(exported)]).exit_code == 0
    target = tmp_path / "new" / "events.db"
    result = invoke(["import", f"sqlite:///{target}", str(exported)])
    assert result.exit_code == 0, result.output
    assert invoke(["info", f"sqlite:///{target}"]).exit_code == 0
    assert asyncio.run(last_position(f"sqlite:///{target}")) == 5


def test_copy_creates_its_target(url: str, tmp_path: Path) -> None:
    target = f"sqlite:///{tmp_path}/new/copy.db"
    result = invoke(["copy", url, target])
    assert result.exit_code == 0, result.output
    assert asyncio.run(last_position(target)) == 5


async def last_position(url: str) -> int:
    async with eskit.open_store(url, readonly=True) as store:
        return await store.last_position()
