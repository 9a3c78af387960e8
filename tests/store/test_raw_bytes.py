"""Any bytes, under any content type, round-trip through both faces of every backend, and
forward and backward reads of the log agree (hypothesis; the conformance suite holds the
named examples, the model test the async face's)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eskit
import eskit.sync
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
