"""Rebuilds: the same read model as the live build, written beside it while readers keep the
old view, switched in atomically; a new version rebuilds on start; an interrupted rebuild
resumes where it stopped."""

from __future__ import annotations

import asyncio

import pytest

import eskit
from eskit.projections import Database, ProjectionRunner, ReadModelConnection
from eskit.projections import state as st
from eskit.projections.projection import physical_names
from eskit.projections.runner import now
from eskit.projections.sql import Connection, is_sqlite
from tests.projections.models import (
    COUNTED,
    Counter,
    Doubled,
    append_each,
    batched,
    counts,
    fold,
    stored,
)

pytestmark = pytest.mark.anyio

TYPES = ("Added", "Removed", "Other")


def history(size: int) -> list[tuple[str, str]]:
    """``size`` events over a few streams, in runs of 50 per stream (one append each)."""
    return [(f"cart-{i // 50 % 9}", TYPES[i % 3]) for i in range(size)]


async def digest(database: Database) -> str:
    return await database.read(lambda c: st.digest(c, ["counts"]))


async def counts_objects(database: Database) -> set[tuple[str, str]]:
    """The schema objects named like the counter's table: its view and physical builds."""

    def find(conn: Connection) -> list[tuple[str, str]]:
        if is_sqlite(conn):
            query = "SELECT name, type FROM sqlite_master WHERE name LIKE 'counts%'"
        else:
            query = (
                "SELECT relname, CASE relkind WHEN 'v' THEN 'view' ELSE 'table' END FROM pg_class"
                " WHERE relnamespace = current_schema()::regnamespace AND relkind IN ('r', 'v')"
                " AND relname LIKE 'counts%'"
            )
        return conn.execute(query).fetchall()  # type: ignore[no-any-return]

    return set(await database.read(find))


async def read_until(database: Database, done: asyncio.Event) -> list[int]:
    """What a reader sees, again and again until ``done`` and once after it: the counter's
    total. (A fast rebuild may fall between two reads: the read after it still counts.)"""
    seen: list[int] = []
    while True:
        finished = done.is_set()
        total = await database.read(
            lambda c: c.execute("SELECT coalesce(sum(n), 0) FROM counts").fetchone()[0]
        )
        seen.append(total)
        if finished:
            return seen
        await asyncio.sleep(0)


async def test_a_rebuild_builds_what_the_live_build_built(store: eskit.EventStore) -> None:
    last = await append_each(store, history(600))
    progress: list[tuple[int, int]] = []

    async with ProjectionRunner(store, [batched(64)]) as runner:
        await runner.wait_until(last)
        live = await digest(runner.database)
        await runner.rebuild("counter", lambda at, head: progress.append((at, head)))
        once = await digest(runner.database)
        await runner.rebuild("counter")
        twice = await digest(runner.database)
        objects = await counts_objects(runner.database)
        state = await stored(runner.database, "counter")

    assert once == live
    assert twice == live
    assert progress[-1] == (last, last)
    assert [at for at, _ in progress] == sorted(at for at, _ in progress)
    assert (state.generation, state.position) == (3, last)
    assert objects == {("counts", "view"), ("counts__g3", "table")}


async def test_readers_keep_reading_the_old_view_during_a_rebuild(
    store: eskit.EventStore, readmodels: Database, elsewhere: Database
) -> None:
    """The reader has a connection of its own, so its reads overlap the rebuild's
    transactions, the switch among them."""
    written = history(3000)
    last = await append_each(store, written)
    total = sum(fold(written).values())

    async with ProjectionRunner(store, [batched(100)], database=readmodels) as runner:
        await runner.wait_until(last)
        done = asyncio.Event()
        reader = asyncio.create_task(read_until(elsewhere, done))
        try:
            await runner.rebuild("counter")
        finally:
            done.set()
        seen = await reader

    assert len(seen) >= 2
    assert set(seen) == {total}


async def test_a_new_version_is_rebuilt_on_start_and_switched_in(
    store: eskit.EventStore, readmodels: Database, elsewhere: Database
) -> None:
    written = history(1500)
    last = await append_each(store, written)
    async with ProjectionRunner(store, [batched(100)], database=readmodels) as runner:
        await runner.wait_until(last)

    class NextVersion(Doubled):
        batch_size = 100

    done = asyncio.Event()
    reader = asyncio.create_task(read_until(elsewhere, done))
    try:
        async with ProjectionRunner(store, [NextVersion()], database=readmodels) as runner:
            await runner.wait_until(last)
            [status] = await runner.status()
    finally:
        done.set()
    seen = await reader
    state = await stored(readmodels, "counter")

    total = sum(fold(written).values())
    switched = seen.index(2 * total) if 2 * total in seen else len(seen)
    assert seen[:switched] == [total] * switched  # the old view, whole, until the switch
    assert seen[switched:] == [2 * total] * (len(seen) - switched)  # then the new one, whole
    assert await counts(readmodels) == fold(written, step=2)
    assert (status.version, status.status, status.position) == (2, "running", last)
    assert (state.version, state.generation) == (2, 2)
    assert await counts_objects(readmodels) == {("counts", "view"), ("counts__g2", "table")}


async def test_an_interrupted_rebuild_resumes_where_it_stopped(
    store: eskit.EventStore, readmodels: Database
) -> None:
    written = history(300)
    last = await append_each(store, written)
    async with ProjectionRunner(store, [Counter()], database=readmodels) as runner:
        await runner.wait_until(last)

    # A deploy of version 2 that stopped part-way through its rebuild.
    crashed = Doubled()
    page = await store.read_page(after=0, limit=30, types=COUNTED)

    def rebuild_partly(conn: Connection) -> None:
        rebuild = st.start_rebuild(conn, crashed, now())
        names = physical_names(crashed.tables, rebuild.generation)
        crashed.handle_batch(page.events, ReadModelConnection(conn, names))
        st.advance_rebuild(
            conn, crashed.name, rebuild.generation, page.next_after, len(page.events)
        )

    await readmodels.write(rebuild_partly)
    assert await counts(readmodels) == fold(written)  # readers still see version 1

    resumed = Doubled()
    async with ProjectionRunner(store, [resumed], database=readmodels) as runner:
        await runner.wait_until(last)
    state = await stored(readmodels, "counter")
    rebuilds = await readmodels.read(lambda c: st.load_rebuild(c, "counter"))

    assert resumed.applied == sum(fold(written).values()) - 30
    assert await counts(readmodels) == fold(written, step=2)
    assert (state.version, state.generation, state.position) == (2, 2, last)
    assert rebuilds is None
