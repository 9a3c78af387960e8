"""A group table made before filters gets its ``filter`` column when groups are next
written, and reads as unfiltered until then, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

import eskit
from eskit.projections.sql import Connection, columns, execute
from eskit.subscriptions import EventFilter, Groups, Source, tables
from tests import postgres

pytestmark = pytest.mark.anyio

OLD_GROUPS = tables.SCHEMA[0].replace(
    """,
        filter          TEXT               -- the source's EventFilter as JSON, NULL if none""",
    "",
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_old(conn: Connection) -> None:
    execute(conn, "DROP TABLE IF EXISTS eskit_groups")
    for statement in (OLD_GROUPS, *tables.SCHEMA[1:]):
        execute(conn, statement)
    execute(
        conn,
        "INSERT INTO eskit_groups VALUES ('old', 'all', '', 1, 1, 1, 'round_robin', 0,"
        " 0, 0, 0, 0, 0, 0, 0)",
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_an_old_group_table_gains_the_filter_column(backend: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/events.db" if backend == "sqlite" else postgres.store_url()
    async with eskit.open_store(url) as store:
        groups = Groups(store)
        await groups.database.write(make_old)
        assert "filter" not in OLD_GROUPS
        assert (await groups.get("old")).source == Source.all()  # read before any write
        paid = Source.all(EventFilter("type", ("Paid",)))
        await groups.create("new", paid)
        assert "filter" in await groups.database.read(lambda c: columns(c, "eskit_groups"))
        assert [(g.name, g.source) for g in await groups.list()] == [
            ("new", paid),
            ("old", Source.all()),
        ]
