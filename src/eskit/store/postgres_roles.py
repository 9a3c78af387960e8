"""A least-privilege application role for a PostgreSQL store (``eskit migrate --app-role``).

The application should not connect as the owner of the store's tables: an owner can disable
the triggers that keep the log append-only (migration 004). The application role gets what
eskit's runtime needs and nothing more:

- the schema: USAGE, and CREATE for the tables eskit makes at run time (projection state,
  leases, consumers, read models), which the role then owns; owning new tables gives it no
  right on the tables it does not own;
- ``eskit_events``: SELECT and INSERT only, never UPDATE, DELETE, TRUNCATE or TRIGGER;
- ``eskit_removals``: SELECT only (appends look removed event ids and stream heads up there;
  recording a removal is the audited path's, ``eskit scavenge`` run by the owner, not the app's);
- ``eskit_head``: SELECT and UPDATE (appends lock its row and move it);
- ``eskit_streams``: SELECT, INSERT, UPDATE (lifecycle and stream metadata);
- ``eskit_snapshots``: SELECT, INSERT, UPDATE, DELETE (retention deletes old snapshots);
- ``eskit_migrations``: SELECT (the version check on open);
- ``eskit_chain_start``: SELECT (``eskit verify`` reads it; it is written once, by
  ``eskit migrate``);
- eskit's run-time tables that already exist (made by the admin): SELECT, INSERT, UPDATE,
  DELETE; EXECUTE on the schema's functions; USAGE and SELECT on its sequences.

Grants are explicit, table by table, not default privileges: a later migration's new table
(which may hold something the app must not change) is granted only when its rights are
decided here. Run ``eskit migrate --app-role`` again after each upgrade.
"""

from __future__ import annotations

import re
from typing import Final

import psycopg

from eskit.errors import StoreError
from eskit.store.postgres_schema import check_schema

_ROLE: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

STORE_TABLES: Final = {
    "eskit_events": "SELECT, INSERT",
    "eskit_head": "SELECT, UPDATE",
    "eskit_streams": "SELECT, INSERT, UPDATE",
    "eskit_snapshots": "SELECT, INSERT, UPDATE, DELETE",
    "eskit_migrations": "SELECT",
    "eskit_chain_start": "SELECT",
    "eskit_removals": "SELECT",
}
"""The store's own tables (made by migrations) and what the app may do to each."""
RUNTIME_TABLES: Final = (
    "eskit_projections",
    "eskit_projection_rebuilds",
    "eskit_projection_skips",
    "eskit_partitions",
    "eskit_workers",
    "eskit_consumers",
    "eskit_consumer_inbox",
    "eskit_subject_keys",
)
"""Tables eskit creates when first needed; granted in full if the admin already made them."""


def check_role(role: object) -> str:
    if not isinstance(role, str) or not _ROLE.match(role):
        raise ValueError(
            f"invalid PostgreSQL role {role!r}: use 1-63 lower-case letters, digits and"
            " underscores, not starting with a digit"
        )
    return role


def grant_app_role(
    conn: psycopg.Connection[object], schema: str, role: str, *, login: bool = False
) -> bool:
    """Create ``role`` if missing (NOLOGIN unless ``login``) and give it exactly the rights
    above on ``schema``, which must be migrated; True if the role was created. Raises
    ``StoreError`` if the role owns the store's tables or is a superuser (triggers would
    not bind it) and ``ValueError`` for a bad name. All or nothing, in one transaction."""
    check_schema(schema)
    check_role(role)
    with conn.transaction():
        cursor = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,))
        found = cursor.fetchone()
        if found is None:
            conn.execute(f'CREATE ROLE "{role}" {"LOGIN" if login else "NOLOGIN"}')
        elif found[0]:  # type: ignore[index]
            raise StoreError(f"role {role} is a superuser: it bypasses every guard of the log")
        _check_not_owner(conn, schema, role)
        on = f'"{schema}"'
        conn.execute(f'GRANT USAGE, CREATE ON SCHEMA {on} TO "{role}"')
        for table in STORE_TABLES:
            conn.execute(f'REVOKE ALL ON {on}.{table} FROM "{role}"')
        for table, rights in STORE_TABLES.items():
            conn.execute(f'GRANT {rights} ON {on}.{table} TO "{role}"')
        for table in _existing(conn, schema, RUNTIME_TABLES):
            conn.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON {on}.{table} TO "{role}"')
        conn.execute(f'GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {on} TO "{role}"')
        conn.execute(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {on} TO "{role}"')
    return found is None


def _check_not_owner(conn: psycopg.Connection[object], schema: str, role: str) -> None:
    """The owner of eskit_events (or a member of the owning role) can disable its triggers."""
    cursor = conn.execute(
        "SELECT pg_get_userbyid(c.relowner), pg_has_role(%s, c.relowner, 'MEMBER')"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = 'eskit_events'",
        (role, schema),
    )
    row = cursor.fetchone()
    if row is None:
        raise StoreError(f"schema {schema} has no eskit_events table: migrate it first")
    owner, member = str(row[0]), bool(row[1])  # type: ignore[index]
    if member:
        raise StoreError(
            f"role {role} owns the store's tables (as {owner}): an owner can disable the"
            " triggers that keep the log append-only; choose another role for the app"
        )


def _existing(conn: psycopg.Connection[object], schema: str, tables: tuple[str, ...]) -> list[str]:
    cursor = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind = 'r' ORDER BY 1",
        (schema, list(tables)),
    )
    return [str(row[0]) for row in cursor.fetchall()]  # type: ignore[index]
