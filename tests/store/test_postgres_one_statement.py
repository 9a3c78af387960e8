"""The PostgreSQL writer's one-statement path (``eskit_append_group``, migration 003): a
group checked against the heads this writer remembers, written only if they still hold;
otherwise the group runs the long way with the same outcome."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import psycopg
import pytest

import eskit
from eskit.store import postgres_writer
from eskit.store.audit import verify
from eskit.store.postgres import PostgresStore
from eskit.store.postgres_writer import Writer
from tests import postgres

pytestmark = pytest.mark.anyio


class WriterSwapped(PostgresStore):
    """Opens with its writer's class swapped for ``writer`` (a subclass that counts)."""

    writer: type[Writer] = Writer

    async def _open_backend(self) -> None:
        await super()._open_backend()
        if self.engine._writer is not None:
            self.engine._writer.__class__ = self.writer


class CountingWriter(Writer):
    """Counts the groups that went the long way (the one statement refused or skipped)."""

    long_way = 0

    def _transaction(self, batch, savepoints=False):  # type: ignore[no-untyped-def]
        type(self).long_way += 1
        return super()._transaction(batch, savepoints)


class Counting(WriterSwapped):
    writer = CountingWriter


def open_counting(url: str) -> Counting:
    store = eskit.open_store(url)
    assert isinstance(store, PostgresStore)
    store.__class__ = Counting
    return store  # type: ignore[return-value]


async def test_own_streams_take_one_statement_and_chain_verifies(anyio_backend: str) -> None:
    CountingWriter.long_way = 0
    async with open_counting(postgres.store_url()) as store:
        expected: eskit.ExpectedVersion = eskit.NO_STREAM
        for n in range(5):
            result = await store.append("order-1", [eskit.NewEvent("Placed", {"n": n})], expected)
            expected = result.last_version
        await store.append("order-2", [eskit.NewEvent("Placed", {})], eskit.NO_STREAM)
        assert CountingWriter.long_way == 0
        versions = [(e.version, e.position) async for e in store.read_stream("order-1")]
        assert versions == [(n, n + 1) for n in range(5)]
        report = await verify(store)
    assert report.ok, report


async def test_a_stream_moved_by_another_writer_is_checked_the_long_way(
    anyio_backend: str,
) -> None:
    url = postgres.store_url()
    async with open_counting(url) as mine, eskit.open_store(url) as other:
        await mine.append("shared-1", [eskit.NewEvent("A", {})], eskit.NO_STREAM)
        await other.append("shared-1", [eskit.NewEvent("B", {})], 0)  # mine's memory is stale
        CountingWriter.long_way = 0
        with pytest.raises(eskit.WrongExpectedVersion) as raised:
            await mine.append("shared-1", [eskit.NewEvent("C", {})], 0)
        assert raised.value.actual == 1
        assert CountingWriter.long_way == 1
        result = await mine.append("shared-1", [eskit.NewEvent("C", {})], 1)
        assert (result.last_version, CountingWriter.long_way) == (2, 1)  # remembered again
        types = [e.type async for e in mine.read_stream("shared-1")]
    assert types == ["A", "B", "C"]


async def test_a_caller_id_already_written_is_a_replay(anyio_backend: str) -> None:
    url = postgres.store_url()
    event = eskit.NewEvent("Once", {}, id=uuid.uuid4())
    async with eskit.open_store(url) as other, open_counting(url) as mine:
        first = await other.append("once-1", [event], eskit.NO_STREAM)
        again = await mine.append("once-1", [event], eskit.NO_STREAM)
        assert again == first
        assert [e.id async for e in mine.read_stream("once-1")] == [event.id]


async def test_deleted_streams_fail_and_revive_as_the_long_way_does(anyio_backend: str) -> None:
    url = postgres.store_url()
    async with open_counting(url) as store:
        await store.append("gone-1", [eskit.NewEvent("A", {})])
        await store.append("soft-1", [eskit.NewEvent("A", {})])
        await store.tombstone_stream("gone-1")
        await store.delete_stream("soft-1")
        await store.append("warm-1", [eskit.NewEvent("A", {})])  # remembers nothing deleted
        with pytest.raises(eskit.StreamDeleted):
            await store.append("gone-1", [eskit.NewEvent("B", {})])
        CountingWriter.long_way = 0
        with pytest.raises(eskit.StreamDeleted):  # now remembered: refused in one statement
            await store.append("gone-1", [eskit.NewEvent("B", {})])
        assert CountingWriter.long_way == 0
        revived = await store.append("soft-1", [eskit.NewEvent("B", {})], eskit.NO_STREAM)
        assert revived.last_version == 1
        assert await store.stream_version("soft-1") == 1
        async with await psycopg.AsyncConnection.connect(url.split("?")[0]) as conn:
            schema = url.rsplit("schema=", 1)[1]
            cursor = await conn.execute(
                f'SELECT state FROM "{schema}".eskit_streams WHERE stream = %s', ("soft-1",)
            )
            assert await cursor.fetchone() in (None, (0,))


async def test_appends_after_an_operation_in_a_group_see_what_it_did(anyio_backend: str) -> None:
    """A group holding an operation plans each run of appends around it afresh: the run after
    a tombstone sees it, and ids written by the run before are replays."""
    url = postgres.store_url()
    async with open_counting(url) as store:
        await store.append("warm-1", [eskit.NewEvent("A", {})])
        given = uuid.uuid4()
        first = [eskit.NewEvent("A", {}, id=given)]
        CountingWriter.long_way = 0
        outcomes = await asyncio.gather(  # queued together: one group, one transaction
            store.append("kept-1", first, eskit.NO_STREAM),
            store.append("gone-1", [eskit.NewEvent("A", {})], eskit.NO_STREAM),
            store.tombstone_stream("gone-1"),
            store.append("gone-1", [eskit.NewEvent("B", {})]),
            store.append("kept-1", first, eskit.NO_STREAM),
            store.append("kept-1", [eskit.NewEvent("B", {})], 0),
            return_exceptions=True,
        )
        assert CountingWriter.long_way == 1  # an operation: the long way, for all of them
        assert outcomes[0] == eskit.AppendResult(0, 2, 1), outcomes
        assert outcomes[1] == eskit.AppendResult(0, 3, 1), outcomes
        assert outcomes[2] is None, outcomes
        assert isinstance(outcomes[3], eskit.StreamDeleted), outcomes
        assert outcomes[4] == outcomes[0], outcomes  # the retry is answered, not written
        assert outcomes[5] == eskit.AppendResult(1, 4, 1), outcomes
        written = [(e.stream, e.version, e.position) async for e in store.read_all()]
        assert written == [("warm-1", 0, 1), ("kept-1", 0, 2), ("gone-1", 0, 3), ("kept-1", 1, 4)]
        report = await verify(store)
    assert report.ok, report


NASTY = "it's \\ a \"quote\"'); COMMIT; DROP TABLE x; --"


class PathsWriter(Writer):
    """Counts the groups written in one statement with the head locked first."""

    locked = 0

    def _one_statement(self, conn, batch, expected, head, locked=False):  # type: ignore[no-untyped-def]
        outcomes = super()._one_statement(conn, batch, expected, head, locked)
        if locked and outcomes is not None:
            type(self).locked += 1
        return outcomes


class Paths(WriterSwapped):
    writer = PathsWriter


async def test_writers_taking_turns_number_from_the_locked_head(anyio_backend: str) -> None:
    """Several writers (a store each: its own connection, as another process would have)
    append at once, each to its own stream: the head each remembers is stale almost every
    time, so they lock it before numbering and hashing. The log is gap-free, each event
    where its append said, delivered once and in order to a subscriber that follows it
    meanwhile (no gap filled in later), and its chain verifies."""
    url = postgres.store_url()
    writers, each = 4, 40
    PathsWriter.locked = 0
    stores = [eskit.open_store(url) for _ in range(writers)]
    for store in stores:
        store.__class__ = Paths
    async with contextlib.AsyncExitStack() as stack:
        for store in stores:
            await stack.enter_async_context(store)
        reader = await stack.enter_async_context(eskit.open_store(url))
        delivered: list[tuple[int, uuid.UUID]] = []

        async def follow() -> None:
            async for event in reader.subscribe():
                delivered.append((event.position, event.id))
                if len(delivered) == writers * each:
                    return

        async def write(n: int, store: eskit.EventStore) -> list[tuple[int, uuid.UUID]]:
            placed: list[tuple[int, uuid.UUID]] = []
            expected: eskit.ExpectedVersion = eskit.NO_STREAM
            for i in range(each):
                event_id = uuid.uuid4()
                data = {"i": i, "text": NASTY}
                event = eskit.NewEvent("Noted", data, id=event_id)
                result = await store.append(f"writer-{n}", [event], expected)
                placed.append((result.last_position, event_id))
                expected = result.last_version
            return placed

        following = asyncio.create_task(follow())
        placed = await asyncio.gather(*(write(n, s) for n, s in enumerate(stores)))
        await asyncio.wait_for(following, 30)
        events = [e async for e in reader.read_all()]
        log = [(e.position, e.id) for e in events]
        report = await verify(reader)
    assert [position for position, _ in log] == list(range(1, writers * each + 1))
    assert sorted(p for ps in placed for p in ps) == log
    assert delivered == log
    assert report.ok, report.problems
    assert {e.data["text"] for e in events} == {NASTY}  # quoted as literals, intact
    assert PathsWriter.locked > 0


async def test_a_failure_with_the_head_locked_lets_the_lock_go(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group is tried again the long way, and other writers are not kept waiting."""
    url = postgres.store_url()
    async with eskit.open_store(url) as mine, eskit.open_store(url) as other:
        await mine.append("a-1", [eskit.NewEvent("A", {})], eskit.NO_STREAM)
        await other.append("b-1", [eskit.NewEvent("B", {})], eskit.NO_STREAM)
        assert isinstance(mine, PostgresStore)
        assert mine.engine._writer is not None
        mine.engine._writer._contended = (
            True  # the head it remembers is stale: it locks the head first
        )

        def lost(conn: object, arguments: object) -> bool:
            raise RuntimeError("the call failed with the head locked")

        monkeypatch.setattr(postgres_writer, "append_group_and_commit", lost)
        result = await asyncio.wait_for(mine.append("a-1", [eskit.NewEvent("A", {})], 0), 10)
        assert (result.last_version, result.last_position) == (1, 3)
        await asyncio.wait_for(other.append("b-1", [eskit.NewEvent("B", {})], 0), 5)
        report = await verify(mine)
    assert report.ok, report.problems
    assert report.events == 4
