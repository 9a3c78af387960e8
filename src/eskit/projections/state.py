"""Projection checkpoints, builds and statuses, kept in SQL beside the read models.

Every function takes a connection inside a transaction the caller runs, so a read-model
write and the checkpoint it advances commit together. A projection has one live build
(``generation``) whose tables its views show; a rebuild writes generation + 1 beside it
and switches the views in one transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Final

import msgspec

from eskit.errors import EskitError
from eskit.projections.projection import AnyProjection, SQLProjection, physical_names
from eskit.projections.sql import Connection, execute, is_sqlite, kind_of, lock_setup
from eskit.store.model import RecordedEvent

RUNNING: Final = "running"
STUCK: Final = "stuck"
FAILING: Final = "failing"
"""Shown, never stored: a running process manager whose last ``tick`` raised (its
``error`` says when and why) until a tick succeeds. Its events are still applied."""

SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS eskit_projections (
        name           TEXT PRIMARY KEY,
        version        BIGINT  NOT NULL,  -- the code version that built the live tables
        generation     BIGINT  NOT NULL,  -- the live build: tables are <table>__g<generation>
        position       BIGINT  NOT NULL,  -- checkpoint: every event up to here is applied
        tables         TEXT    NOT NULL,  -- JSON list of the logical tables (views)
        status         TEXT    NOT NULL,  -- running | stuck
        error          TEXT,              -- why it is stuck; or, running, why a process
                                          -- manager's last tick failed (shown as failing)
        error_position BIGINT,           -- the event it is stuck on
        error_event    TEXT,
        error_type     TEXT,
        updated_at     BIGINT  NOT NULL   -- microseconds since 1970-01-01 UTC
    )""",
    """CREATE TABLE IF NOT EXISTS eskit_projection_rebuilds (
        name       TEXT PRIMARY KEY,
        version    BIGINT  NOT NULL,
        generation BIGINT  NOT NULL,      -- the build being written
        position   BIGINT  NOT NULL,      -- how far it got
        started_at BIGINT  NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS eskit_projection_skips (
        name       TEXT    NOT NULL,
        position   BIGINT  NOT NULL,
        event_id   TEXT    NOT NULL,
        event_type TEXT    NOT NULL,
        error      TEXT    NOT NULL,
        reason     TEXT    NOT NULL,
        skipped_at BIGINT  NOT NULL
    )""",
)


class ProjectionMoved(EskitError):
    """The projection was rebuilt, reset or skipped by someone else since it was loaded."""


class State(msgspec.Struct, frozen=True):
    """A projection's row: where it is and how it is doing."""

    name: str
    version: int
    generation: int
    position: int
    tables: list[str]
    status: str
    error: str | None = None
    error_position: int | None = None
    error_event: str | None = None
    error_type: str | None = None
    updated_at: int = 0


class Rebuild(msgspec.Struct, frozen=True):
    name: str
    version: int
    generation: int
    position: int
    started_at: int


class Skip(msgspec.Struct, frozen=True):
    name: str
    position: int
    event_id: str
    event_type: str
    error: str
    reason: str
    skipped_at: int


def ensure_schema(conn: Connection) -> None:
    for statement in SCHEMA:
        execute(conn, statement)


def load(conn: Connection, name: str) -> State | None:
    row = execute(
        conn,
        "SELECT name, version, generation, position, tables, status, error, error_position,"
        " error_event, error_type, updated_at FROM eskit_projections WHERE name = ?",
        (name,),
    ).fetchone()
    if row is None:
        return None
    name_, version, generation, position, tables, *rest = row
    return State(name_, version, generation, position, json.loads(tables), *rest)


def load_all(conn: Connection) -> list[tuple[State, Rebuild | None]]:
    """Every projection's state and rebuild in progress, by name; [] before any ran."""
    if not _has_schema(conn):
        return []
    names = [row[0] for row in execute(conn, "SELECT name FROM eskit_projections ORDER BY name")]
    return [(state, load_rebuild(conn, name)) for name in names if (state := load(conn, name))]


def load_rebuild(conn: Connection, name: str) -> Rebuild | None:
    row = execute(
        conn,
        "SELECT name, version, generation, position, started_at"
        " FROM eskit_projection_rebuilds WHERE name = ?",
        (name,),
    ).fetchone()
    return None if row is None else Rebuild(*row)


def skips(conn: Connection, name: str) -> list[Skip]:
    if not _has_schema(conn):
        return []
    rows = execute(
        conn,
        "SELECT name, position, event_id, event_type, error, reason, skipped_at"
        " FROM eskit_projection_skips WHERE name = ? ORDER BY position",
        (name,),
    ).fetchall()
    return [Skip(*row) for row in rows]


def _has_schema(conn: Connection) -> bool:
    return kind_of(conn, "eskit_projections") == "table"


def setup(conn: Connection, projection: AnyProjection, now: int) -> State:
    """The projection's state, creating its first build when it has none."""
    lock_setup(conn)
    ensure_schema(conn)
    state = load(conn, projection.name)
    if state is not None:
        return state
    tables = list(projection.tables) if isinstance(projection, SQLProjection) else []
    _claim_views(conn, projection.name, tables)
    if isinstance(projection, SQLProjection):
        create_tables(conn, projection, 1)
        point_views(conn, tables, 1)
    execute(
        conn,
        "INSERT INTO eskit_projections (name, version, generation, position, tables, status,"
        " updated_at) VALUES (?, ?, 1, ?, ?, ?, ?)",
        (
            projection.name,
            projection.version,
            projection.start_from,
            json.dumps(tables),
            RUNNING,
            now,
        ),
    )
    state = load(conn, projection.name)
    assert state is not None
    return state


def _claim_views(conn: Connection, name: str, tables: list[str]) -> None:
    """Refuse tables another projection (or the application) already uses."""
    for table in tables:
        if kind_of(conn, table) == "table":
            raise ValueError(f"projection {name}: a table named {table!r} already exists")
        for other in execute(
            conn, "SELECT name, tables FROM eskit_projections WHERE name != ?", (name,)
        ):
            if table in json.loads(other[1]):
                raise ValueError(
                    f"projection {name}: table {table!r} belongs to projection {other[0]}"
                )


def create_tables(conn: Connection, projection: SQLProjection, generation: int) -> None:
    names = physical_names(projection.tables, generation)
    for statement in projection.statements(is_sqlite(conn)):
        execute(conn, statement.format_map(names))


def drop_tables(conn: Connection, tables: Iterable[str], generation: int) -> None:
    for physical in physical_names(tables, generation).values():
        execute(conn, f'DROP TABLE IF EXISTS "{physical}"')


def point_views(conn: Connection, tables: Iterable[str], generation: int) -> None:
    """Make each logical table a view of this build's table (readers never see a gap:
    this runs inside the transaction that switches builds)."""
    for table, physical in physical_names(tables, generation).items():
        execute(conn, f'DROP VIEW IF EXISTS "{table}"')
        execute(conn, f'CREATE VIEW "{table}" AS SELECT * FROM "{physical}"')


def advance(conn: Connection, name: str, loaded: State, position: int, now: int) -> None:
    """Move the checkpoint from where the caller loaded it (same build, same position) to
    ``position``; raise ``ProjectionMoved`` if anyone moved it since (a rebuild's switch, a
    reset, a skip, another runner): the caller's batch must not be applied twice."""
    changed = execute(
        conn,
        "UPDATE eskit_projections SET position = ?, updated_at = ?"
        " WHERE name = ? AND generation = ? AND status = ? AND position = ?",
        (position, now, name, loaded.generation, RUNNING, loaded.position),
    ).rowcount
    if not changed:
        raise ProjectionMoved(name)


def shown_status(state: State) -> str:
    """The status to show: ``failing`` for a running projection that carries an error (a
    process manager whose last tick raised), else the stored one."""
    return FAILING if state.status == RUNNING and state.error is not None else state.status


def tick_failed(conn: Connection, name: str, generation: int, error: str, now: int) -> None:
    """Record why a process manager's tick failed (its checkpoint and status stay)."""
    execute(
        conn,
        "UPDATE eskit_projections SET error = ?, updated_at = ?"
        " WHERE name = ? AND generation = ? AND status = ?",
        (error, now, name, generation, RUNNING),
    )


def tick_succeeded(conn: Connection, name: str) -> None:
    """Clear the error of an earlier failed tick."""
    execute(
        conn,
        "UPDATE eskit_projections SET error = NULL WHERE name = ? AND status = ?",
        (name, RUNNING),
    )


def mark_stuck(
    conn: Connection, name: str, generation: int, event: RecordedEvent, error: str, now: int
) -> None:
    changed = execute(
        conn,
        "UPDATE eskit_projections SET status = ?, error = ?, error_position = ?,"
        " error_event = ?, error_type = ?, updated_at = ? WHERE name = ? AND generation = ?",
        (STUCK, error, event.position, str(event.id), event.type, now, name, generation),
    ).rowcount
    if not changed:
        raise ProjectionMoved(name)


def skip(conn: Connection, name: str, reason: str, now: int) -> Skip:
    """Step a stuck projection over the event it is stuck on, and record that it did."""
    state = load(conn, name) if _has_schema(conn) else None
    if state is None:
        raise ValueError(f"no projection named {name!r}")
    if state.status != STUCK or state.error_position is None:
        raise ValueError(f"projection {name} is not stuck (status {state.status})")
    record = Skip(
        name,
        state.error_position,
        state.error_event or "",
        state.error_type or "",
        state.error or "",
        reason,
        now,
    )
    record_skip(conn, record)
    execute(
        conn,
        "UPDATE eskit_projections SET status = ?, position = ?, error = NULL,"
        " error_position = NULL, error_event = NULL, error_type = NULL, updated_at = ?"
        " WHERE name = ?",
        (RUNNING, record.position, now, name),
    )
    return record


def record_skip(conn: Connection, record: Skip) -> None:
    """Keep the skip, with its reason, for ``eskit projections status`` and audits."""
    execute(
        conn,
        "INSERT INTO eskit_projection_skips (name, position, event_id, event_type, error,"
        " reason, skipped_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        msgspec.structs.astuple(record),
    )


def reset(conn: Connection, name: str) -> bool:
    """Forget a projection: drop its builds and views and its checkpoint (the next run
    builds it from ``start_from``). False if there was nothing to reset."""
    state = load(conn, name) if _has_schema(conn) else None
    if state is None:
        return False
    for table in state.tables:  # views first: PostgreSQL keeps a table a view reads
        execute(conn, f'DROP VIEW IF EXISTS "{table}"')
    rebuild = load_rebuild(conn, name)
    if rebuild is not None:
        drop_tables(conn, state.tables, rebuild.generation)
    drop_tables(conn, state.tables, state.generation)
    execute(conn, "DELETE FROM eskit_projection_rebuilds WHERE name = ?", (name,))
    execute(conn, "DELETE FROM eskit_projections WHERE name = ?", (name,))
    return True


def start_rebuild(conn: Connection, projection: SQLProjection, now: int) -> Rebuild:
    """The build to write: the one in progress for this version (resumed), or a new one."""
    live = setup(conn, projection, now)
    current = load_rebuild(conn, projection.name)
    if current is not None and current.version == projection.version:
        return current
    if current is not None:
        drop_tables(conn, projection.tables, current.generation)
    generation = max(live.generation, current.generation if current else 0) + 1
    create_tables(conn, projection, generation)
    execute(
        conn,
        "INSERT INTO eskit_projection_rebuilds (name, version, generation, position,"
        " started_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
        " version = excluded.version, generation = excluded.generation,"
        " position = excluded.position, started_at = excluded.started_at",
        (projection.name, projection.version, generation, projection.start_from, now),
    )
    rebuild = load_rebuild(conn, projection.name)
    assert rebuild is not None
    return rebuild


def advance_rebuild(conn: Connection, name: str, generation: int, position: int) -> None:
    changed = execute(
        conn,
        "UPDATE eskit_projection_rebuilds SET position = ? WHERE name = ? AND generation = ?",
        (position, name, generation),
    ).rowcount
    if not changed:
        raise ProjectionMoved(name)


def switch(conn: Connection, projection: SQLProjection, rebuild: Rebuild, now: int) -> State:
    """Make the rebuilt tables the live ones and drop the old build, atomically."""
    live = load(conn, projection.name)
    current = load_rebuild(conn, projection.name)
    if live is None or current is None or current.generation != rebuild.generation:
        raise ProjectionMoved(projection.name)
    tables = list(projection.tables)
    for table in set(live.tables) - set(tables):
        execute(conn, f'DROP VIEW IF EXISTS "{table}"')
    _claim_views(conn, projection.name, tables)
    point_views(conn, tables, rebuild.generation)
    drop_tables(conn, live.tables, live.generation)
    execute(
        conn,
        "UPDATE eskit_projections SET version = ?, generation = ?, position = ?, tables = ?,"
        " status = ?, error = NULL, error_position = NULL, error_event = NULL,"
        " error_type = NULL, updated_at = ? WHERE name = ?",
        (
            rebuild.version,
            rebuild.generation,
            rebuild.position,
            json.dumps(tables),
            RUNNING,
            now,
            projection.name,
        ),
    )
    execute(conn, "DELETE FROM eskit_projection_rebuilds WHERE name = ?", (projection.name,))
    state = load(conn, projection.name)
    assert state is not None
    return state


def digest(conn: Connection, tables: Iterable[str]) -> str:
    """A SHA-256 over every row of the given (logical) tables, in a stable order: two
    builds of a read model are identical exactly when their digests are."""
    hasher = hashlib.sha256()
    for table in sorted(tables):
        hasher.update(f"table {table}\n".encode())
        rows = execute(conn, f'SELECT * FROM "{table}"').fetchall()
        for line in sorted(json.dumps(row, default=repr) for row in rows):
            hasher.update(line.encode())
            hasher.update(b"\n")
    return hasher.hexdigest()
