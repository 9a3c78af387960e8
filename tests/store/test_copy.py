"""``copy_store``: a log copied between backends keeps every event exactly and in order, a
second copy adds only what is missing, and a target holding anything else is refused."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

import eskit
from eskit.store import transfer
from eskit.store.copy import Copied, copy_store
from eskit.store.memory import MemoryStore
from eskit.store.model import Append, AppendResult
from eskit.store.transfer import TransferError
from tests.postgres import store_url
from tests.store.test_transfer import FILLED, fill, log

pytestmark = pytest.mark.anyio


@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[eskit.EventStore]:
    """A SQLite store of ``FILLED`` events (interleaved streams, every kind of JSON,
    metadata, a soft-deleted stream), read a few events a page."""
    async with eskit.open_store(f"sqlite:///{tmp_path}/source.db") as store:
        await fill(store)
        store.page_size = 4
        yield store


@pytest.fixture
async def target(tmp_path: Path) -> AsyncIterator[eskit.EventStore]:
    async with eskit.open_store(f"sqlite:///{tmp_path}/target.db") as store:
        yield store


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Appends of at most 5 events, so a copy spans many chunks."""
    monkeypatch.setattr(transfer, "CHUNK_EVENTS", 5)


async def positions(store: eskit.EventStore) -> list[tuple[int, uuid.UUID]]:
    return [(e.position, e.id) async for e in store.read_all()]


async def heads(store: eskit.EventStore) -> list[tuple[str, int]]:
    """Every stream's last version, deleted or not."""
    return [(s.stream, s.last_version) for s in await store.list_streams(limit=1000)]


async def test_sqlite_to_postgresql_to_sqlite_keeps_every_event(
    source: eskit.EventStore, tmp_path: Path
) -> None:
    async with (
        eskit.open_store(store_url()) as postgres,
        eskit.open_store(f"sqlite:///{tmp_path}/back.db") as back,
    ):
        postgres.page_size = 3
        there = await copy_store(source, postgres)
        again = await copy_store(postgres, back)

        assert there.count == again.count == FILLED
        assert there.digest == again.digest
        assert (there.copied, there.source_position, there.target_position) == (
            FILLED,
            FILLED,
            FILLED,
        )
        assert await log(postgres) == await log(back) == await log(source)
        assert await positions(postgres) == await positions(back) == await positions(source)
        assert await heads(postgres) == await heads(back) == await heads(source)


async def test_copying_twice_appends_nothing_the_second_time(
    source: eskit.EventStore, target: eskit.EventStore
) -> None:
    first = await copy_store(source, target)
    second = await copy_store(source, target)

    assert first.copied == FILLED
    assert second == Copied(first.count, first.digest, 0, FILLED, FILLED)
    assert await target.last_position() == FILLED


async def test_a_later_copy_adds_only_the_new_events(
    source: eskit.EventStore, target: eskit.EventStore
) -> None:
    await copy_store(source, target)
    await source.append("invoice-1", [eskit.NewEvent("Late", {"n": i}) for i in range(3)])
    await source.append("late-1", [eskit.NewEvent("Late", {})])

    copied = await copy_store(source, target)

    assert (copied.count, copied.copied) == (FILLED + 4, 4)
    assert await log(target) == await log(source)


async def test_an_interrupted_copy_continues_where_it_stopped(
    source: eskit.EventStore, tmp_path: Path
) -> None:
    """A target refusing a big event stops the copy there, naming the source position;
    the events before it stay and a later copy continues after them."""
    await source.append("big-1", [eskit.NewEvent("Big", {"x": "x" * 2000})])
    await source.append("after-1", [eskit.NewEvent("After", {})])
    url = f"sqlite:///{tmp_path}/target.db"
    async with eskit.open_store(url, max_event_size=1000) as small:
        with pytest.raises(TransferError, match=rf"source position {FILLED + 1}: event 0 "):
            await copy_store(source, small)
        stopped = await small.last_position()
    assert 0 < stopped <= FILLED

    async with eskit.open_store(url) as target:
        copied = await copy_store(source, target)
        assert copied.copied == FILLED + 2 - stopped
        assert await log(target) == await log(source)


async def test_a_target_holding_other_events_is_refused_before_writing(
    source: eskit.EventStore, target: eskit.EventStore
) -> None:
    first = await anext(source.read_all(limit=1))
    await target.append(first.stream, [eskit.NewEvent("Other", {})])

    with pytest.raises(
        TransferError,
        match=rf"the target already holds other events: its position 1 is {first.stream} v0"
        rf" Other .* the source's position 1 is {first.stream} v0 Held \(id {first.id}\)",
    ):
        await copy_store(source, target)
    assert await target.last_position() == 1


async def test_an_id_held_with_other_content_is_refused(
    source: eskit.EventStore, target: eskit.EventStore
) -> None:
    first = await anext(source.read_all(limit=1))
    await target.append(first.stream, [eskit.NewEvent(first.type, {"other": 1}, id=first.id)])

    with pytest.raises(TransferError, match=r"position 1 is .* with other content"):
        await copy_store(source, target)


async def test_a_target_ahead_of_the_source_is_refused(
    source: eskit.EventStore, target: eskit.EventStore
) -> None:
    await copy_store(source, target)
    await target.append("new-1", [eskit.NewEvent("WrittenOnTheTarget", {})])

    with pytest.raises(
        TransferError,
        match=f"target holds more events than the source: its"
        f" position {FILLED + 1} \\(new-1 v0 WrittenOnTheTarget",
    ):
        await copy_store(source, target)


async def test_an_empty_source() -> None:
    async with eskit.open_store("memory://") as empty, eskit.open_store("memory://") as target:
        copied = await copy_store(empty, target)
    assert copied == Copied(0, hashlib.sha256().hexdigest(), 0, 0, 0)


async def test_progress_follows_the_copy_then_the_check(
    source: eskit.EventStore, target: eskit.EventStore
) -> None:
    target.page_size = 4
    copying: list[tuple[int, int]] = []
    checking: list[tuple[int, int]] = []
    await copy_store(
        source, target, lambda *p: copying.append(p), verify_progress=lambda *p: checking.append(p)
    )

    for calls in (copying, checking):
        assert calls[-1] == (FILLED, FILLED)
        assert [done for done, _ in calls] == sorted({done for done, _ in calls})
        assert {total for _, total in calls} == {FILLED}
    assert len(copying) > 2  # a call per chunk
    assert len(checking) > 2  # a call per page of the target


class Intruder(MemoryStore):
    """A target another writer appends to right after the copy's last chunk."""

    intruded = False

    async def append_many(self, appends: Sequence[Append]) -> list[AppendResult]:
        results = await super().append_many(appends)
        if not self.intruded and results[-1].last_position == FILLED:
            self.intruded = True
            await super().append_many([Append("intruder-1", [eskit.NewEvent("Sneaked", {})])])
        return results


async def test_a_target_written_to_during_the_copy_fails_the_check(
    source: eskit.EventStore,
) -> None:
    async with Intruder() as target:
        with pytest.raises(
            TransferError,
            match=rf"source holds {FILLED} events .* the target"
            rf" {FILLED + 1} ",
        ):
            await copy_store(source, target)


async def test_copying_a_store_onto_itself_changes_nothing(source: eskit.EventStore) -> None:
    copied = await copy_store(source, source)
    assert (copied.count, copied.copied) == (FILLED, 0)
    assert await source.last_position() == FILLED
