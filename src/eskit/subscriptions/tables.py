"""A consumer group's state, in SQL beside the read models: no leader process needed.

Every function takes a connection inside a transaction the caller runs (``Database.write``)
and reads the database's clock, so consumers in many processes and machines share one
group through these rows alone:

- ``eskit_groups``: the source (and its filter, as JSON: added to older tables when a
  group store opens), settings, the checkpoint (every event up to it is acked, skipped or
  parked), how far the log was read, counters for metrics.
- ``eskit_group_events``: the window, the events read from the log and not yet done:
  waiting (no consumer) or in flight (a consumer and a deadline), with their attempts.
  Acked and skipped events are deleted; parked ones move to ``eskit_group_parked``.
  Replayed events come back here marked with their replay, and never move the checkpoint.
- ``eskit_group_consumers`` (heartbeats), ``eskit_group_pins`` (stream -> consumer, for
  the pinned strategy), ``eskit_group_replays`` (who asked for which replay).

On PostgreSQL each changing call first locks the group's row, so its transactions run
one at a time; SQLite's write lock does the same.

This module holds the schema and the groups' own rows; ``window`` claims, acks and nacks
the events, ``parking`` keeps the parked ones and replays them.
"""

from __future__ import annotations

from typing import Final

import msgspec

from eskit.projections.sql import (
    Connection,
    columns,
    execute,
    is_sqlite,
    kind_of,
    lock_setup,
    now_sql,
)
from eskit.store.filters import EventFilter
from eskit.subscriptions.model import (
    Group,
    GroupExists,
    GroupNotFound,
    Settings,
    Source,
)

MICROS: Final = 1_000_000

SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS eskit_groups (
        name            TEXT PRIMARY KEY,
        kind            TEXT    NOT NULL,  -- stream | category | all
        source          TEXT    NOT NULL,
        message_timeout BIGINT  NOT NULL,  -- microseconds
        max_retries     BIGINT  NOT NULL,
        max_in_flight   BIGINT  NOT NULL,
        strategy        TEXT    NOT NULL,  -- round_robin | pinned
        retry_backoff   BIGINT  NOT NULL,  -- microseconds
        checkpoint      BIGINT  NOT NULL,  -- every event up to here is acked/skipped/parked
        read_position   BIGINT  NOT NULL,  -- the log is read up to here
        parked_seq      BIGINT  NOT NULL,  -- the last parked entry's number
        retried         BIGINT  NOT NULL,  -- counters, for metrics
        parked_total    BIGINT  NOT NULL,
        replayed        BIGINT  NOT NULL,
        created_at      BIGINT  NOT NULL,
        filter          TEXT               -- the source's EventFilter as JSON, NULL if none
    )""",
    """CREATE TABLE IF NOT EXISTS eskit_group_events (
        grp          TEXT    NOT NULL,
        position     BIGINT  NOT NULL,
        stream       TEXT    NOT NULL,
        event_id     TEXT    NOT NULL,
        event_type   TEXT    NOT NULL,
        consumer     TEXT,               -- NULL while waiting
        last_consumer TEXT,              -- who failed it last: another gets it, if any lives
        expires_at   BIGINT  NOT NULL,   -- in flight until (database clock, microseconds)
        available_at BIGINT  NOT NULL,   -- not handed out before (retry backoff)
        attempts     BIGINT  NOT NULL,   -- deliveries so far
        replay       BIGINT  NOT NULL,   -- the replay that brought it back, 0 if none
        reason       TEXT,               -- why it was last nacked
        PRIMARY KEY (grp, position)
    )""",
    "CREATE INDEX IF NOT EXISTS eskit_group_events_event ON eskit_group_events (grp, event_id)",
    "CREATE INDEX IF NOT EXISTS eskit_group_events_held"
    " ON eskit_group_events (grp, consumer, expires_at)",
    """CREATE TABLE IF NOT EXISTS eskit_group_parked (
        grp        TEXT    NOT NULL,
        seq        BIGINT  NOT NULL,
        position   BIGINT  NOT NULL,
        stream     TEXT    NOT NULL,
        event_type TEXT    NOT NULL,
        event_id   TEXT    NOT NULL,
        attempts   BIGINT  NOT NULL,
        reason     TEXT    NOT NULL,
        parked_at  BIGINT  NOT NULL,
        PRIMARY KEY (grp, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS eskit_group_consumers (
        grp      TEXT   NOT NULL,
        consumer TEXT   NOT NULL,
        seen_at  BIGINT NOT NULL,
        PRIMARY KEY (grp, consumer)
    )""",
    """CREATE TABLE IF NOT EXISTS eskit_group_pins (
        grp      TEXT NOT NULL,
        stream   TEXT NOT NULL,
        consumer TEXT NOT NULL,
        PRIMARY KEY (grp, stream)
    )""",
    """CREATE TABLE IF NOT EXISTS eskit_group_replays (
        grp          TEXT   NOT NULL,
        id           BIGINT NOT NULL,
        requested_by TEXT   NOT NULL,
        up_to        BIGINT NOT NULL,   -- parked entries up to this seq
        requested_at BIGINT NOT NULL,
        replayed     BIGINT NOT NULL,
        finished_at  BIGINT,
        PRIMARY KEY (grp, id)
    )""",
)

_GROUP_COLUMNS: Final = (
    "name, kind, source, message_timeout, max_retries, max_in_flight, strategy,"
    " retry_backoff, checkpoint, read_position, retried, parked_total, replayed, created_at,"
    " filter"
)
_TABLES: Final = (
    "eskit_group_events",
    "eskit_group_parked",
    "eskit_group_consumers",
    "eskit_group_pins",
    "eskit_group_replays",
)


def ensure_schema(conn: Connection) -> None:
    lock_setup(conn)
    for statement in SCHEMA:
        execute(conn, statement)
    if "filter" not in columns(conn, "eskit_groups"):  # a table made before filters
        execute(conn, "ALTER TABLE eskit_groups ADD COLUMN filter TEXT")


def now(conn: Connection) -> int:
    return int(execute(conn, f"SELECT {now_sql(conn)}").fetchone()[0])


def group_row(conn: Connection, name: str, lock: bool = True) -> tuple[object, ...]:
    """The group's row, locked for this transaction on PostgreSQL; ``GroupNotFound``."""
    selected = _GROUP_COLUMNS
    if not lock:  # a reader: the table may not exist yet, or predate filters
        have = columns(conn, "eskit_groups")
        if not have:
            raise GroupNotFound(name)
        if "filter" not in have:
            selected = selected.replace(" filter", " NULL")
    lock_clause = " FOR UPDATE" if lock and not is_sqlite(conn) else ""
    row = execute(
        conn, f"SELECT {selected} FROM eskit_groups WHERE name = ?{lock_clause}", (name,)
    ).fetchone()
    if row is None:
        raise GroupNotFound(name)
    return tuple(row)


def as_group(row: tuple[object, ...]) -> Group:
    (name, kind, source, timeout, retries, in_flight, strategy, retry_backoff, checkpoint,
     read, retried, parked_total, replayed, created_at, filter_json) = row  # fmt: skip
    settings = Settings(
        message_timeout=int(timeout) / MICROS,  # type: ignore[call-overload]
        max_retries=int(retries),  # type: ignore[call-overload]
        max_in_flight=int(in_flight),  # type: ignore[call-overload]
        strategy=strategy,  # type: ignore[arg-type]
        retry_backoff=int(retry_backoff) / MICROS,  # type: ignore[call-overload]
    )
    return Group(
        str(name),
        Source(kind, str(source), _filter_of(filter_json)),  # type: ignore[arg-type]
        settings,
        int(checkpoint),  # type: ignore[call-overload]
        int(read),  # type: ignore[call-overload]
        retried_total=int(retried),  # type: ignore[call-overload]
        parked_total=int(parked_total),  # type: ignore[call-overload]
        replayed_total=int(replayed),  # type: ignore[call-overload]
        created_at=int(created_at),  # type: ignore[call-overload]
    )


def _filter_of(stored: object) -> EventFilter | None:
    if stored is None:
        return None
    return msgspec.json.decode(str(stored), type=EventFilter)


def load(conn: Connection, name: str) -> Group:
    """The group with its counts and live consumers; ``GroupNotFound``."""
    group = as_group(group_row(conn, name, lock=False))
    counts = dict.fromkeys(("in_flight", "waiting"), 0)
    for held, count in execute(
        conn,
        "SELECT consumer IS NOT NULL, COUNT(*) FROM eskit_group_events WHERE grp = ?"
        " GROUP BY consumer IS NOT NULL",
        (name,),
    ).fetchall():
        counts["in_flight" if held else "waiting"] = int(count)
    (parked,) = execute(
        conn, "SELECT COUNT(*) FROM eskit_group_parked WHERE grp = ?", (name,)
    ).fetchone()
    consumers = tuple(
        row[0]
        for row in execute(
            conn,
            f"SELECT consumer FROM eskit_group_consumers WHERE grp = ?"
            f" AND seen_at > {now_sql(conn)} - ? ORDER BY consumer",
            (name, int(group.settings.message_timeout * MICROS)),
        ).fetchall()
    )
    return msgspec.structs.replace(
        group,
        in_flight=counts["in_flight"],
        waiting=counts["waiting"],
        parked=int(parked),
        consumers=consumers,
    )


def names(conn: Connection) -> list[str]:
    if kind_of(conn, "eskit_groups") is None:
        return []
    return [row[0] for row in execute(conn, "SELECT name FROM eskit_groups ORDER BY name")]


def create(conn: Connection, name: str, source: Source, settings: Settings, start: int) -> None:
    """A new group whose checkpoint is ``start``; ``GroupExists`` if the name is taken."""
    if execute(conn, "SELECT 1 FROM eskit_groups WHERE name = ?", (name,)).fetchone():
        raise GroupExists(name)
    stored = None if source.filter is None else msgspec.json.encode(source.filter).decode()
    execute(
        conn,
        f"INSERT INTO eskit_groups (name, kind, source, message_timeout, max_retries,"
        f" max_in_flight, strategy, retry_backoff, checkpoint, read_position, parked_seq,"
        f" retried, parked_total, replayed, created_at, filter)"
        f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0, {now_sql(conn)}, ?)",
        (name, source.kind, source.name, *_settings(settings), start, start, stored),
    )


def _settings(settings: Settings) -> tuple[object, ...]:
    return (
        int(settings.message_timeout * MICROS),
        settings.max_retries,
        settings.max_in_flight,
        settings.strategy,
        int(settings.retry_backoff * MICROS),
    )


def update(conn: Connection, name: str, settings: Settings) -> None:
    """New settings; events in flight keep their deadlines."""
    group_row(conn, name)
    execute(
        conn,
        "UPDATE eskit_groups SET message_timeout = ?, max_retries = ?, max_in_flight = ?,"
        " strategy = ?, retry_backoff = ? WHERE name = ?",
        (*_settings(settings), name),
    )
    if settings.strategy != "pinned":
        execute(conn, "DELETE FROM eskit_group_pins WHERE grp = ?", (name,))


def delete(conn: Connection, name: str) -> None:
    """The group and everything it kept (its parked events and replay records too)."""
    group_row(conn, name)
    for table in _TABLES:
        execute(conn, f"DELETE FROM {table} WHERE grp = ?", (name,))
    execute(conn, "DELETE FROM eskit_groups WHERE name = ?", (name,))
