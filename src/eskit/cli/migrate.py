"""``eskit migrate``: bring a store's schema (PostgreSQL or a SQLite file) to this eskit's
version."""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.table import Table
from rich.text import Text

import eskit
from eskit.cli.common import Url, cell, fail, out, run, when
from eskit.errors import StoreError
from eskit.store import sqlite_schema
from eskit.store.chain import audit_key
from eskit.store.postgres import PostgresStore
from eskit.store.postgres_roles import check_role, grant_app_role
from eskit.store.postgres_schema import Migration
from eskit.store.postgres_schema import migrate as apply_migrations
from eskit.store.sqlite import SQLiteStore
from eskit.store.sqlite_writer import connect

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
    """Create or upgrade a store's tables (PostgreSQL or a SQLite file) to this eskit.

    Applies each pending migration once, in order, in one transaction: running it again
    does nothing, and processes migrating at once take turns. SQLite files also upgrade
    themselves when an application opens them for writing; read-only commands (verify,
    export, streams ...) refuse a file that needs an upgrade. Memory stores keep nothing.

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
    try:
        store = eskit.open_store(url)  # checks the URL and the schema name; opens nothing
    except (ValueError, eskit.EskitError) as error:
        fail(str(error))
    console = out()
    if not isinstance(store, PostgresStore):
        if app_role is not None:
            fail(f"--app-role is for PostgreSQL stores; {url} is not one")
        if isinstance(store, SQLiteStore):
            _migrate_sqlite(store.path)
            return
        console.print(Text(f"nothing to migrate: {url} keeps nothing"), soft_wrap=True)
        return
    schema, applied, history, created = run(_migrate(store, app_role, login))
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


def _migrate_sqlite(path: Path) -> None:
    """Apply the pending migrations to a SQLite store file (created if missing) and say
    which."""
    try:
        with contextlib.closing(connect(str(path))) as conn:
            applied = sqlite_schema.migrate(conn, str(path), audit_key())
            version = sqlite_schema.version(conn)
    except sqlite3.Error as error:
        fail(f"migrating {path} failed, nothing was changed: {error}")
    console = out()
    if not applied:
        console.print(Text(f"{path} is up to date (version {version})"), soft_wrap=True)
        return
    table = Table(title=f"migrations applied to {path}")
    table.add_column("version", justify="right")
    table.add_column("name")
    for migration in applied:
        table.add_row(f"{migration.version:03d}", cell(migration.name))
    console.print(table)
    console.print(Text(f"{path} is now at version {version}"), soft_wrap=True)


async def _migrate(
    store: PostgresStore, app_role: str | None, login: bool
) -> tuple[str, list[Migration], list[Applied], bool]:
    """The schema, the migrations applied now, every migration recorded in the schema and
    whether ``app_role`` was created."""
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
