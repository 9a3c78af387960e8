"""Partitions of a projection held under leases: the table rows that let workers on many
machines share one projection without ever applying an event twice.

A projection's streams are split into a fixed number of partitions by a stable hash of the
stream name, so all events of a stream land in one partition and keep their order. Each
partition is one row: its checkpoint, its owner, the owner's lease expiry and a
*generation* that grows at every take-over. A worker advances a checkpoint only with a
statement that also checks owner, generation and expiry (``advance``), in the transaction
that writes the read model: a worker that was paused past its lease, and whose partition
someone else took, cannot commit; its whole batch rolls back.

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
from eskit.projections.sql import Connection, execute, is_sqlite, kind_of, lock_setup

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
        PRIMARY KEY (name, partition)
    )""",
    """CREATE TABLE IF NOT EXISTS eskit_workers (
        name    TEXT    NOT NULL,
        worker  TEXT    NOT NULL,
        seen_at BIGINT  NOT NULL,     -- last heartbeat, microseconds (database clock)
        PRIMARY KEY (name, worker)
    )""",
)


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


class PartitionRow(msgspec.Struct, frozen=True):
    """A partition as stored, for status pages."""

    partition: int
    position: int
    owner: str | None
    generation: int
    expires_at: int


def partition_of(stream: str, count: int) -> int:
    """The partition of a stream: the same on every machine and Python run (CRC-32)."""
    return zlib.crc32(stream.encode()) % count


def _now(conn: Connection) -> str:
    """SQL for the database's clock in microseconds since 1970."""
    if is_sqlite(conn):
        return "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)"
    return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)"


def prepare(conn: Connection, name: str, count: int, build: int, position: int) -> None:
    """Create the projection's partition rows (free, at ``position``) unless they exist,
    and refuse a worker configured with another partition count."""
    lock_setup(conn)
    for statement in SCHEMA:
        execute(conn, statement)
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
            " RETURNING partition, generation, position, build",
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
    """Take a free or expired partition; None if another worker was faster."""
    now = _now(conn)
    row = execute(
        conn,
        f"UPDATE eskit_partitions SET owner = ?, generation = generation + 1,"
        f" expires_at = {now} + ?,"
        " position = CASE WHEN build = ? THEN position ELSE ? END, build = ?"
        f" WHERE name = ? AND partition = ? AND (owner IS NULL OR expires_at <= {now})"
        " RETURNING partition, generation, position, build",
        (worker, ttl, build, position, build, name, partition),
    ).fetchone()
    return None if row is None else Lease(*row)


def advance(
    conn: Connection, name: str, worker: str, leases: Mapping[int, Lease], position: int
) -> None:
    """Move every leased partition's checkpoint to ``position``, each in one statement that
    also checks the lease (owner, generation, build, expiry); raise ``LeaseLost`` if any
    check fails, so the caller's transaction, read-model writes included, rolls back."""
    now = _now(conn)
    for lease in leases.values():
        if lease.position >= position:
            continue
        changed = execute(
            conn,
            f"UPDATE eskit_partitions SET position = ? WHERE name = ? AND partition = ?"
            f" AND owner = ? AND generation = ? AND build = ? AND expires_at > {now}",
            (position, name, lease.partition, worker, lease.generation, lease.build),
        ).rowcount
        if not changed:
            raise LeaseLost(name, lease.partition)


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
    """The projection's partitions as stored ([] if it never ran partitioned)."""
    if kind_of(conn, "eskit_partitions") != "table":
        return []
    rows = execute(
        conn,
        "SELECT partition, position, owner, generation, expires_at FROM eskit_partitions"
        " WHERE name = ? ORDER BY partition",
        (name,),
    ).fetchall()
    return [PartitionRow(*row) for row in rows]
