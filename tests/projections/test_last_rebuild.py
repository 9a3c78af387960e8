"""The last rebuild in the status model: when it switched in, how many events it replayed and
how long it took, recorded in the projection's row by the switch and shown by every screen
(``status.statuses`` from the stored row and from a runner, ``/health/ready``); tables made
by an older eskit, without the columns, read as never rebuilt and are upgraded in place."""

from __future__ import annotations

import datetime as dt

import pytest

import eskit
from eskit.projections import Database, ProjectionRunner
from eskit.projections import state as st
from eskit.projections.sql import Connection, columns, execute
from eskit.projections.status import Status, read_stored, statuses
from eskit.web.readiness import readiness
from tests.projections.models import COUNTED, Counter, append_each

pytestmark = pytest.mark.anyio

WRITTEN = [(f"cart-{i % 3}", ("Added", "Removed", "Other")[i % 3]) for i in range(30)]
REPLAYED = sum(1 for _, type_ in WRITTEN if type_ in COUNTED)  # the types Counter reads

OLD_SCHEMA = (
    """CREATE TABLE eskit_projections (
        name TEXT PRIMARY KEY, version BIGINT NOT NULL, generation BIGINT NOT NULL,
        position BIGINT NOT NULL, tables TEXT NOT NULL, status TEXT NOT NULL, error TEXT,
        error_position BIGINT, error_event TEXT, error_type TEXT, updated_at BIGINT NOT NULL
    )""",
    """CREATE TABLE eskit_projection_rebuilds (
        name TEXT PRIMARY KEY, version BIGINT NOT NULL, generation BIGINT NOT NULL,
        position BIGINT NOT NULL, started_at BIGINT NOT NULL
    )""",
    """CREATE TABLE eskit_projection_skips (
        name TEXT NOT NULL, position BIGINT NOT NULL, event_id TEXT NOT NULL,
        event_type TEXT NOT NULL, error TEXT NOT NULL, reason TEXT NOT NULL,
        skipped_at BIGINT NOT NULL
    )""",
)
"""The projection tables as eskit created them before it kept the last rebuild."""


async def stored_status(store: eskit.EventStore, database: Database) -> Status:
    """The counter's status as ``eskit projections status`` computes it."""
    (status,) = statuses(await store.last_position(), await database.read(read_stored))
    return status


async def test_every_status_shows_the_last_rebuild(
    store: eskit.EventStore, readmodels: Database
) -> None:
    last = await append_each(store, WRITTEN)
    async with ProjectionRunner(store, [Counter()], database=readmodels) as runner:
        await runner.wait_until(last)
        before = await stored_status(store, readmodels)
        (live_before,) = await runner.status()
        ready_before = await readiness(store, runner, 1000)
        started = dt.datetime.now(dt.UTC)
        await runner.rebuild("counter")
        finished = dt.datetime.now(dt.UTC)
        (live,) = statuses(last, [], await runner.status())
        ready = await readiness(store, runner, 1000)
        after = await stored_status(store, readmodels)

    assert (before.last_rebuild, before.last_rebuild_events) == (None, None)
    assert live_before.last_rebuild is None
    assert ready_before.last_rebuild == {"counter": None}
    for status in (after, live):
        assert status.last_rebuild is not None
        assert started <= status.last_rebuild <= finished
        assert status.last_rebuild.tzinfo is dt.UTC
        assert status.last_rebuild_events == REPLAYED
        assert status.last_rebuild_seconds is not None
        assert 0 <= status.last_rebuild_seconds <= (finished - started).total_seconds()
    assert live.last_rebuild == after.last_rebuild
    assert ready.last_rebuild == {"counter": after.last_rebuild}


async def test_a_runner_started_later_shows_the_last_rebuild(
    store: eskit.EventStore, readmodels: Database
) -> None:
    last = await append_each(store, WRITTEN)
    async with ProjectionRunner(store, [Counter()], database=readmodels) as runner:
        await runner.rebuild("counter")
    rebuilt = (await stored_status(store, readmodels)).last_rebuild
    async with ProjectionRunner(store, [Counter()], database=readmodels) as runner:
        await runner.wait_until(last)
        (live,) = await runner.status()
    assert rebuilt is not None
    assert (live.last_rebuild, live.last_rebuild_events) == (rebuilt, REPLAYED)


def create_old_tables(conn: Connection) -> None:
    """The tables, and the counter's row after a first run, as an older eskit left them."""
    for statement in OLD_SCHEMA:
        execute(conn, statement)
    execute(conn, 'CREATE TABLE "counts__g1" (stream TEXT NOT NULL, type TEXT NOT NULL,'
            " n INTEGER NOT NULL, PRIMARY KEY (stream, type))")  # fmt: skip
    execute(conn, 'CREATE VIEW "counts" AS SELECT * FROM "counts__g1"')
    execute(
        conn,
        "INSERT INTO eskit_projections (name, version, generation, position, tables, status,"
        " updated_at) VALUES ('counter', 1, 1, 0, '[\"counts\"]', 'running', 0)",
    )


async def test_tables_of_an_older_eskit_are_upgraded_in_place(
    store: eskit.EventStore, readmodels: Database
) -> None:
    await readmodels.write(create_old_tables)
    last = await append_each(store, WRITTEN)
    old = await stored_status(store, readmodels)  # read as they are: not upgraded by a read
    assert (old.name, old.position, old.last_rebuild) == ("counter", 0, None)
    unchanged = await readmodels.read(lambda c: columns(c, "eskit_projections"))
    assert not set(st.LAST_REBUILD) & unchanged
    async with ProjectionRunner(store, [Counter()], database=readmodels) as runner:
        await runner.wait_until(last)
        upgraded = await stored_status(store, readmodels)
        await runner.rebuild("counter")
    rebuilt = await stored_status(store, readmodels)
    have = await readmodels.read(
        lambda c: (columns(c, "eskit_projections"), columns(c, "eskit_projection_rebuilds"))
    )

    assert set(st.LAST_REBUILD) <= have[0]
    assert "events" in have[1]
    assert (upgraded.position, upgraded.last_rebuild) == (last, None)
    assert rebuilt.last_rebuild is not None
    assert rebuilt.last_rebuild_events == REPLAYED


async def test_a_rebuild_left_by_an_older_eskit_is_resumed_and_recorded(
    store: eskit.EventStore, readmodels: Database
) -> None:
    """Its row has no count of the events replayed before the upgrade: the count starts
    at the upgrade."""
    await readmodels.write(create_old_tables)
    last = await append_each(store, WRITTEN)

    def rebuild_begun(conn: Connection) -> None:
        execute(conn, 'CREATE TABLE "counts__g2" (stream TEXT NOT NULL, type TEXT NOT NULL,'
                " n INTEGER NOT NULL, PRIMARY KEY (stream, type))")  # fmt: skip
        execute(
            conn,
            "INSERT INTO eskit_projection_rebuilds (name, version, generation, position,"
            " started_at) VALUES ('counter', 1, 2, 0, 0)",
        )

    await readmodels.write(rebuild_begun)
    during = await stored_status(store, readmodels)
    async with ProjectionRunner(store, [Counter()], database=readmodels) as runner:
        await runner.rebuild("counter")
        await runner.wait_until(last)
    after = await stored_status(store, readmodels)

    assert (during.rebuild_position, during.last_rebuild) == (0, None)
    assert after.last_rebuild is not None
    assert after.last_rebuild_events == REPLAYED
