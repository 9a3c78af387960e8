"""The SQLite store's reads: functions of a connection, run on a reader of the pool (or on
the write connection, inside a write transaction that reads the log: a projection's batch).
"""

from __future__ import annotations

import datetime as dt
import operator
import sqlite3
import uuid
from typing import Any, Final

import msgspec

from eskit.errors import StreamDeleted
from eskit.store import rules, sqlite_chain
from eskit.store.chain import ChainRow
from eskit.store.model import (
    Page,
    RawData,
    RecordedEvent,
    Snapshot,
    StreamInfo,
    StreamMetadata,
    StreamStatus,
)
from eskit.store.planner import SOFT_DELETED, TOMBSTONED
from eskit.store.rules import clamp
from eskit.store.sqlite_writer import micros, moment, stream_state

_STATUSES: Final[dict[int | None, StreamStatus]] = {
    None: "live",
    0: "live",
    SOFT_DELETED: "deleted",
    TOMBSTONED: "tombstoned",
}
_COLUMNS: Final = (
    "id, stream, version, position, type, data, metadata, recorded_at, content_type,"
    " raw_data, raw_metadata"
)
_BIN16: Final = b"\xc4\x10"  # msgpack: 16 bytes of binary follow


class RowDecoder:
    """Turns rows into RecordedEvents (one per connection: it is not thread-safe).

    The ids of a page become UUIDs in one call: their 16 bytes are framed as a msgpack
    array of binaries that msgspec decodes in C (``uuid.UUID(bytes=...)`` costs 1.8 µs an
    id, SQL ``hex(id)`` about 1 µs a row). Events of one commit share a timestamp, so the
    last datetime built is reused.
    """

    def __init__(self) -> None:
        self._micros = -1
        self._moment = moment(0)
        self._decode = msgspec.json.decode
        self._decode_ids = msgspec.msgpack.Decoder(list[uuid.UUID]).decode

    def __call__(self, rows: list[Any]) -> list[RecordedEvent]:
        decode = self._decode
        ids = self._decode_ids(
            b"\xdd" + len(rows).to_bytes(4, "big") + _BIN16 + _BIN16.join([row[0] for row in rows])
            if rows
            else b"\x90"
        )
        events = []
        for id_, row in zip(ids, rows, strict=True):
            _, stream, version, position, type_, data, metadata, recorded, kind, raw, meta = row
            if recorded != self._micros:
                self._micros, self._moment = recorded, moment(recorded)
            events.append(
                RecordedEvent(
                    id_,
                    stream,
                    version,
                    position,
                    type_,
                    decode(data),
                    decode(metadata),
                    self._moment,
                    None if kind is None else RawData(kind, raw),
                    meta,
                )
            )
        return events


_SQL: Final = rules.SqlNames("events", "?", "max")
"""What ``rules.version_conditions`` writes a page's conditions in."""


def head(conn: sqlite3.Connection) -> int:
    """The newest position given: it never moves back, not even when scavenging removes
    the newest events (``sqlite_chain.head``)."""
    return sqlite_chain.head(conn)


def metadata(conn: sqlite3.Connection, stream: str) -> StreamMetadata:
    row = conn.execute(
        "SELECT truncate_before, max_count, max_age, custom FROM streams WHERE stream = ?",
        (stream,),
    ).fetchone()
    return StreamMetadata() if row is None else rules.loaded_metadata(*row)


def stream_version(conn: sqlite3.Connection, stream: str) -> int | None:
    last, state = stream_state(conn, stream)
    return None if state == SOFT_DELETED else last


def find_event(
    conn: sqlite3.Connection, decode: RowDecoder, event_id: uuid.UUID
) -> RecordedEvent | None:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM events WHERE id = ?", (event_id.bytes,)).fetchall()
    return decode(rows)[0] if rows else None


def chain_page(conn: sqlite3.Connection, after: int, limit: int) -> list[ChainRow]:
    rows = conn.execute(
        "SELECT position, stream, category, version, id, type, data, metadata,"
        " recorded_at, hash, content_type, raw_data, raw_metadata FROM events"
        " WHERE position > ? ORDER BY position LIMIT ?",
        (after, limit),
    ).fetchall()
    return [ChainRow(*row) for row in rows]


def list_streams(
    conn: sqlite3.Connection, category: str | None, after: str | None, limit: int
) -> list[StreamInfo]:
    """Walks the (stream, version) index from name to name: each step is one seek to the
    next stream and one to its last version, so long streams cost no more than short
    ones (a GROUP BY would read every version of every stream listed)."""
    first, step = "stream > ?1", "stream > names.stream"
    if category is not None:
        # A category's streams are `c` and `c-...`: all between `c` and `c.` ('.' follows
        # '-'); the category column weeds out the rare names like `c!x` in between (its
        # unary + keeps SQLite on the stream index rather than scanning the category's).
        if after is None or after < category:
            first = "stream >= ?2"
        in_category = " AND stream < ?2 || '.' AND +category = ?2"
        first, step = first + in_category, step + in_category
    sql = f"""
        WITH RECURSIVE names(stream) AS (
            SELECT (SELECT min(stream) FROM events WHERE {first})
            UNION ALL
            SELECT (SELECT min(stream) FROM events WHERE {step})
            FROM names WHERE names.stream IS NOT NULL
            LIMIT ?3
        )
        SELECT e.stream, e.version, e.position, e.type, e.recorded_at, s.state
        FROM names
        JOIN events AS e ON e.stream = names.stream
            AND e.version = (SELECT max(version) FROM events WHERE stream = names.stream)
        LEFT JOIN streams AS s ON s.stream = names.stream
        ORDER BY e.stream"""
    rows = conn.execute(sql, (after or "", category, limit)).fetchall()
    return [
        StreamInfo(stream, version, position, type_, moment(at), _STATUSES[state])
        for stream, version, position, type_, at, state in rows
    ]


def stream_page(
    conn: sqlite3.Connection,
    decode: RowDecoder,
    stream: str,
    from_version: int | None,
    backwards: bool,
    count: int,
    now: dt.datetime,
) -> list[RecordedEvent]:
    """Up to ``count`` visible events of ``stream`` from ``from_version`` (None: first or
    last), as its read rules leave them at ``now``; raises if tombstoned."""
    found = _read_rules(conn, stream)
    start, first, oldest = rules.read_bounds(found, now, from_version, backwards)
    most = None if found is None else found.max_count
    versions, parameters = rules.version_conditions(_SQL, stream, start, first, most, backwards)
    at = -1 if oldest is None else micros(oldest)
    descending = " DESC" if backwards else ""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM events WHERE stream = ? AND {versions}"
        f" AND recorded_at >= ? ORDER BY version{descending}"
        " LIMIT ?",
        (stream, *parameters, at, count),
    ).fetchall()
    return decode(rows)


def events_after(
    cursor: sqlite3.Cursor, decode: RowDecoder, stream: str, version: int, count: int
) -> list[RecordedEvent] | None:
    """The events of ``stream`` after ``version`` if it never hid one and they are at most
    ``count``, else None; raises ``StreamDeleted`` if tombstoned.

    A stream hides events only once it has a row in ``streams`` (read rules, a delete), and
    that row is never removed. One statement reads the events and that row in one snapshot
    (one probe less than two statements; a join sorts through a temporary B-tree)."""
    rows = cursor.execute(_EVENTS_AFTER, (stream, version, count + 1)).fetchall()
    if not rows:
        return []  # the common case: a kept state that is current
    # A compound SELECT has no order of its own (asking for one costs a sort in SQLite):
    # the few rows are put in version order here, the stream's row (version -1) first.
    rows.sort(key=_version)
    if rows[0][0] is None:
        if rows[0][1] == TOMBSTONED:
            raise StreamDeleted(stream)
        return None
    return None if len(rows) > count else decode(rows)


_EVENTS_AFTER: Final = (
    "SELECT NULL, state, -1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL"
    " FROM streams WHERE stream = ?1"
    f" UNION ALL SELECT * FROM (SELECT {_COLUMNS} FROM events"
    " WHERE stream = ?1 AND version > ?2 ORDER BY version LIMIT ?3)"
)
"""``events_after``'s statement: the stream's row in ``streams`` if any (no event id, its
state second, version -1), then the events after a version."""
_version: Final = operator.itemgetter(2)


def log_page(
    conn: sqlite3.Connection,
    decode: RowDecoder,
    after: int,
    limit: int,
    types: tuple[str, ...] | None = None,
    category: str | None = None,
) -> Page:
    """Up to ``limit`` matching events after ``after``, and where the next page starts."""
    conditions, extra = _log_filter(types, category)
    sql = f"SELECT {_COLUMNS} FROM events WHERE {conditions} ORDER BY position LIMIT ?"
    # The head is read first: every event at or below it is committed (commit order is
    # position order), so when the page is not full the log was searched up to it.
    top = head(conn)
    rows = conn.execute(sql, (clamp(after), top, *extra, limit)).fetchall()
    events = decode(rows)
    return Page(events, events[-1].position if len(events) == limit else max(top, after))


def log_page_backwards(
    conn: sqlite3.Connection,
    decode: RowDecoder,
    before: int,
    after: int,
    limit: int,
    types: tuple[str, ...] | None,
    category: str | None,
) -> list[RecordedEvent]:
    """Up to ``limit`` matching events with ``after < position < before``, newest first: a
    walk down the position index (or (category, position)) that stops after one page."""
    conditions, extra = _log_filter(types, category)
    sql = f"SELECT {_COLUMNS} FROM events WHERE {conditions} ORDER BY position DESC LIMIT ?"
    rows = conn.execute(sql, (clamp(after), clamp(before) - 1, *extra, limit)).fetchall()
    return decode(rows)


def _log_filter(types: tuple[str, ...] | None, category: str | None) -> tuple[str, list[Any]]:
    """The WHERE clause of a page of the log (after the lowest and highest positions, its
    first two parameters) and the values of its filters."""
    where = ["position > ?", "position <= ?"]
    extra: list[Any] = []
    if types is not None:
        where.append(f"type IN ({', '.join('?' * len(types))})")
        extra.extend(types)
    if category is not None:
        where.append("category = ?")
        extra.append(category)
    return " AND ".join(where), extra


def snapshot_row(
    conn: sqlite3.Connection, stream: str, snapshot_version: int, max_version: int
) -> tuple[int, str, int] | None:
    """The newest visible snapshot's version, state and time; raises if tombstoned."""
    found = _read_rules(conn, stream)
    lowest = 0 if found is None else rules.lowest_snapshot_version(found)
    row: tuple[int, str, int] | None = conn.execute(
        "SELECT version, state, recorded_at FROM snapshots"
        " WHERE stream = ? AND snapshot_version = ? AND version <= ? AND version >= ?"
        " ORDER BY version DESC LIMIT 1",
        (stream, snapshot_version, max_version, lowest),
    ).fetchone()
    return row


def snapshot(
    stream: str, snapshot_version: int, row: tuple[int, str, int] | None
) -> Snapshot | None:
    if row is None:
        return None
    version, state, recorded_at = row
    return Snapshot(
        stream, version, snapshot_version, msgspec.json.decode(state), moment(recorded_at)
    )


def _read_rules(conn: sqlite3.Connection, stream: str) -> StreamMetadata | None:
    """The stream's read rules, None if it has no row (most streams); raises if tombstoned."""
    row = conn.execute(
        "SELECT state, truncate_before, max_count, max_age FROM streams WHERE stream = ?",
        (stream,),
    ).fetchone()
    if row is None:
        return None
    if row[0] == TOMBSTONED:
        raise StreamDeleted(stream)
    return StreamMetadata(*row[1:])
