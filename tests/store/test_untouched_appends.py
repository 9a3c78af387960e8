"""An append made ``if_untouched`` (the command bus's, from a state it kept without reading
the stream) on every backend and both faces: accepted while the stream has no ``streams`` row,
refused as ``StreamTouched`` (a ``WrongExpectedVersion``) once it has one, whoever wrote it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import eskit
import eskit.sync
from eskit.application.effects import AppendUntouched, Flow, run_async, run_blocking
from eskit.store.model import ExpectedVersion
from eskit.store.planner import StreamTouched
from eskit.sync import SyncStore
from tests import postgres

EVENT = eskit.NewEvent("Happened", {"n": 1})


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return postgres.store_url()
    if request.param == "memory":
        return "memory://"
    return f"sqlite:///{tmp_path}/events.db"


@pytest.fixture
def store(url: str) -> Iterator[SyncStore]:
    with eskit.sync.open_store(url) as opened:
        yield opened


def appending(stream: str, expected: ExpectedVersion) -> Flow[eskit.AppendResult]:
    return (yield AppendUntouched(stream, [EVENT], expected))  # type: ignore[no-any-return]


def untouched(store: SyncStore, stream: str, expected: ExpectedVersion) -> eskit.AppendResult:
    return run_blocking(store, appending(stream, expected))


def test_a_stream_without_a_row_takes_it(store: SyncStore) -> None:
    assert untouched(store, "s-1", eskit.NO_STREAM).last_version == 0
    assert untouched(store, "s-1", 0).last_version == 1
    store.append("s-1", [EVENT], 1)
    assert untouched(store, "s-1", 2).last_version == 3
    with pytest.raises(eskit.WrongExpectedVersion) as conflict:
        untouched(store, "s-1", 2)
    assert type(conflict.value) is eskit.WrongExpectedVersion


TOUCHES: dict[str, Callable[[SyncStore], None]] = {
    "metadata": lambda s: s.set_stream_metadata("s-1", eskit.StreamMetadata()),
    "truncate_before": lambda s: s.set_stream_metadata(
        "s-1", eskit.StreamMetadata(truncate_before=1)
    ),
    "max_count": lambda s: s.set_stream_metadata("s-1", eskit.StreamMetadata(max_count=1)),
}


@pytest.mark.parametrize("touch", list(TOUCHES))
def test_a_stream_with_read_rules_refuses_it_any_other_append_goes_on(
    store: SyncStore, touch: str
) -> None:
    store.append("s-1", [EVENT, EVENT], eskit.NO_STREAM)
    TOUCHES[touch](store)

    with pytest.raises(StreamTouched) as refused:
        untouched(store, "s-1", 1)

    assert isinstance(refused.value, eskit.WrongExpectedVersion)
    assert store.stream_version("s-1") == 1  # nothing written
    assert store.append("s-1", [EVENT], 1).last_version == 2


def test_a_soft_deleted_or_revived_stream_refuses_it(store: SyncStore) -> None:
    store.append("s-1", [EVENT], eskit.NO_STREAM)
    store.delete_stream("s-1")
    with pytest.raises(StreamTouched):
        untouched(store, "s-1", eskit.NO_STREAM)
    store.append("s-1", [EVENT], eskit.NO_STREAM)  # revived: the row stays
    with pytest.raises(StreamTouched):
        untouched(store, "s-1", 1)


def test_a_tombstoned_stream_refuses_it_as_deleted(store: SyncStore) -> None:
    store.append("s-1", [EVENT], eskit.NO_STREAM)
    store.tombstone_stream("s-1")
    with pytest.raises(eskit.StreamDeleted):
        untouched(store, "s-1", 0)


def test_a_scavenged_stream_refuses_it(store: SyncStore) -> None:
    if store.scavenger() is None:
        pytest.skip("this backend does not scavenge")
    store.append("s-1", [EVENT, EVENT, EVENT], eskit.NO_STREAM)
    store.set_stream_metadata("s-1", eskit.StreamMetadata(max_count=1))
    eskit.sync.scavenge(store)
    with pytest.raises(StreamTouched):
        untouched(store, "s-1", 2)


def test_a_row_another_store_writes_is_seen_by_the_next_append(url: str) -> None:
    """PostgreSQL's one-statement path plans from the heads its writer saw commit: the row
    another process wrote since must still refuse the append."""
    if url.startswith("memory"):
        pytest.skip("one process")
    with eskit.sync.open_store(url) as one, eskit.sync.open_store(url) as other:
        untouched(one, "s-1", eskit.NO_STREAM)
        untouched(one, "s-1", 0)  # the writer knows the head, untouched
        other.set_stream_metadata("s-1", eskit.StreamMetadata(max_count=5))

        with pytest.raises(StreamTouched):
            untouched(one, "s-1", 1)
        assert one.stream_version("s-1") == 1
        assert untouched(one, "s-2", eskit.NO_STREAM).last_version == 0  # others go on


@pytest.mark.anyio
async def test_the_async_face_refuses_it_as_well(url: str) -> None:
    async with eskit.open_store(url) as store:
        result = await run_async(store, appending("s-1", eskit.NO_STREAM))
        assert result.last_version == 0
        await store.set_stream_metadata("s-1", eskit.StreamMetadata(max_count=5))
        with pytest.raises(StreamTouched):
            await run_async(store, appending("s-1", 0))
        assert await store.stream_version("s-1") == 0


def test_a_closed_or_read_only_store_refuses_it_as_it_refuses_an_append(url: str) -> None:
    if url.startswith("memory"):
        pytest.skip("nothing to reopen")
    with eskit.sync.open_store(url) as store:
        untouched(store, "s-1", eskit.NO_STREAM)
    with pytest.raises(eskit.StoreClosed):
        untouched(store, "s-1", 0)
    with eskit.sync.open_store(url, readonly=True) as readonly:
        with pytest.raises(eskit.StoreError, match="read-only"):
            untouched(readonly, "s-1", 0)
        assert readonly.stream_version("s-1") == 0


@pytest.mark.anyio
async def test_a_closed_or_read_only_store_refuses_it_on_the_async_face(url: str) -> None:
    if url.startswith("memory"):
        pytest.skip("nothing to reopen")
    async with eskit.open_store(url) as store:
        await run_async(store, appending("s-1", eskit.NO_STREAM))
    with pytest.raises(eskit.StoreClosed):
        await run_async(store, appending("s-1", 0))
    async with eskit.open_store(url, readonly=True) as readonly:
        with pytest.raises(eskit.StoreError, match="read-only"):
            await run_async(readonly, appending("s-1", 0))
