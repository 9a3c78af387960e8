"""Stuck broker-fed consumers: where an event that keeps failing is kept, and its skip.

A broker consumer (JetStream, Redis Streams, RabbitMQ) whose handler keeps failing on an
event marks the event's partition stuck (Redis and RabbitMQ have one: ``0``), in the read
model's database so every worker of the group, in any process, sees it: none applies
that partition again, and the broker keeps the event unacked, until an operator skips it.
A skip records the event's id in the inbox, as if applied: its next delivery is dropped
as a repeat and acked, and the partition goes on. ``eskit projections skip`` and
``status`` reach a group through its read model's database (``groups``).
"""

from __future__ import annotations

import json
from typing import Final

import msgspec

from eskit.projections import state as st
from eskit.projections.sql import Connection, execute, kind_of
from eskit.store.model import RecordedEvent

SCHEMA: Final = """CREATE TABLE IF NOT EXISTS eskit_consumer_stuck (
    consumer   TEXT   NOT NULL,
    partition  BIGINT NOT NULL,   -- JetStream's partition; 0 for Redis and RabbitMQ
    position   BIGINT NOT NULL,   -- the event's position in the store's log
    event_id   TEXT   NOT NULL,
    event_type TEXT   NOT NULL,
    error      TEXT   NOT NULL,
    stuck_at   BIGINT NOT NULL,   -- microseconds since 1970-01-01 UTC
    PRIMARY KEY (consumer, partition)
)"""


class StuckPartition(msgspec.Struct, frozen=True):
    """A partition of a consumer group held back by the event it keeps failing on."""

    partition: int
    position: int
    event_id: str
    event_type: str
    error: str
    stuck_at: int


def mark_stuck(
    conn: Connection, consumer: str, partition: int, event: RecordedEvent, error: str, now: int
) -> StuckPartition:
    row = StuckPartition(partition, event.position, str(event.id), event.type, error, now)
    execute(
        conn,
        "INSERT INTO eskit_consumer_stuck (consumer, partition, position, event_id,"
        " event_type, error, stuck_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (consumer, partition) DO UPDATE SET position = excluded.position,"
        " event_id = excluded.event_id, event_type = excluded.event_type,"
        " error = excluded.error, stuck_at = excluded.stuck_at",
        (consumer, *msgspec.structs.astuple(row)),
    )
    return row


def stuck(conn: Connection, consumer: str) -> dict[int, StuckPartition]:
    """The consumer's stuck partitions, by partition."""
    rows = execute(
        conn,
        "SELECT partition, position, event_id, event_type, error, stuck_at"
        " FROM eskit_consumer_stuck WHERE consumer = ? ORDER BY partition",
        (consumer,),
    ).fetchall()
    return {row[0]: StuckPartition(*row) for row in rows}


def skip(conn: Connection, consumer: str, reason: str, now: int) -> list[st.Skip]:
    """Step every stuck partition of ``consumer`` over its event (recorded in the inbox
    as applied, and in ``eskit_projection_skips`` with ``reason``); [] if none is."""
    if kind_of(conn, "eskit_consumer_stuck") != "table":
        return []
    records = []
    for row in stuck(conn, consumer).values():
        execute(
            conn,
            "INSERT INTO eskit_consumer_inbox (consumer, event_id, position, applied_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (consumer, row.event_id, row.position, now),
        )
        record = st.Skip(
            consumer, row.position, row.event_id, row.event_type, row.error, reason, now
        )
        st.ensure_schema(conn)
        st.record_skip(conn, record)
        records.append(record)
    execute(conn, "DELETE FROM eskit_consumer_stuck WHERE consumer = ?", (consumer,))
    return records


class Group(msgspec.Struct, frozen=True):
    """A broker consumer group as its read model stores it, for status screens."""

    name: str
    version: int
    tables: list[str]
    position: int
    """The newest event its inbox recorded (applied or skipped): how far it got."""
    stuck: list[StuckPartition]


def groups(conn: Connection) -> list[Group]:
    """Every consumer group whose read model lives in this database, by name ([] if none)."""
    if kind_of(conn, "eskit_consumers") != "table":
        return []
    rows = execute(
        conn,
        "SELECT c.name, c.version, c.tables, (SELECT max(position) FROM eskit_consumer_inbox i"
        " WHERE i.consumer = c.name) FROM eskit_consumers c ORDER BY c.name",
    ).fetchall()
    return [
        Group(name, version, json.loads(tables), position or 0, list(stuck(conn, name).values()))
        for name, version, tables, position in rows
    ]
