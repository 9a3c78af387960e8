"""The PostgreSQL backend's reads: each a function of a pooled connection (in autocommit
mode), so the engine runs it with its retry (``PostgresEngine._read``) and a projection in
its own transaction (``PostgresStore.page_in``).

Readers read a page and the committed head in one statement (one snapshot): every event at
or below the head is committed, because commit order is position order.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any, Final

import msgspec
import psycopg

from eskit.errors import StreamDeleted
from eskit.store import rules
from eskit.store.chain import ChainRow
from eskit.store.engine import versions_up_to
from eskit.store.model import RawData, RecordedEvent, Snapshot, StreamInfo, StreamMetadata
from eskit.store.rules import clamp
from eskit.store.sqlite_writer import micros, moment

LIVE, SOFT_DELETED, TOMBSTONED = 0, 1, 2
"""A stream's ``state`` in ``eskit_streams`` (no row: live)."""
_STATUSES: Final = {None: "live", LIVE: "live", SOFT_DELETED: "deleted", TOMBSTONED: "tombstoned"}
_COLUMNS: Final = (
    "id, stream, version, position, type, data, metadata, recorded_at, content_type,"
    " raw_data, raw_metadata"
)
_ROW: Final = f"{_COLUMNS}, NULL"
"""An event as ``decode`` takes it: its columns and one more (a page's committed head)."""
_ROW_WIDTH: Final = _ROW.count(",") + 1
Connection = psycopg.Connection[Any]
Rows = list[tuple[Any, ...]]

_SQL: Final = rules.SqlNames("eskit_events", "%s", "greatest")
"""What ``rules.version_conditions`` writes a page's conditions in."""


def decode(rows: Sequence[tuple[Any, ...]]) -> list[RecordedEvent]:
    """Rows of ``_ROW`` as events (the last column is not the event's)."""
    decode_text, events = msgspec.json.decode, []
    last_micros, last_moment = -1, moment(0)  # the events of one commit share a time
    for row in rows:
        id_, stream, version, position, type_, data, metadata, recorded, kind, raw, meta, _ = row
        if recorded != last_micros:
            last_micros, last_moment = recorded, moment(recorded)
        events.append(
            RecordedEvent(
                id_,
                stream,
                version,
                position,
                type_,
                decode_text(data),
                decode_text(metadata),
                last_moment,
                None if kind is None else RawData(kind, raw),
                meta,
            )
        )
    return events


def page(rows: Rows, after: int, count: int) -> tuple[list[RecordedEvent], int]:
    """A page's events and where the next page starts: after its last event if it is
    full, else at the committed head (a short page searched the log up to it)."""
    head = rows[0][-1] or 0  # the one row of an empty page holds only the head
    events = decode(rows) if rows[0][0] is not None else []
    return events, (events[-1].position if len(events) == count else max(head, after))


def all_page(
    conn: Connection, after: int, count: int, types: tuple[str, ...] | None, category: str | None
) -> Rows:
    """The rows of a page of the log (``page`` reads them)."""
    sql, extra, prepare = page_query(types, category)
    cursor = conn.execute(sql, (clamp(after), *extra, count), prepare=prepare)
    return cursor.fetchall()


def all_page_backwards(
    conn: Connection,
    before: int,
    after: int,
    count: int,
    types: tuple[str, ...] | None,
    category: str | None,
) -> Rows:
    """The rows of a page of the log read backwards: ``after < position < before``, at
    most up to the committed head, newest first (``page_query``)."""
    sql, extra, prepare = page_query(types, category, backwards=True)
    cursor = conn.execute(sql, (clamp(after), clamp(before), *extra, count), prepare=prepare)
    return cursor.fetchall()


def stream_page(
    conn: Connection,
    stream: str,
    from_version: int | None,
    backwards: bool,
    count: int,
    now: dt.datetime,
) -> Rows:
    """The rows of a page of one stream, as its rules let readers see it at ``now``."""
    metadata = read_rules(conn, stream)
    return stream_rows(conn, stream, from_version, backwards, count, now, metadata)


def load_snapshot(conn: Connection, stream: str, snapshot_version: int, max_version: int) -> Any:
    """The row of the newest visible snapshot (``snapshot`` reads it)."""
    metadata = read_rules(conn, stream)
    return snapshot_row(conn, stream, snapshot_version, max_version, metadata)


_SNAPSHOT_AND_PAGE: Final = f"""
    WITH snap AS (
        SELECT version, state, recorded_at FROM eskit_snapshots
        WHERE stream = %(s)s AND snapshot_version = %(v)s AND version <= %(m)s
        ORDER BY version DESC LIMIT 1)
    SELECT 0, r.state, r.truncate_before, r.max_count, r.max_age,
           snap.version, snap.state, snap.recorded_at, {", ".join(["NULL"] * _ROW_WIDTH)}
    FROM (SELECT 1) AS one
    LEFT JOIN eskit_streams AS r ON r.stream = %(s)s
    LEFT JOIN snap ON true
    UNION ALL
    (SELECT 1, {", ".join(["NULL"] * 7)}, {_ROW} FROM eskit_events
     WHERE stream = %(s)s AND version > coalesce((SELECT version FROM snap), -1)
       AND version <= %(m)s
     ORDER BY version LIMIT %(n)s)"""
"""``snapshot_and_page`` in one statement for a stream without a row in ``eskit_streams``
(no rules, never deleted: every event visible, every snapshot usable), and that row if
there is one. Rows: one of kind 0 (the stream's row, the newest snapshot), then the events
after the snapshot, kind 1, each as ``_ROW`` from the ninth column on."""


def snapshot_and_page(
    conn: Connection,
    stream: str,
    snapshot_version: int,
    max_version: int,
    count: int,
    now: dt.datetime,
) -> tuple[Any, Rows]:
    """The newest visible snapshot's row (``snapshot`` reads it) and the rows of the first
    page after it, on one connection: one round trip for a stream without rules (most
    streams), two more when it has them."""
    bound = clamp(max_version)
    rows = conn.execute(
        _SNAPSHOT_AND_PAGE, {"s": stream, "v": snapshot_version, "m": bound, "n": count}
    ).fetchall()
    header = next(row for row in rows if row[0] == 0)
    state, *limits = header[1:5]
    if state is None:
        return (None if header[5] is None else header[5:8]), [r[8:] for r in rows if r[0] == 1]
    if state == TOMBSTONED:
        raise StreamDeleted(stream)
    metadata = StreamMetadata(*limits)
    row = snapshot_row(conn, stream, snapshot_version, max_version, metadata)
    start = None if row is None else row[0] + 1
    wanted = min(count, versions_up_to(max_version, start))
    return row, stream_rows(conn, stream, start, False, wanted, now, metadata)


_EVENTS_AFTER: Final = f"""
    SELECT e.*, r.state
    FROM (SELECT (SELECT state FROM eskit_streams WHERE stream = %(s)s) AS state) AS r
    LEFT JOIN LATERAL (
        SELECT {_COLUMNS} FROM eskit_events
        WHERE stream = %(s)s AND version > %(v)s AND r.state IS NULL
        ORDER BY version LIMIT %(n)s) AS e ON true"""
"""``events_after`` in one statement: the events after a version, each as ``_ROW`` whose
last column is the state of the stream's row in ``eskit_streams`` (NULL: it has none), or
one row of NULLs and that state when there are no such events (or the row exists: its
events are not read then)."""


def events_after(conn: Connection, stream: str, version: int, count: int) -> Rows | None:
    """The rows of the events of ``stream`` after ``version`` (``decode`` reads them) if it
    never hid one and they are at most ``count``, else None; raises if tombstoned.

    A stream hides events only once it has a row in ``eskit_streams`` (read rules, a
    delete; a scavenge removes events only of streams with a row, and writes one when it
    removes a stream's last event), and that row is never removed; events are never
    changed. The events and the row are read in one statement, so in one snapshot (READ
    COMMITTED gives each statement its own): when the row is missing from it, every event
    in it was visible, and these follow on from the first ``version + 1``."""
    rows = conn.execute(_EVENTS_AFTER, {"s": stream, "v": version, "n": count + 1}).fetchall()
    state = rows[0][-1]
    if state == TOMBSTONED:
        raise StreamDeleted(stream)
    if state is not None or len(rows) > count:
        return None
    return rows if rows[0][0] is not None else []


def metadata(conn: Connection, stream: str) -> StreamMetadata:
    cursor = conn.execute(
        "SELECT truncate_before, max_count, max_age, custom FROM eskit_streams WHERE stream = %s",
        (stream,),
    )
    row = cursor.fetchone()
    return StreamMetadata() if row is None else rules.loaded_metadata(*row)


def stream_version(conn: Connection, stream: str) -> int | None:
    last, state = stream_state(conn, stream)
    return None if state == SOFT_DELETED else last


def chain_page(conn: Connection, after: int, limit: int) -> list[ChainRow]:
    cursor = conn.execute(
        "SELECT position, stream, category, version, id, type, data, metadata,"
        " recorded_at, hash, content_type, raw_data, raw_metadata FROM eskit_events"
        " WHERE position > %s ORDER BY position LIMIT %s",
        (after, limit),
    )
    return [
        ChainRow(position, stream, category, version, id_.bytes, *rest)
        for position, stream, category, version, id_, *rest in cursor.fetchall()
    ]


def find_event(conn: Connection, event_id: uuid.UUID) -> RecordedEvent | None:
    cursor = conn.execute(f"SELECT {_ROW} FROM eskit_events WHERE id = %s", (event_id,))
    rows = cursor.fetchall()
    return decode(rows)[0] if rows else None


def list_streams(
    conn: Connection, category: str | None, after: str | None, limit: int
) -> list[StreamInfo]:
    """A skip scan over the (stream, version) index: one seek per stream listed."""
    in_category = "" if category is None else " AND category = %(c)s"
    sql = f"""
        WITH RECURSIVE names(stream) AS (
            (SELECT stream FROM eskit_events WHERE stream > %(a)s{in_category}
             ORDER BY stream LIMIT 1)
            UNION ALL
            SELECT (SELECT e.stream FROM eskit_events e WHERE e.stream > names.stream
                    {in_category.replace("category", "e.category")}
                    ORDER BY e.stream LIMIT 1)
            FROM names WHERE names.stream IS NOT NULL
        )
        SELECT n.stream, last.version, last.position, last.type, last.recorded_at, s.state
        FROM (SELECT stream FROM names WHERE stream IS NOT NULL LIMIT %(l)s) AS n
        CROSS JOIN LATERAL (
            SELECT version, position, type, recorded_at FROM eskit_events
            WHERE stream = n.stream ORDER BY version DESC LIMIT 1) AS last
        LEFT JOIN eskit_streams AS s ON s.stream = n.stream
        ORDER BY n.stream"""
    cursor = conn.execute(sql, {"a": after or "", "c": category, "l": limit})
    return [
        StreamInfo(stream, version, position, type_, moment(at), _STATUSES[state])  # type: ignore[arg-type]
        for stream, version, position, type_, at, state in cursor.fetchall()
    ]


def page_query(
    types: tuple[str, ...] | None, category: str | None, backwards: bool = False
) -> tuple[str, list[Any], bool | None]:
    """A page of the log and the committed head, in one statement and one snapshot: events
    after a position, up to the head, filtered; each row ends with the head, and an empty
    page is one row of NULLs and the head. Every event at or below the head is committed
    (commit order is position order), so a short page means the log was searched up to it.

    Each filter is written so that an index yields events already in position order, and
    the scan stops after one page: one type uses (type, position), one category
    (category, position); several types are a filter on the position scan, because
    ``type = ANY(...)`` on (type, position) would read every event of those types in the
    range and sort them (the planner picks that on a young table, before statistics).
    Filtered pages are planned afresh each time (``prepare=False``): a generic plan cannot
    see how narrow the range is. The unfiltered page has one plan whatever the table (the
    primary key's range), so psycopg may prepare it (``None``): no parsing and planning
    per page. ``backwards``: below a position too (a second parameter), newest first."""
    where = ["position > %s", "position <= h.head"]
    if backwards:
        where.append("position < %s")
    extra: list[Any] = []
    if types is not None and len(types) == 1:
        where.append("type = %s")
        extra.append(types[0])
    elif types is not None:
        where.append("type || '' = ANY(%s)")  # an expression: keeps the type index out
        extra.append(list(types))
    if category is not None:
        where.append("category = %s")
        extra.append(category)
    conditions = " AND ".join(where)
    # The head as a one-row subquery, not a join with eskit_head: the planner would guess
    # that table's size from its pages (thousands of rows) and JIT-compile every page.
    sql = (
        f"SELECT e.*, h.head FROM (SELECT (SELECT position FROM eskit_head) AS head) AS h"
        f" LEFT JOIN LATERAL (SELECT {_COLUMNS} FROM eskit_events WHERE {conditions}"
        f" ORDER BY position{' DESC' if backwards else ''} LIMIT %s) AS e ON true"
    )
    return sql, extra, None if types is None and category is None else False


def head(conn: Connection) -> int:
    cursor = conn.execute("SELECT position FROM eskit_head")
    row = cursor.fetchone()
    return 0 if row is None else int(row[0])


def stream_state(conn: Connection, stream: str) -> tuple[int | None, int]:
    """The stream's last version (None: no events) and state; raises if tombstoned."""
    cursor = conn.execute(
        "SELECT coalesce((SELECT max(version) FROM eskit_events WHERE stream = %(s)s),"
        " (SELECT last_version FROM eskit_streams WHERE stream = %(s)s)),"
        " (SELECT state FROM eskit_streams WHERE stream = %(s)s)",
        {"s": stream},
    )
    row = cursor.fetchone()
    assert row is not None
    last, state = row
    if state == TOMBSTONED:
        raise StreamDeleted(stream)
    return last, LIVE if state is None else state


def snapshot_row(
    conn: Connection,
    stream: str,
    snapshot_version: int,
    max_version: int,
    metadata: StreamMetadata | None,
) -> Any:
    """The newest visible snapshot's version, state and time (None: there is none)."""
    lowest = 0 if metadata is None else rules.lowest_snapshot_version(metadata)
    cursor = conn.execute(
        "SELECT version, state, recorded_at FROM eskit_snapshots"
        " WHERE stream = %s AND snapshot_version = %s AND version <= %s"
        " AND version >= %s ORDER BY version DESC LIMIT 1",
        (stream, snapshot_version, clamp(max_version), lowest),
    )
    return cursor.fetchone()


def snapshot(stream: str, snapshot_version: int, row: Any) -> Snapshot | None:
    if row is None:
        return None
    version, state, recorded_at = row
    return Snapshot(
        stream, version, snapshot_version, msgspec.json.decode(state), moment(recorded_at)
    )


def stream_rows(
    conn: Connection,
    stream: str,
    from_version: int | None,
    backwards: bool,
    count: int,
    now: dt.datetime,
    metadata: StreamMetadata | None,
) -> list[tuple[Any, ...]]:
    """Up to ``count`` rows of the stream's visible events from ``from_version``."""
    start, first, oldest = rules.read_bounds(metadata, now, from_version, backwards)
    most = None if metadata is None else metadata.max_count
    versions, parameters = rules.version_conditions(_SQL, stream, start, first, most, backwards)
    at = -1 if oldest is None else micros(oldest)
    descending = " DESC" if backwards else ""
    cursor = conn.execute(
        f"SELECT {_ROW} FROM eskit_events WHERE stream = %s AND {versions}"
        f" AND recorded_at >= %s ORDER BY version{descending}"
        " LIMIT %s",
        (stream, *parameters, at, count),
    )
    return cursor.fetchall()


def read_rules(conn: Connection, stream: str) -> StreamMetadata | None:
    cursor = conn.execute(
        "SELECT state, truncate_before, max_count, max_age FROM eskit_streams WHERE stream = %s",
        (stream,),
    )
    row = cursor.fetchone()
    if row is None:
        return None
    if row[0] == TOMBSTONED:
        raise StreamDeleted(stream)
    return StreamMetadata(*row[1:])
