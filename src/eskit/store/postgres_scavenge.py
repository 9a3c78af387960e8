"""Scavenging a PostgreSQL store (``eskit.store.scavenge``) on a connection of its own, with
the rights of the role the store was opened as, which must own the tables: the application
role made by ``eskit migrate --app-role`` may read the removals but neither record one nor
delete an event. Each step is one transaction that locks only the rows of the streams it
scavenges; appends never wait for it on the log's head."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

import psycopg

from eskit.errors import StoreError
from eskit.store.scavenge import POSTGRES as DIALECT
from eskit.store.scavenge import (
    Removal,
    Step,
    remove_through,
    removed_page,
    restore_rows,
    scavenge_streams,
    stream_rows,
)

T = TypeVar("T")
MAINTAINED: Final = ("eskit_events", "eskit_removals", "eskit_streams", "eskit_snapshots")


class PostgresScavenger:
    def __init__(self, conninfo: str, schema: str) -> None:
        self.conninfo, self.schema = conninfo, schema
        self._conn: psycopg.Connection[Any] | None = None

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10)
            except psycopg.Error as error:
                raise StoreError(f"cannot connect to PostgreSQL: {error}") from error
            conn.execute(f'SET search_path TO "{self.schema}"')
            self._conn = conn
        return self._conn

    def candidates(self, after: str, limit: int) -> list[str]:
        cursor = self.conn.execute(
            "SELECT stream FROM eskit_streams WHERE stream > %s ORDER BY stream LIMIT %s",
            (after, limit),
        )
        return [row[0] for row in cursor.fetchall()]

    def count_candidates(self) -> int:
        row = self.conn.execute("SELECT count(*) FROM eskit_streams").fetchone()
        return 0 if row is None else int(row[0])

    def step(self, streams: Sequence[str], budget: int, now: dt.datetime, by: str) -> Step:
        return self._owned(lambda conn: scavenge_streams(conn, DIALECT, streams, budget, now, by))

    def _owned(self, run: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``run`` in a transaction of its own, which needs the owner's rights."""
        conn = self.conn
        try:
            with conn.transaction():
                return run(conn)
        except psycopg.errors.InsufficientPrivilege as error:
            raise StoreError(
                f"scavenging schema {self.schema} needs the owner's rights (to record removals"
                f" and delete events); this role has none: {' '.join(str(error).split())}"
            ) from error

    def rows(self, stream: str, after_version: int, limit: int) -> list[tuple[Any, ...]]:
        return [
            (p, i.bytes, *rest)
            for p, i, *rest in stream_rows(self.conn, DIALECT, stream, after_version, limit)
        ]

    def remove_through(self, stream: str, version: int, now: dt.datetime, by: str) -> int | None:
        return self._owned(lambda conn: remove_through(conn, DIALECT, stream, version, now, by))

    def restore(self, rows: Sequence[tuple[Any, ...]]) -> int:
        as_stored = [(p, uuid.UUID(bytes=i), *rest) for p, i, *rest in rows]
        return self._owned(lambda conn: restore_rows(conn, DIALECT, as_stored))

    def removed_page(self, after: int, limit: int) -> list[Removal]:
        return removed_page(self.conn, DIALECT, after, limit)

    def size(self) -> int:
        row = self.conn.execute(
            "SELECT sum(pg_total_relation_size(format('%%I.%%I', current_schema(), t)::regclass))"
            " FROM unnest(%s::text[]) AS t",
            (list(MAINTAINED),),
        ).fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    def maintain(self, full: bool) -> str:
        tables = ", ".join(MAINTAINED)
        if full:  # takes an exclusive lock and rewrites: the space goes back to the system
            self.conn.execute(f"VACUUM (FULL, ANALYZE) {tables}")
            return f"VACUUM (FULL, ANALYZE) {tables}"
        self.conn.execute(f"VACUUM (ANALYZE) {tables}")  # online: the space is reused
        return f"VACUUM (ANALYZE) {tables}"

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
