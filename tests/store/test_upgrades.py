"""Stores written by an earlier eskit open under this one: the fixtures (tests/store/fixtures,
made by make_fixtures.py from that release) upgrade in place, read back exactly what they
read back then, and pass ``verify`` with the audit key and the anchors saved then."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

import eskit
from eskit.store import postgres_schema, sqlite_schema
from eskit.store.audit import load_anchors, verify
from tests.cli.conftest import invoke
from tests.postgres import database_url
from tests.store.fixtures.make_fixtures import AUDIT_KEY, SCHEMA, read_back

FIXTURES = Path(__file__).parent / "fixtures"
RELEASES = ["c400693"]
"""Releases whose stores are fixtures, oldest first; add one with each schema change."""


def expected(release: str, backend: str) -> dict[str, Any]:
    text = (FIXTURES / release / f"{backend}.expected.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def plain(value: dict[str, Any]) -> dict[str, Any]:
    """As JSON gives it back (lists, not tuples), to compare with the expected file."""
    again: dict[str, Any] = json.loads(json.dumps(value))
    return again


async def check(url: str, release: str, backend: str) -> None:
    """The store reads back what it did, and its chains and anchors verify with the key."""
    async with eskit.open_store(url) as store:
        assert plain(await read_back(store)) == expected(release, backend)
        anchors = load_anchors(FIXTURES / release / f"{backend}.anchors.jsonl")
        report = await verify(store, key=bytes.fromhex(AUDIT_KEY), anchors=anchors)
        assert report.ok, report.problems
        assert (report.events, report.streams, report.unlinked) == (11, 5, 0)
        assert not (await verify(store, key=bytes.fromhex("00" * 32))).ok
        # and it still takes new events, linked to the old ones
        await store.append("invoice-1", [eskit.NewEvent("InvoicePaid", {})], expected_version=2)
        # and what later schemas added: payloads kept as bytes, custom metadata keys
        raw = eskit.RawData("application/octet-stream", b"\x00\x01")
        await store.append("blob-1", [eskit.NewEvent("Blob", raw, eskit.RawData("", b"m"))])
        (blob,) = [e async for e in store.read_stream("blob-1")]
        assert (blob.raw, blob.raw_metadata) == (raw, b"m")
        await store.set_stream_metadata("blob-1", eskit.StreamMetadata(custom={"k": [1]}))
        assert await store.get_stream_metadata("blob-1") == eskit.StreamMetadata(custom={"k": [1]})
        assert (await verify(store, key=bytes.fromhex(AUDIT_KEY), anchors=anchors)).ok


@pytest.mark.anyio
@pytest.mark.parametrize("release", RELEASES)
async def test_a_sqlite_file_of_an_earlier_release_upgrades_reads_and_verifies(
    release: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESKIT_AUDIT_KEY", AUDIT_KEY)
    path = tmp_path / "events.db"
    shutil.copyfile(FIXTURES / release / "sqlite.db", path)
    with sqlite3.connect(path) as conn:
        before = sqlite_schema.version(conn)
    await check(f"sqlite:///{path}", release, "sqlite")
    with sqlite3.connect(path) as conn:
        assert sqlite_schema.version(conn) == sqlite_schema.migrations()[-1].version > before


@pytest.mark.parametrize("release", RELEASES)
def test_the_upgraded_sqlite_file_passes_eskit_verify_with_its_anchors(
    release: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESKIT_AUDIT_KEY", AUDIT_KEY)
    path = tmp_path / "events.db"
    shutil.copyfile(FIXTURES / release / "sqlite.db", path)
    anchors = FIXTURES / release / "sqlite.anchors.jsonl"
    refused = invoke(["verify", f"sqlite:///{path}"])  # read-only: it does not upgrade
    assert refused.exit_code == 1
    assert "run `eskit migrate URL`" in refused.output
    assert invoke(["migrate", f"sqlite:///{path}"]).exit_code == 0
    result = invoke(["verify", f"sqlite:///{path}", "--anchors", str(anchors)])
    assert result.exit_code == 0, result.output
    assert "problems" in result.output
    assert "predate" not in result.output


def load_dump(release: str) -> str:
    """The release's PostgreSQL dump loaded into a new schema of this run's database; its
    store URL. psql's meta-commands (``\\restrict``) are left out: psycopg runs the SQL."""
    schema = f"f_{uuid.uuid4().hex[:16]}"
    dump = (FIXTURES / release / "postgres.sql").read_text()
    sql = "".join(
        line for line in dump.splitlines(keepends=True) if not line.startswith("\\")
    ).replace(SCHEMA, schema)
    url = database_url()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.encode())
    return f"{url}?schema={schema}"


async def migrations_recorded(url: str) -> list[int]:
    parts = urllib.parse.urlsplit(url)
    schema = dict(urllib.parse.parse_qsl(parts.query))["schema"]
    async with await psycopg.AsyncConnection.connect(parts._replace(query="").geturl()) as conn:
        cursor = await conn.execute(f'SELECT version FROM "{schema}".eskit_migrations')
        return sorted(int(row[0]) for row in await cursor.fetchall())


@pytest.mark.parametrize("release", RELEASES)
def test_a_postgres_dump_of_an_earlier_release_migrates_reads_and_verifies(
    release: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESKIT_AUDIT_KEY", AUDIT_KEY)
    url = load_dump(release)
    before = asyncio.run(migrations_recorded(url))
    result = invoke(["migrate", url])
    assert result.exit_code == 0, result.output
    every = [m.version for m in postgres_schema.migrations()]
    assert before == every[: len(before)]
    assert asyncio.run(migrations_recorded(url)) == every
    asyncio.run(check(url, release, "postgres"))
    anchors = FIXTURES / release / "postgres.anchors.jsonl"
    result = invoke(["verify", url, "--anchors", str(anchors)])
    assert result.exit_code == 0, result.output


@pytest.mark.anyio
@pytest.mark.parametrize("release", RELEASES)
async def test_a_postgres_dump_of_an_earlier_release_migrates_on_open(
    release: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESKIT_AUDIT_KEY", AUDIT_KEY)
    url = load_dump(release)
    await check(url, release, "postgres")
    assert await migrations_recorded(url) == [m.version for m in postgres_schema.migrations()]
