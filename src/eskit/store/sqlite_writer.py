"""The SQLite write connection and the transaction a group of writes commits in.

Writes reach it through a ``GroupCommit`` (``group_commit``): whichever thread leads the
group runs ``Writer.commit`` with every request waiting (up to ``max_batch``) in one
``BEGIN IMMEDIATE`` transaction with a single COMMIT, so concurrent callers share one fsync.
Each request is checked on its own (tombstone, idempotent retry, expected version) against
the stream heads as they stand inside the group, so a conflict fails that request alone. A
request may append to several streams (``append_many``; ``append`` is the case of one): all
its parts are checked before any of their rows is queued, so a refused request leaves
nothing in the group. Rows of all accepted appends are inserted together, in multi-row
INSERTs of up to ``_CHUNK`` rows. Callers are answered only after COMMIT returned; if the
transaction fails, every caller of the group gets the error.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias, cast

import msgspec

from eskit.errors import StoreError, StreamDeleted
from eskit.store import sqlite_schema
from eskit.store.group_commit import Outcome
from eskit.store.model import RecordedEvent, raw_data
from eskit.store.planner import (
    LIVE,
    NEW_STREAM,
    TOMBSTONED,
    UNTOUCHED,
    Head,
    Plan,
    Planner,
    Row,
    lookups,
)
from eskit.store.rules import ExistingEvent, PreparedAppend
from eskit.store.sqlite_chain import HEAD

Synchronous = Literal["FULL", "NORMAL"]
InlineHook = Callable[[sqlite3.Connection, list[RecordedEvent]], None]
"""Called inside the append's transaction with the events just written (inline projections)."""

log = logging.getLogger("eskit.store.sqlite")
CHECKPOINT_EVERY: Final = 100
"""Commits between WAL checkpoints while writes never pause (plus one whenever idle)."""
_CHUNK: Final = 64
"""The most rows one INSERT takes. A multi-row ``INSERT ... VALUES (...), (...)`` costs
~28k instructions a row against ~39k for ``executemany`` (one step per row, each opening
the table's and indexes' cursors). 64 rows of 13 parameters (832) stay under 999, the least
SQLITE_MAX_VARIABLE_NUMBER a build may have; 128 (where allowed) measured no better on
W1c and W2, 32 about 0.2% worse."""


def _inserts(columns: str, width: int) -> dict[int, str]:
    """The insert of ``size`` rows of ``width`` columns, for each chunk size: the powers of
    two up to ``_CHUNK``, so a group prepares at most seven statements per form whatever
    its size (the sqlite3 module caches 128 a connection)."""
    row = f"({', '.join('?' * width)})"
    return {
        1 << k: f"INSERT INTO events ({columns}) VALUES {', '.join([row] * (1 << k))}"
        for k in range(_CHUNK.bit_length())
    }


_COLUMNS: Final = "position, stream, category, version, id, type, data, metadata, recorded_at, hash"
_INSERTS: Final = {
    13: _inserts(f"{_COLUMNS}, content_type, raw_data, raw_metadata", 13),
    10: _inserts(_COLUMNS, 10),  # rows without raw parts: those columns stay NULL
}
"""The inserts by width (columns a row) and rows a statement."""
_INSERT: Final = _INSERTS[13][1]
_INSERT_JSON: Final = _INSERTS[10][1]


_CLOSING: Final = threading.Lock()
"""Connections close one at a time. The last connection to a WAL file checkpoints it and
removes the -wal and -shm files, but only if it can tell it is the last: two closing at the
same moment can each see the other and both leave the files behind."""

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND: Final = dt.timedelta(microseconds=1)


def micros(moment: dt.datetime) -> int:
    """A time as stored: microseconds since 1970-01-01 UTC."""
    return (moment - _EPOCH) // _MICROSECOND


def moment(micros: int) -> dt.datetime:
    """A stored time as an aware UTC datetime."""
    return _EPOCH + dt.timedelta(microseconds=micros)


_INCREMENTAL_VACUUM: Final = 2
"""``PRAGMA auto_vacuum``'s answer for INCREMENTAL."""


def connect(path: str, readonly: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (eskit issues BEGIN itself), in WAL mode.

    A ``readonly`` one (a reader) never creates the file (SQLite's ``mode=rw``) and refuses
    writes (``query_only``). It is not ``mode=ro``: a read-write connection reads a WAL
    file whatever state its ``-shm`` is in, and the last one to close checkpoints and
    removes the WAL, so reading a store leaves no ``-wal``/``-shm`` files behind. (On a
    write-protected file SQLite opens it read-only.)
    """
    if readonly:
        uri = f"{Path(path).absolute().as_uri()}?mode=rw"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=10000")
    if readonly:
        conn.execute("PRAGMA query_only=1")
        return conn
    # A new file gives free pages back in steps after a scavenge (eskit.store.scavenge).
    # Only a file without tables takes it, before WAL mode; any other ignores it. Setting it
    # waits for the write lock, so a file that has it already (every file eskit made) is
    # not asked: opening one must not wait behind another connection's write.
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != _INCREMENTAL_VACUUM:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    if _switch_to_wal(conn) != "wal":
        raise StoreError(f"{path}: SQLite could not switch to WAL mode")
    return conn


def _switch_to_wal(conn: sqlite3.Connection) -> str:
    """Set WAL mode, retrying for a while: switching needs a lock that SQLite's busy
    handler does not wait for, so two processes opening a new file at once can collide."""
    deadline = time.monotonic() + 10
    while True:
        try:
            mode: str = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            return mode.lower()
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def stream_state(conn: sqlite3.Connection, stream: str) -> tuple[int | None, int]:
    """The stream's last version (None: no events) and state; raises if tombstoned."""
    last, state = conn.execute(
        "SELECT coalesce((SELECT max(version) FROM events WHERE stream = ?1),"
        " (SELECT last_version FROM streams WHERE stream = ?1)),"
        " (SELECT state FROM streams WHERE stream = ?1)",
        (stream,),
    ).fetchone()
    if state == TOMBSTONED:
        raise StreamDeleted(stream)
    return last, LIVE if state is None else state


AppendRequest: TypeAlias = list[PreparedAppend]
"""Appends to distinct streams, validated and encoded by the caller, written all or none.

The group gives them positions and a time; the outcome is one AppendResult each. The list
itself is the request (told from an ``Operation`` by its type): no object wrapped around it
per append, to be taken apart again by the writer."""


class Operation:
    """Any other write (delete, metadata, a projection's batch): a function of the write
    connection, run inside its own SAVEPOINT of the group's transaction. If it raises, its
    writes are rolled back and its caller gets the error; the rest of the group commits.
    """

    __slots__ = ("run",)

    def __init__(self, run: Callable[[sqlite3.Connection], Any]) -> None:
        self.run = run


Request = AppendRequest | Operation


class _WroteThenFailed(Exception):
    """A write failed after part of it was done: the group must be rolled back."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class _AppendGroup:
    """Consecutive appends of one transaction: read what the planner needs in a few
    queries, let it decide each request, insert the rows of those it accepts together.

    Each event's position is given by the planner, before its link is hashed (the link
    covers it): counted from the store's head, read once under the transaction's write
    lock, and inserted explicitly. AUTOINCREMENT's counter moves with the inserts (and back
    with a rollback), so no position is ever given twice.

    An accepted request's outcome is set as it is planned, before its rows are inserted:
    if the insert fails, the whole group is rolled back and its outcomes thrown away
    (``Writer.commit``), so no caller is ever answered from them.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        cursor: sqlite3.Cursor,  # of conn: the group's statements run on it
        requests: Sequence[AppendRequest],
        outcomes: list[Outcome],
        recorded_at: int,  # one time for the group: when it was written
        inline: Sequence[InlineHook] = (),
        key: bytes | None = None,
    ) -> None:
        self.conn = conn
        self.cursor = cursor
        self.inline = inline
        self.outcomes = outcomes
        self.planner = _planner(cursor, list(requests), recorded_at, key)
        self.rows: list[Row] = []  # cleared in place by flush
        self.revived: list[str] = []

    def add_all(self, requests: Sequence[AppendRequest]) -> None:
        """Plan each request in order against the heads as they stand in this group; queue
        the rows of those accepted (a refused request fails alone and leaves nothing), then
        insert them. (One loop for the group: no call per request but the planner's, whose
        decision is the outcome as it is.)"""
        if self.inline:
            for request in requests:
                self._add_inline(self.planner.plan(request))
        else:
            decide, rows, revived = self.planner.decide, self.rows, self.revived
            answer = self.outcomes.append
            for request in requests:
                answer(decide(request, rows, revived))
        self.flush()

    def _add_inline(self, plan: Plan) -> None:
        """Write the request's rows and run the inline projections on its events inside a
        SAVEPOINT: if a projection raises, the request fails alone and leaves nothing. (A
        refused or replayed request has no rows: it is answered, nothing run.)"""
        if not plan.rows:
            self.outcomes.append((plan.results, plan.error))
            return
        self.flush()  # the rows of earlier requests stay outside this request's savepoint
        self.conn.execute("SAVEPOINT inline")
        try:
            self.rows += plan.rows
            self.revived += plan.revived
            self.outcomes.append((plan.results, None))
            events = self.flush()
            for hook in self.inline:
                hook(self.conn, events)
        except _WroteThenFailed:
            raise
        except Exception as error:
            self.conn.execute("ROLLBACK TO inline")
            self.conn.execute("RELEASE inline")
            self.planner.undo()
            self.outcomes[-1] = (None, error)
            log.warning("%s", error)  # "the append to ... was refused by projection ...: ..."
            return
        self.conn.execute("RELEASE inline")

    def flush(self) -> list[RecordedEvent]:
        """Insert the queued rows. Returns the events written when inline projections
        need them."""
        written: list[RecordedEvent] = []
        if self.rows:
            _insert(self.cursor, self.rows, self.revived)
            if self.inline:
                written = recorded(self.rows)
            self.rows.clear()
            self.revived.clear()
        return written


def _planner(
    cursor: sqlite3.Cursor,
    requests: list[list[PreparedAppend]],
    recorded_at: int,
    key: bytes | None,
) -> Planner:
    """A planner for ``requests``, given what it needs read (``planner.lookups``)."""
    streams, ids, fresh = lookups(requests)
    earlier = _existing(cursor, ids) if ids else {}
    heads, last_position = _heads(cursor, streams)
    return Planner(heads, earlier, last_position + 1, recorded_at, key, fresh)


def _insert(cursor: sqlite3.Cursor, rows: list[Row], revived: list[str]) -> None:
    """Insert the rows of accepted plans and mark the streams they revive live."""
    try:
        statement, parameters = _bound(rows)
        if len(rows) == 1:  # a lone event, the common case: its one statement
            cursor.execute(statement, parameters)
        else:
            _insert_chunks(cursor, parameters, len(rows))
        if revived:
            cursor.executemany(
                "UPDATE streams SET state = 0 WHERE stream = ?", [(s,) for s in revived]
            )
    except Exception as error:
        raise _WroteThenFailed(error) from error


def _insert_chunks(cursor: sqlite3.Cursor, parameters: list[object], count: int) -> None:
    """Insert ``count`` rows bound flat in chunks of the largest sizes ``_INSERTS`` has
    (100 rows: 64, 32 and 4): a statement a chunk, not ``executemany``'s step a row."""
    width = len(parameters) // count
    inserts = _INSERTS[width]
    start, size = 0, _CHUNK
    while count:
        while size > count:
            size >>= 1
        end = start + size * width
        cursor.execute(inserts[size], parameters[start:end])
        start, count = end, count - size


def _bound(rows: list[Row]) -> tuple[str, list[object]]:
    """The one-row insert for ``rows`` and their parameters, all rows' in one flat list,
    as the sqlite3 module binds them cheapest. It adapts every parameter that is not exactly
    an int, float, str or bytearray, through an attribute lookup that fails (bytes ~1,500
    instructions, None ~900): ids and links go as bytearray (stored as the same BLOB), and
    rows without raw parts leave those columns out (NULL) instead of binding three Nones.
    (Plain loops, not comprehensions: on Python 3.11 each comprehension is a call, ~1,200
    instructions for a lone row, against ~40 per row more for the loop. Rows are bound
    without raw parts as they are checked, in one pass: a row with raw parts, rare, starts
    the list again with them.)"""
    bound: list[object] = []
    for p, s, c, v, i, t, d, m, at, h, ct, _, meta in rows:
        if ct is not None or meta is not None:  # raw data comes with its type
            break
        bound += (p, s, c, v, bytearray(i), t, d, m, at, bytearray(h))
    else:
        return _INSERT_JSON, bound
    bound = []
    for p, s, c, v, i, t, d, m, at, h, ct, raw, meta in rows:
        bound += (p, s, c, v, bytearray(i), t, d, m, at, bytearray(h), ct, raw, meta)
    return _INSERT, bound


def recorded(rows: Sequence[Row]) -> list[RecordedEvent]:
    """Rows a planner gave (``planner.Row``) as the events a reader will see: what inline
    projections are given (SQLite and PostgreSQL)."""
    decode = msgspec.json.decode
    return [
        RecordedEvent(
            uuid.UUID(bytes=id_),
            stream,
            version,
            position,
            type_,
            decode(data),
            decode(metadata),
            moment(at),
            raw_data(content_type, raw),
            raw_metadata,
        )
        for (
            position,
            stream,
            _,
            version,
            id_,
            type_,
            data,
            metadata,
            at,
            _,
            content_type,
            raw,
            raw_metadata,
        ) in rows
    ]


def _heads(cursor: sqlite3.Cursor, streams: Sequence[str]) -> tuple[dict[str, Head], int]:
    """The last version, state and last link of every stream of a group, and the log's head
    (``sqlite_chain.head``).

    A stream's last event is one probe of the (stream, version) index, then one of the
    table by its position; ``GROUP BY`` over ``IN (...)`` would scan every event of the
    streams. A stream whose events were all scavenged keeps its head in ``streams``
    (migration 005). The query returns a head as the planner takes it, in as few columns
    as it can: the sqlite3 module pays for each column of each row it returns.
    """
    if len(streams) == 1:  # a lone stream (an append): its name needs no column
        last, state, last_link, at = cursor.execute(_ONE_HEAD, streams).fetchone()
        return {streams[0]: Head(last, state, last_link)}, at
    heads = dict.fromkeys(streams, NEW_STREAM)  # those the query skips: no events, no row
    for stream, last, state, last_link in cursor.execute(_MANY_HEADS, (_encode(streams).decode(),)):
        heads[stream] = Head(last, state, last_link)
    last_position: int = cursor.execute(HEAD).fetchone()[0]
    return heads, last_position


_encode: Final = msgspec.json.encode
_HEAD_COLUMNS: Final = (
    f"coalesce(e.version, s.last_version), coalesce(s.state, {UNTOUCHED}),"
    " CASE WHEN e.version IS NULL AND s.last_version IS NOT NULL"
    " THEN s.last_link ELSE e.hash END"
)
_HEAD_FROM: Final = (
    " FROM wanted LEFT JOIN streams AS s ON s.stream = name"
    " LEFT JOIN events e ON e.position ="
    " (SELECT position FROM events WHERE stream = name ORDER BY version DESC LIMIT 1)"
)
"""What ``_heads`` reads of each stream in ``wanted``: last version, state (``UNTOUCHED``
without a ``streams`` row) and last link (those kept in ``streams`` when every event was
scavenged)."""
_ONE_HEAD: Final = f"WITH wanted(name) AS (VALUES (?)) SELECT {_HEAD_COLUMNS}, ({HEAD}){_HEAD_FROM}"
_MANY_HEADS: Final = (
    f"WITH wanted(name) AS (SELECT value FROM json_each(?)) SELECT name, {_HEAD_COLUMNS}"
    f"{_HEAD_FROM} WHERE s.stream IS NOT NULL OR e.position IS NOT NULL"
)
"""The heads of streams given as one JSON array: one statement whatever their number
(SQLite prepares it once; a ``VALUES`` list per count was prepared anew for most groups),
one parameter to bind, and no row for a stream without events or a ``streams`` row (its
head is ``NEW_STREAM``): new streams, W1c's, cost no row to fetch."""


def _existing(cursor: sqlite3.Cursor, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, ExistingEvent]:
    """Where each of ``ids`` was already written, for those that were (scavenged ones too:
    their removal keeps the id)."""
    found: dict[uuid.UUID, ExistingEvent] = {}
    for chunk in range(0, len(ids), 500):
        raw = [bytearray(id_.bytes) for id_ in ids[chunk : chunk + 500]]  # see _bound
        marks = ", ".join("?" * len(raw))
        for id_, stream, version, position in cursor.execute(
            f"SELECT id, stream, version, position FROM events WHERE id IN ({marks})"
            f" UNION ALL SELECT id, stream, version, position FROM removals WHERE id IN ({marks})",
            raw + raw,
        ):
            found[uuid.UUID(bytes=id_)] = ExistingEvent(stream, version, position)
    return found


class Writer:
    """The write connection and what runs on it: ``commit`` is the ``GroupCommit``'s
    transaction function, so only the thread leading the group uses the connection."""

    def __init__(
        self,
        path: str,
        synchronous: Synchronous,
        clock: Callable[[], int],
        audit_key: bytes | None,
    ) -> None:
        self.clock = clock  # microseconds since the epoch, UTC
        self.audit_key = audit_key
        """Key of the hash chain's links (``chain.audit_key``); None: plain BLAKE2b."""
        self.before_commit: Callable[[], None] | None = None  # fault injection for tests
        self.inline: list[InlineHook] = []
        """Inline projections, run in every append's transaction; changed only by
        operations (inside a commit), so a change takes effect between two transactions."""
        self._commits_since_checkpoint = 0
        self._wal_to_truncate = False
        self._last_commit = time.monotonic()
        self.conn = connect(path)
        try:
            self.conn.execute(f"PRAGMA synchronous={synchronous}")
            self.conn.execute("PRAGMA journal_size_limit=67108864")
            sqlite_schema.migrate(self.conn, path, audit_key)
            self._cursor = self.conn.cursor()
            """What appends' statements run on: one cursor for all, not one per statement."""
        except BaseException:
            self.close()
            raise

    def commit(self, batch: Sequence[Request]) -> tuple[list[Outcome], bool]:
        """Commit a group of requests together (``GroupCommit``): an outcome per request,
        and whether anything was committed. After a write failed midway the group is
        rolled back and each request is retried in a transaction of its own."""
        if self._commits_since_checkpoint >= CHECKPOINT_EVERY:
            self.checkpoint("RESTART")
        wrote = False
        try:
            outcomes = self._transaction(batch)
            wrote = True
        except _WroteThenFailed:
            outcomes = []
            for request in batch:
                try:
                    outcomes += self._transaction([request])
                    wrote = True
                except _WroteThenFailed as failed:
                    outcomes.append((None, failed.error))
                except Exception as error:
                    outcomes.append((None, _transaction_failed(error)))
        except Exception as error:
            outcomes = [(None, _transaction_failed(error))] * len(batch)
        return outcomes, wrote

    def _transaction(self, batch: Sequence[Request]) -> list[Outcome]:
        """Run ``batch`` in one transaction; a request that fails its checks fails alone."""
        conn, cursor = self.conn, self._cursor
        first = batch[0]
        try:
            cursor.execute("BEGIN IMMEDIATE")
            recorded_at = self.clock()
            if len(batch) == 1 and type(first) is list and not self.inline:
                # an uncontended append: ``_AppendGroup``'s work without a group to keep
                # (here, not in a function: a call less; a refused plan has no rows)
                planner = _planner(cursor, [first], recorded_at, self.audit_key)
                rows: list[Row] = []
                revived: list[str] = []
                outcomes: list[Outcome] = [planner.decide(first, rows, revived)]
                if rows:
                    _insert(cursor, rows, revived)
            else:
                outcomes = self._groups(batch, recorded_at)
            if self.before_commit is not None:
                self.before_commit()
            cursor.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._commits_since_checkpoint += 1
        self._wal_to_truncate = True
        self._last_commit = time.monotonic()
        return outcomes

    def _groups(self, batch: Sequence[Request], recorded_at: int) -> list[Outcome]:
        """Run ``batch`` inside the open transaction: each operation alone, each run of
        consecutive appends planned together."""
        outcomes: list[Outcome] = []
        for group in _runs(batch):
            if isinstance(group, Operation):  # it may change stream states: appends
                outcomes.append(self._run(group))  # after it read them anew
                continue
            appends = _AppendGroup(  # consecutive appends: planned together
                self.conn, self._cursor, group, outcomes, recorded_at, self.inline, self.audit_key
            )
            appends.add_all(group)
        return outcomes

    def _run(self, op: Operation) -> Outcome:
        """Run one operation inside its own SAVEPOINT: if it raises, what it wrote is
        rolled back and it fails alone; the rest of the group still commits."""
        conn = self.conn
        conn.execute("SAVEPOINT operation")
        try:
            value = op.run(conn)
        except Exception as error:
            conn.execute("ROLLBACK TO operation")
            conn.execute("RELEASE operation")
            return None, error
        conn.execute("RELEASE operation")
        return value, None

    def idle(self, after: float) -> None:
        """Truncate the WAL once nothing was committed for ``after`` seconds (run by the
        group's committer thread holding the lead)."""
        if time.monotonic() - self._last_commit >= after:
            self.checkpoint("TRUNCATE")

    def checkpoint(self, mode: Literal["RESTART", "TRUNCATE"]) -> None:
        """Copy the WAL into the database and start it over (TRUNCATE also empties the file).

        SQLite's own checkpoints are passive: under readers that never pause they cannot
        restart the WAL, which then grows without bound. These wait for readers a moment
        (their transactions are short) and give up otherwise, to try again later.
        """
        if not (self._wal_to_truncate if mode == "TRUNCATE" else self._commits_since_checkpoint):
            return
        conn = self.conn
        conn.execute("PRAGMA busy_timeout=20")
        try:
            busy = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()[0]
        except sqlite3.OperationalError:  # e.g. another process is writing: try later
            busy = 1
        finally:
            conn.execute("PRAGMA busy_timeout=10000")
        if not busy:
            self._commits_since_checkpoint = 0
            self._wal_to_truncate = mode != "TRUNCATE"

    def close(self) -> None:
        with _CLOSING:
            self.conn.close()


def _runs(batch: Sequence[Request]) -> list[Sequence[AppendRequest] | Operation]:
    """The batch as runs of consecutive appends and single operations, in order."""
    if _APPENDS_ONLY.issuperset(map(type, batch)):  # as a rule: one run, told in C
        return [cast("Sequence[AppendRequest]", batch)]
    runs: list[Sequence[AppendRequest] | Operation] = []
    appends: list[AppendRequest] = []
    for request in batch:
        if type(request) is list:
            appends.append(request)
            continue
        if appends:
            runs.append(appends)
            appends = []
        assert isinstance(request, Operation)
        runs.append(request)
    if appends:
        runs.append(appends)
    return runs


_APPENDS_ONLY: Final = frozenset({list})


def _transaction_failed(error: Exception) -> StoreError:
    failure = StoreError(f"SQLite transaction failed, nothing of it was written: {error}")
    failure.__cause__ = error
    return failure
