"""Any bytes, under any content type, round-trip through both faces of every backend, and
forward and backward reads of the log agree (hypothesis; the conformance suite holds the
named examples, the model test the async face's)."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eskit
import eskit.sync
from eskit.store.audit import verify
from tests import postgres

CONTENT_TYPES = st.text(max_size=30).filter(str.isprintable)
SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def url_of(backend: str, directory: Path) -> str:
    if backend == "memory":
        return "memory://"
    return f"sqlite:///{directory}/events.db" if backend == "sqlite" else postgres.store_url()


def event(body: bytes, content_type: str, metadata: bytes | None) -> eskit.NewEvent:
    meta = None if metadata is None else eskit.RawData("", metadata)
    return eskit.NewEvent("Raw", eskit.RawData(content_type, body), meta, uuid.uuid4())


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres"])
def test_any_bytes_round_trip_through_the_blocking_face(backend: str, tmp_path: Path) -> None:
    with eskit.sync.open_store(url_of(backend, tmp_path)) as store:

        @SETTINGS
        @given(st.binary(max_size=3000), CONTENT_TYPES, st.none() | st.binary(max_size=300))
        def round_trip(body: bytes, content_type: str, metadata: bytes | None) -> None:
            stream = f"blob-{uuid.uuid4().hex}"
            store.append(stream, [event(body, content_type, metadata)])
            (read,) = store.read_stream(stream)
            assert read.raw == eskit.RawData(content_type, body)
            assert read.raw_metadata == metadata
            assert store.find_event(read.id) == read
            (newest,) = store.read_all(backwards=True, limit=1)
            assert newest == read

        round_trip()


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres"])
def test_any_bytes_round_trip_through_the_async_face(backend: str, tmp_path: Path) -> None:
    async def main() -> None:
        async with eskit.open_store(url_of(backend, tmp_path)) as store:
            for body, content_type, metadata in examples:
                await store.append("blob-1", [event(body, content_type, metadata)])
            read = [e async for e in store.read_stream("blob-1")]
            assert [(e.raw, e.raw_metadata) for e in read] == [
                (eskit.RawData(content_type, body), metadata)
                for body, content_type, metadata in examples
            ]
            backwards = [e async for e in store.read_all(backwards=True)]
            assert backwards == read[::-1]

    examples: list[tuple[bytes, str, bytes | None]] = []

    @SETTINGS
    @given(st.binary(max_size=3000), CONTENT_TYPES, st.none() | st.binary(max_size=300))
    def collect(body: bytes, content_type: str, metadata: bytes | None) -> None:
        examples.append((body, content_type, metadata))

    collect()
    asyncio.run(main())


def test_sqlite_stores_json_and_raw_rows_of_one_commit_alike(tmp_path: Path) -> None:
    """JSON-only rows are inserted without the raw columns, a commit holding a raw row with
    all of them: either way ids and links are BLOBs, the raw columns NULL unless given, every
    event reads back as written and the chain verifies."""
    path = tmp_path / "events.db"
    json_event = eskit.NewEvent("Json", {"a": 1}, {"m": 2}, uuid.uuid4())
    raw_event = event(b"\x00\xff", "application/octet-stream", b"meta")
    with eskit.sync.open_store(f"sqlite:///{path}") as store:
        store.append("json-1", [json_event])  # a commit of JSON rows only
        store.append_many(  # one commit of both kinds
            [
                eskit.Append("json-2", [eskit.NewEvent("Json", {"a": 1}, {"m": 2})]),
                eskit.Append("raw-1", [raw_event]),
            ]
        )
        reads = [next(iter(store.read_stream(s))) for s in ("json-1", "json-2", "raw-1")]
        assert [(e.data, e.metadata, e.raw, e.raw_metadata) for e in reads] == [
            ({"a": 1}, {"m": 2}, None, None),
            ({"a": 1}, {"m": 2}, None, None),
            ({}, {}, eskit.RawData("application/octet-stream", b"\x00\xff"), b"meta"),
        ]

    async def verified() -> None:
        async with eskit.open_store(f"sqlite:///{path}") as store:
            report = await verify(store)
            assert report.ok, report.problems

    asyncio.run(verified())
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT typeof(id), typeof(hash), content_type, raw_data, raw_metadata"
            " FROM events ORDER BY position"
        ).fetchall()
    finally:
        conn.close()
    assert rows == [
        ("blob", "blob", None, None, None),
        ("blob", "blob", None, None, None),
        ("blob", "blob", "application/octet-stream", b"\x00\xff", b"meta"),
    ]
