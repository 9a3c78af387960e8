"""``eskit migrate``: bring a PostgreSQL store's schema to this eskit's version."""

from __future__ import annotations

import datetime as dt

import psycopg
from rich.table import Table
from rich.text import Text

import eskit
from eskit.cli.common import Url, cell, out, run, when
from eskit.errors import StoreError
from eskit.store.postgres import PostgresStore
from eskit.store.postgres_schema import Migration
from eskit.store.postgres_schema import migrate as apply_migrations

Applied = tuple[int, str, dt.datetime]


def migrate(url: Url) -> None:
    """Create or upgrade a PostgreSQL store's tables to this version of eskit.

    Applies each pending migration once, in order, in one transaction: running it again
    does nothing, and processes migrating at once take turns. SQLite and memory stores
    have nothing to migrate (SQLite applies its schema when a store is opened).

    Example: eskit migrate "postgresql://postgres@localhost/app?schema=billing"
    """
    outcome = run(_migrate(url))
    console = out()
    if outcome is None:
        console.print(
            Text(
                f"nothing to migrate: {url} is not a PostgreSQL store (SQLite applies its"
                " schema when a store is opened; memory stores keep nothing)"
            ),
            soft_wrap=True,
        )
        return
    schema, applied, history = outcome
    version = history[-1][0] if history else 0
    if not applied:
        console.print(Text(f"schema {schema} is up to date (version {version})"), soft_wrap=True)
        return
    table = Table(title=f"migrations applied to schema {schema}")
    table.add_column("version", justify="right")
    table.add_column("name")
    table.add_column("applied at")
    moments = {number: moment for number, _, moment in history}
    for migration in applied:
        table.add_row(
            f"{migration.version:03d}", cell(migration.name), when(moments.get(migration.version))
        )
    console.print(table)
    console.print(Text(f"schema {schema} is now at version {version}"), soft_wrap=True)


async def _migrate(url: str) -> tuple[str, list[Migration], list[Applied]] | None:
    """The schema, the migrations applied now and every migration recorded in the schema;
    None for a store that is not PostgreSQL."""
    store = eskit.open_store(url)  # checks the URL and the schema name; opens nothing
    if not isinstance(store, PostgresStore):
        return None
    try:
        conn = await psycopg.AsyncConnection.connect(
            store.conninfo, autocommit=True, connect_timeout=10
        )
    except psycopg.Error as error:
        raise StoreError(f"cannot connect to PostgreSQL: {_one_line(error)}") from error
    async with conn:
        try:
            applied = await apply_migrations(conn, store.schema)
        except psycopg.Error as error:
            raise StoreError(
                f"migrating schema {store.schema} failed, nothing was changed: {_one_line(error)}"
            ) from error
        cursor = await conn.execute(
            f'SELECT version, name, applied_at FROM "{store.schema}".eskit_migrations'
            " ORDER BY version"
        )
        history = [(int(v), str(n), at) for v, n, at in await cursor.fetchall()]
    return store.schema, applied, history


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
