"""``eskit migrate``: bring a store's schema (PostgreSQL or a SQLite file) to this eskit's
version."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

import eskit
from eskit.cli.common import Url, fail, out, run, when
from eskit.cli.records import Column, show_records
from eskit.store.postgres_roles import check_role

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
    if app_role is not None and not store.grants_roles:
        fail(f"--app-role is for PostgreSQL stores; {url} is not one")
    migrated = run(store.migrate(app_role, login))
    console = out()
    if migrated is None:
        console.print(Text(f"nothing to migrate: {url} keeps nothing"), soft_wrap=True)
        return
    where, applied, version, created = migrated
    if app_role is not None:
        how = f"created ({'LOGIN' if login else 'NOLOGIN'})" if created else "exists"
        console.print(
            Text(
                f"role {app_role} {how}: granted what eskit needs on {where}, without"
                " UPDATE, DELETE or TRUNCATE on eskit_events"
            ),
            soft_wrap=True,
        )
    if not applied:
        console.print(Text(f"{where} is up to date (version {version})"), soft_wrap=True)
        return
    records = [{"version": number, "name": name, "applied_at": at} for number, name, at in applied]
    title = f"migrations applied to {where}"
    show_records(MIGRATION_COLUMNS, records, title=title, as_json=False)
    console.print(Text(f"{where} is now at version {version}"), soft_wrap=True)


MIGRATION_COLUMNS = (
    Column("version", right=True, shown=lambda number: f"{number:03d}"),
    Column("name", names=True),
    Column("applied_at", optional=True, shown=when),  # a SQLite file records no time
)
