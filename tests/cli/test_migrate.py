"""``eskit migrate``: applies a PostgreSQL store's pending migrations once, safely from two
processes at once; SQLite files are brought to the newest version; bad URLs are one error line."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import urllib.parse
from pathlib import Path

import anyio
import psycopg

from eskit.store import sqlite_schema
from eskit.store.postgres_schema import migrations
from tests.cli.conftest import invoke
from tests.postgres import database_url, store_url
from tests.store.fixtures.pre_chain import write_pre_chain_file
from tests.store.test_postgres_migrations import MigrationLock, every_version, recorded

LATEST = migrations()[-1].version

ROOT = Path(__file__).resolve().parents[2]


def schema_of(url: str) -> str:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["schema"]


def start(*args: str) -> subprocess.Popen[str]:
    """``eskit args`` in a process of its own (output captured)."""
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen(
        [sys.executable, "-m", "eskit.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_migrating_twice_applies_nothing_the_second_time() -> None:
    url = store_url()
    schema = schema_of(url)
    first = invoke(["migrate", url])
    second = invoke(["migrate", url])

    assert first.exit_code == 0, first.output
    assert f"migrations applied to schema {schema}" in first.stdout
    assert "001" in first.stdout
    assert "event_store" in first.stdout
    assert "hash_chain" in first.stdout
    assert f"schema {schema} is now at version {LATEST}" in first.stdout
    assert second.exit_code == 0, second.output
    assert second.stdout.strip() == f"schema {schema} is up to date (version {LATEST})"


def test_two_processes_migrating_at_once_both_succeed() -> None:
    """Both ``eskit migrate`` processes are held at the migration lock, then released
    together: each exits 0, the schema is migrated once."""
    url = store_url()
    schema = schema_of(url)

    async def race() -> list[tuple[int, str, str]]:
        with psycopg.connect(database_url(), autocommit=True) as conn:
            lock = MigrationLock(conn, schema)
            lock.take()
            processes = [start("migrate", url), start("migrate", url)]
            try:
                with anyio.fail_after(60):
                    await lock.wait_for(2, alive=lambda: all(p.poll() is None for p in processes))
            finally:
                lock.free()
                outputs = [(p, *p.communicate(timeout=60)) for p in processes]
            rows = recorded(conn, schema)
            assert rows == every_version()
            return [(p.returncode, out, err) for p, out, err in outputs]

    results = anyio.run(race)

    for code, out, err in results:
        assert code == 0, (out, err)
    outs = sorted(out for _, out, _ in results)
    assert f"is now at version {LATEST}" in outs[0]
    assert outs[1].strip() == f"schema {schema} is up to date (version {LATEST})"


def test_an_invalid_schema_is_one_error_line() -> None:
    result = invoke(["migrate", "postgresql://postgres@127.0.0.1:5432/test?schema=Bad-Name"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: invalid PostgreSQL schema 'Bad-Name': use 1-63 lower-case letters, digits"
        " and underscores, not starting with a digit"
    )


def test_an_unreachable_server_is_one_error_line() -> None:
    result = invoke(["migrate", "postgresql://postgres@127.0.0.1:1/test"])
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: cannot connect to PostgreSQL: ")


def test_memory_has_nothing_to_migrate() -> None:
    result = invoke(["migrate", "memory://"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("nothing to migrate: memory:// keeps nothing")


def test_a_sqlite_file_from_before_the_chain_is_brought_to_the_newest_version(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    write_pre_chain_file(path)
    result = invoke(["migrate", f"sqlite:///{path}"])
    assert result.exit_code == 0, result.output
    newest = sqlite_schema.migrations()[-1].version
    assert f"{path} is now at version {newest}" in result.stdout
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert sqlite_schema.version(conn) == newest
    again = invoke(["migrate", f"sqlite:///{path}"])
    assert again.exit_code == 0, again.output
    assert f"{path} is up to date (version {newest})" in again.stdout


def test_an_unknown_url_is_one_error_line() -> None:
    result = invoke(["migrate", "mysql://localhost/db"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unsupported store URL")
