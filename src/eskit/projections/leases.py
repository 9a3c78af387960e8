"""Partitions of a projection held under leases: the table rows that let workers on many
machines share one projection without ever applying an event twice.

A projection's streams are split into a fixed number of partitions by a stable hash of the
stream name, so all events of a stream land in one partition and keep their order. Each
partition is one row: its checkpoint, its owner, the owner's lease expiry and a
*generation* that grows at every take-over. A worker advances a checkpoint only with a
statement that also checks owner, generation and expiry (``advance``), in the transaction
that writes the read model: a worker that was paused past its lease, and whose partition
someone else took, cannot commit; its whole batch rolls back.

A partition whose handler keeps failing on an event is *stuck*: the error and the event
are kept on its row, its checkpoint stays before the event, and whoever holds it leaves it
alone until an operator skips the event (``skip``).

Times are read from the database's clock, so machines whose clocks disagree still agree
on who holds a lease.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from typing import Final

import msgspec

from eskit.errors import EskitError
from eskit.projections import state as st
from eskit.projections.consumers import stuck as consumer_stuck
from eskit.projections.sql import Connection, columns, execute, lock_setup
from eskit.projections.sql import now_sql as _now
from eskit.store.model import RecordedEvent

SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS eskit_partitions (
        name       TEXT    NOT NULL,
        partition  BIGINT  NOT NULL,
        count      BIGINT  NOT NULL,  -- how many partitions the projection has (fixed)
        build      BIGINT  NOT NULL,  -- the projection's build the checkpoint belongs to
        position   BIGINT  NOT NULL,  -- checkpoint: this partition's events up to here applied
        owner      TEXT,              -- the worker holding the lease, NULL when free
        generation BIGINT  NOT NULL,  -- grows at every take-over: fences older owners out
        expires_at BIGINT  NOT NULL,  -- lease end, microseconds (database clock)
        error          TEXT,          -- why it is stuck, NULL while it is not
        error_position BIGINT,        -- the event it is stuck on
        error_event    TEXT,
        error_type     TEXT,
        PRIMARY KEY (name, partition)
    )""",
    """CREATE TABLE IF NOT EXISTS eskit_workers (
        name    TEXT    NOT NULL,
        worker  TEXT    NOT NULL,
        seen_at BIGINT  NOT NULL,     -- last heartbeat, microseconds (database clock)
        PRIMARY KEY (name, worker)
    )""",
)

STUCK_COLUMNS: Final = (
    ("error", "TEXT"),
    ("error_position", "BIGINT"),
    ("error_event", "TEXT"),
    ("error_type", "TEXT"),
)
"""Added after the first release of the table: ``prepare`` adds them to an older one."""


LEASE_COLUMNS: Final = "partition, generation, position, build, error_position"
"""What ``Lease`` is made of, in its order."""


class LeaseLost(EskitError):
    """A partition's lease was taken over or expired: the batch must not commit."""

    def __init__(self, name: str, partition: int) -> None:
        super().__init__(f"projection {name}: lost the lease of partition {partition}")
        self.name, self.partition = name, partition


class Lease(msgspec.Struct, frozen=True):
    """A partition this worker holds: fenced by ``generation``, applied up to ``position``."""

    partition: int
    generation: int
    position: int
    build: int
    error_position: int | None = None
    """The event the partition is stuck on; None while it is not stuck."""

    @property
    def stuck(self) -> bool:
        return self.error_position is not None


class PartitionRow(msgspec.Struct, frozen=True):
    """A partition as stored, for status pages."""

    partition: int
    position: int
    owner: str | None
    generation: int
    expires_at: int
    error: str | None = None
    error_position: int | None = None
    error_event: str | None = None
    error_type: str | None = None

    @property
    def stuck(self) -> bool:
        return self.error_position is not None


def partition_of(stream: str, count: int) -> int:
    """The partition of a stream: the same on every machine and Python run (CRC-32)."""
    return zlib.crc32(stream.encode()) % count


def prepare(conn: Connection, name: str, count: int, build: int, position: int) -> None:
    """Create the projection's partition rows (free, at ``position``) unless they exist,
    and refuse a worker configured with another partition count."""
    lock_setup(conn)
    for statement in SCHEMA:
        execute(conn, statement)
    have = columns(conn, "eskit_partitions")
    for column, kind in STUCK_COLUMNS:
        if column not in have:
            execute(conn, f"ALTER TABLE eskit_partitions ADD COLUMN {column} {kind}")
    row = execute(
        conn, "SELECT count FROM eskit_partitions WHERE name = ? LIMIT 1", (name,)
    ).fetchone()
    if row is not None:
        if row[0] != count:
            raise ValueError(
                f"projection {name} has {row[0]} partitions; this worker was started with"
                f" {count} (the count is fixed when the first worker starts)"
            )
        return
    for partition in range(count):
        execute(
            conn,
            "INSERT INTO eskit_partitions (name, partition, count, build, position, owner,"
            " generation, expires_at) VALUES (?, ?, ?, ?, ?, NULL, 0, 0)",
            (name, partition, count, build, position),
        )


def heartbeat(
    conn: Connection,
    name: str,
    worker: str,
    ttl: int,
    count: int,
    build: int,
    position: int,
) -> dict[int, Lease]:
    """Renew this worker's leases and take or give partitions towards a fair share
    (ceil(partitions / live workers)); return the leases it holds now.

    ``build``/``position`` are the projection's live build and checkpoint: a partition
    whose checkpoint belongs to an older build (the projection was rebuilt or reset since)
    starts again from there when it is taken.
    """
    now = _now(conn)
    execute(
        conn,
        f"INSERT INTO eskit_workers (name, worker, seen_at) VALUES (?, ?, {now})"
        f" ON CONFLICT (name, worker) DO UPDATE SET seen_at = excluded.seen_at",
        (name, worker),
    )
    execute(
        conn,
        f"DELETE FROM eskit_workers WHERE name = ? AND seen_at < {now} - ?",
        (name, 10 * ttl),
    )
    execute(  # leases on an older build (rebuilt or reset since): taken again from the start
        conn,
        "UPDATE eskit_partitions SET owner = NULL, expires_at = 0"
        " WHERE name = ? AND owner = ? AND build <> ?",
        (name, worker, build),
    )
    held = {
        row[0]: Lease(*row)
        for row in execute(
            conn,
            f"UPDATE eskit_partitions SET expires_at = {now} + ?"
            f" WHERE name = ? AND owner = ? AND expires_at > {now}"
            f" RETURNING {LEASE_COLUMNS}",
            (ttl, name, worker),
        ).fetchall()
    }
    (live,) = execute(
        conn,
        f"SELECT COUNT(*) FROM eskit_workers WHERE name = ? AND seen_at > {now} - ?",
        (name, ttl),
    ).fetchone()
    share = math.ceil(count / max(1, live))
    for partition in sorted(held, reverse=True)[: max(0, len(held) - share)]:
        release(conn, name, worker, [partition])
        del held[partition]
    if len(held) < share:
        free = execute(
            conn,
            f"SELECT partition FROM eskit_partitions WHERE name = ?"
            f" AND (owner IS NULL OR expires_at <= {now}) ORDER BY partition LIMIT ?",
            (name, share - len(held)),
        ).fetchall()
        for (partition,) in free:
            lease = _take(conn, name, partition, worker, ttl, build, position)
            if lease is not None:
                held[partition] = lease
    return {p: held[p] for p in sorted(held)}


def _take(
    conn: Connection,
    name: str,
    partition: int,
    worker: str,
    ttl: int,
    build: int,
    position: int,
) -> Lease | None:
    """Take a free or expired partition; None if another worker was faster. A partition
    of an older build starts again from ``position``, and is no longer stuck."""
    now = _now(conn)
    fresh = ", ".join(f"{c} = CASE WHEN build = ? THEN {c} ELSE NULL END" for c, _ in STUCK_COLUMNS)
    row = execute(
        conn,
        f"UPDATE eskit_partitions SET owner = ?, generation = generation + 1,"
        f" expires_at = {now} + ?, {fresh},"
        " position = CASE WHEN build = ? THEN position ELSE ? END, build = ?"
        f" WHERE name = ? AND partition = ? AND (owner IS NULL OR expires_at <= {now})"
        f" RETURNING {LEASE_COLUMNS}",
        (worker, ttl, *[build] * len(STUCK_COLUMNS), build, position, build, name, partition),
    ).fetchone()
    return None if row is None else Lease(*row)


def advance(
    conn: Connection, name: str, worker: str, leases: Mapping[int, Lease], position: int
) -> None:
    """Move every leased partition's checkpoint to ``position``, each in one statement that
    also checks the lease (owner, generation, build, expiry, not stuck) and that the
    checkpoint is still where the lease says (a batch whose COMMIT's answer was lost, in a
    failover, did move it); raise ``LeaseLost`` if any check fails, so the caller's
    transaction, read-model writes included, rolls back and the worker reads its leases
    again."""
    for lease in leases.values():
        if lease.position < position:
            _fenced(conn, name, worker, lease, "position = ?", (position,), lease.position)


def mark_stuck(
    conn: Connection, name: str, worker: str, lease: Lease, event: RecordedEvent, error: str
) -> None:
    """Stop the leased partition before ``event``, with the error, for an operator to see
    and skip; ``LeaseLost`` if the lease is no longer this worker's."""
    _fenced(
        conn,
        name,
        worker,
        lease,
        "error = ?, error_position = ?, error_event = ?, error_type = ?",
        (error, event.position, str(event.id), event.type),
    )


def _fenced(
    conn: Connection,
    name: str,
    worker: str,
    lease: Lease,
    changes: str,
    values: tuple[object, ...],
    at: int | None = None,
) -> None:
    """Change a partition's row only while ``lease`` holds it and it is not stuck (and,
    given ``at``, its checkpoint is there)."""
    now = _now(conn)
    where = "" if at is None else f" AND position = {int(at)}"
    changed = execute(
        conn,
        f"UPDATE eskit_partitions SET {changes} WHERE name = ? AND partition = ?"
        f" AND owner = ? AND generation = ? AND build = ? AND expires_at > {now}"
        f" AND error_position IS NULL{where}",
        (*values, name, lease.partition, worker, lease.generation, lease.build),
    ).rowcount
    if not changed:
        raise LeaseLost(name, lease.partition)


def skip(conn: Connection, name: str, reason: str, now: int) -> list[st.Skip]:
    """Step every stuck partition of ``name`` over the event it is stuck on, recording
    each skip as the runner does ([] if none is stuck). The generation grows, so a
    holder that has not seen the skip yet cannot commit over it: it looks again."""
    if "error_position" not in columns(conn, "eskit_partitions"):
        return []
    stuck = execute(
        conn,
        "SELECT partition, error_position, error_event, error_type, error FROM"
        " eskit_partitions WHERE name = ? AND error_position IS NOT NULL ORDER BY partition",
        (name,),
    ).fetchall()
    records = []
    for partition, position, event_id, event_type, error in stuck:
        record = st.Skip(name, position, event_id or "", event_type or "", error or "", reason, now)
        st.record_skip(conn, record)
        execute(
            conn,
            "UPDATE eskit_partitions SET position = ?, generation = generation + 1,"
            " error = NULL, error_position = NULL, error_event = NULL, error_type = NULL"
            " WHERE name = ? AND partition = ?",
            (position, name, partition),
        )
        records.append(record)
    return records


def skip_stuck(conn: Connection, name: str, reason: str, now: int) -> list[st.Skip]:
    """Skip what is stuck of ``name``: its stuck partitions' events, or a broker consumer
    group's (its read model in this database), or else the event the whole projection is
    stuck on (``state.skip``, which refuses one that is not stuck)."""
    return (
        skip(conn, name, reason, now)
        or consumer_stuck.skip(conn, name, reason, now)
        or [st.skip(conn, name, reason, now)]
    )


def release(conn: Connection, name: str, worker: str, partitions: list[int] | None) -> None:
    """Give partitions back (all of this worker's when ``partitions`` is None), so another
    worker takes them at its next heartbeat instead of waiting for the lease to expire."""
    if partitions is None:
        execute(
            conn,
            "UPDATE eskit_partitions SET owner = NULL, expires_at = 0 WHERE name = ? AND owner = ?",
            (name, worker),
        )
        execute(conn, "DELETE FROM eskit_workers WHERE name = ? AND worker = ?", (name, worker))
        return
    for partition in partitions:
        execute(
            conn,
            "UPDATE eskit_partitions SET owner = NULL, expires_at = 0"
            " WHERE name = ? AND partition = ? AND owner = ?",
            (name, partition, worker),
        )


def partitions(conn: Connection, name: str) -> list[PartitionRow]:
    """The projection's partitions as stored ([] if it never ran partitioned). A table
    from before the stuck columns (no worker of this version started yet) reads as
    never stuck."""
    have = columns(conn, "eskit_partitions")
    if not have:
        return []
    stuck = ", ".join(c if c in have else "NULL" for c, _ in STUCK_COLUMNS)
    rows = execute(
        conn,
        f"SELECT partition, position, owner, generation, expires_at, {stuck}"
        " FROM eskit_partitions WHERE name = ? ORDER BY partition",
        (name,),
    ).fetchall()
    return [PartitionRow(*row) for row in rows]
