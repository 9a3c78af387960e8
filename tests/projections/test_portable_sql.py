"""Portable read-model SQL: one SQLProjection, written with ``?`` or ``:name``
placeholders, runs unchanged on SQLite and PostgreSQL. One test per promise of
docs/projections.md ("Portable SQL"), each on both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eskit.projections import (
    Database,
    PostgresDatabase,
    ReadModelConnection,
    SQLiteDatabase,
    SQLProjection,
    handles,
)
from eskit.projections.sql import portable
from eskit.store.model import NewEvent, RecordedEvent
from eskit.testing import ProjectionSpec
from tests import postgres, services

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        opened: Database = SQLiteDatabase(tmp_path / "read.db")
    else:
        opened = PostgresDatabase(url=postgres.database_url(), schema=services.unique("sql"))
    yield opened
    await opened.close()


class Accounts(SQLProjection):
    """One handler per portable construct."""

    name = "accounts"
    tables = ("accounts", "moves")
    schema = (
        """CREATE TABLE {accounts} (
            id      TEXT PRIMARY KEY,
            balance BIGINT NOT NULL,
            rate    DOUBLE PRECISION,
            opened  TEXT                -- an ISO date
        )""",
        "CREATE TABLE {moves} (event_id TEXT PRIMARY KEY, account TEXT, amount BIGINT)",
    )

    @handles("Opened")
    def opened(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        db.execute(
            "INSERT INTO {accounts} (id, balance, rate, opened) VALUES (?, 0, ?, ?)",
            (event.stream, event.data["rate"], event.data["on"]),
        )

    @handles("Deposited")
    def deposited(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        db.execute(
            "INSERT INTO {accounts} (id, balance) VALUES (:id, :amount) ON CONFLICT (id)"
            " DO UPDATE SET balance = {accounts}.balance + excluded.balance",
            {"id": event.stream, "amount": event.data["amount"]},
        )

    @handles("Recorded")
    def recorded(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        inserted = db.execute(
            "INSERT INTO {moves} VALUES (?, ?, ?) ON CONFLICT DO NOTHING RETURNING amount",
            (event.data["move"], event.stream, event.data["amount"]),
        ).fetchone()
        if inserted is not None:  # a move seen before changes nothing
            db.execute(
                "UPDATE {accounts} SET balance = balance + ? WHERE id = ?",
                (inserted[0], event.stream),
            )

    @handles("Renamed")
    def renamed(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        db.write(
            "UPDATE {accounts} SET id = ? WHERE id LIKE 'acc-%' AND id = ?",
            (event.data["to"], event.stream),
        )


def event(type: str, **data: object) -> NewEvent:
    return NewEvent(type, dict(data))


async def test_positional_placeholders_and_portable_types(database: Database) -> None:
    async with ProjectionSpec(Accounts(), database) as spec:
        spec.given("acc-1", event("Opened", rate=0.25, on="2024-05-01"))

        [row] = await spec.then_rows("accounts", ("acc-1", 0, 0.25, "2024-05-01"))
    assert [type(value) for value in row] == [str, int, float, str]


async def test_named_placeholders_and_an_upsert_with_excluded(database: Database) -> None:
    async with ProjectionSpec(Accounts(), database) as spec:
        spec.given("acc-1", event("Deposited", amount=5), event("Deposited", amount=7))

        await spec.then_rows("accounts", {"id": "acc-1", "balance": 12})


async def test_on_conflict_do_nothing_returning(database: Database) -> None:
    async with ProjectionSpec(Accounts(), database) as spec:
        spec.given(
            "acc-1",
            event("Opened", rate=None, on=None),
            event("Recorded", move="m1", amount=10),
            event("Recorded", move="m1", amount=10),
            event("Recorded", move="m2", amount=1),
        )

        await spec.then_rows("accounts", {"id": "acc-1", "balance": 11})
        await spec.then_rows("moves", ("m1", "acc-1", 10), ("m2", "acc-1", 1))


async def test_a_percent_sign_in_a_literal_and_batched_writes(database: Database) -> None:
    async with ProjectionSpec(Accounts(), database) as spec:
        spec.given("acc-1", event("Opened", rate=None, on=None), event("Renamed", to="acc-one"))

        await spec.then_rows("accounts", {"id": "acc-one"})


@pytest.mark.parametrize(
    ("written", "sent_to_postgres"),
    [
        ("SELECT a FROM t WHERE b = ? AND c = ?", "SELECT a FROM t WHERE b = %s AND c = %s"),
        ("SELECT :a, :b_2", "SELECT %(a)s, %(b_2)s"),
        ("SELECT x::text FROM t WHERE y = ?", "SELECT x::text FROM t WHERE y = %s"),
        (
            "SELECT 'a?:b%', \"c?\" FROM t -- d?\nWHERE e = ?",
            "SELECT 'a?:b%%', \"c?\" FROM t -- d?\nWHERE e = %s",
        ),
        ("SELECT %s, 10 % 3", "SELECT %s, 10 % 3"),  # no ? nor :name: written for psycopg
    ],
)
def test_placeholders_outside_literals_become_psycopg_ones(
    written: str, sent_to_postgres: str
) -> None:
    assert portable(written) == sent_to_postgres
