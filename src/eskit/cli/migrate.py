"""``eskit migrate``: bring a PostgreSQL store's schema to this eskit's version."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import psycopg
import typer
from rich.table import Table
from rich.text import Text

import eskit
from eskit.cli.common import Url, cell, fail, out, run, when
from eskit.errors import StoreError
from eskit.store.postgres import PostgresStore
from eskit.store.postgres_roles import check_role, grant_app_role
from eskit.store.postgres_schema import Migration
from eskit.store.postgres_schema import migrate as apply_migrations

Applied = tuple[int, str, dt.datetime]
AppRole = Annotated[
    str | None,
    typer.Option(
        "--app-role",
        help="Create (if missing) or grant the role the application connects as: it may"
        " read and append events, never change or remove them.",
        show_default=False,
    ),
]
Login = Annotated[
    bool, typer.Option("--login", help="Create the --app-role with LOGIN (default NOLOGIN).")
]


def migrate(url: Url, app_role: AppRole = None, login: Login = False) -> None:
    """Create or upgrade a PostgreSQL store's tables to this version of eskit.

    Applies each pending migration once, in order, in one transaction: running it again
    does nothing, and processes migrating at once take turns. SQLite and memory stores
    have nothing to migrate (SQLite files upgrade themselves when a store is opened).

    With --app-role NAME, also creates that role (NOLOGIN unless --login; set its password
    and LOGIN yourself) or takes the existing one, and grants it only what eskit needs at run
    time: no UPDATE, DELETE or TRUNCATE on the events, nothing on the removals. Run it
    again after each upgrade.

    Example: eskit migrate "postgresql://postgres@localhost/app?schema=billing" --app-role app
    """
    if app_role is not None:
        try:
            check_role(app_role)
        except ValueError as error:
            fail(str(error))
    outcome = run(_migrate(url, app_role, login))
    console = out()
    if outcome is None:
        if app_role is not None:
            fail(f"--app-role is for PostgreSQL stores; {url} is not one")
        console.print(
            Text(
                f"nothing to migrate: {url} is not a PostgreSQL store (SQLite files upgrade"
                " their schema when a store is opened; memory stores keep nothing)"
            ),
            soft_wrap=True,
        )
        return
    schema, applied, history, created = outcome
    version = history[-1][0] if history else 0
    if app_role is not None:
        how = f"created ({'LOGIN' if login else 'NOLOGIN'})" if created else "exists"
        console.print(
            Text(
                f"role {app_role} {how}: granted what eskit needs on schema {schema}, without"
                " UPDATE, DELETE or TRUNCATE on eskit_events"
            ),
            soft_wrap=True,
        )
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


async def _migrate(
    url: str, app_role: str | None, login: bool
) -> tuple[str, list[Migration], list[Applied], bool] | None:
    """The schema, the migrations applied now, every migration recorded in the schema and
    whether ``app_role`` was created; None for a store that is not PostgreSQL."""
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
        created = False
        if app_role is not None:
            try:
                created = await grant_app_role(conn, store.schema, app_role, login=login)
            except psycopg.Error as error:
                raise StoreError(
                    f"granting role {app_role} failed, nothing was granted: {_one_line(error)}"
                ) from error
        cursor = await conn.execute(
            f'SELECT version, name, applied_at FROM "{store.schema}".eskit_migrations'
            " ORDER BY version"
        )
        history = [(int(v), str(n), at) for v, n, at in await cursor.fetchall()]
    return store.schema, applied, history, created


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
