"""The PostgreSQL writer's one-statement path: ``eskit_append_group`` (migration 005) called
with rows the writer numbered and hashed itself (every link covers its event's position).

The writer must know the log's head before it hashes. Two ways, both checked by the
function, which writes nothing (NULL) if the head or a stream is not as expected:

- alone: the head after the writer's own last commit, one autocommit round trip;
- while other processes write too (the head the writer remembers is stale almost every
  time): lock the head row and read it (``BEGIN`` and ``SELECT ... FOR UPDATE`` in one
  round trip), then send the call and ``COMMIT`` together: two round trips, with the lock
  held over one and the client's work between them (under contention, the price of a link
  that covers the position). The long way (lock, read the stream heads, check, insert, move
  the head, commit) costs six.
"""

from __future__ import annotations

from typing import Any, Final

import psycopg
from psycopg import sql

Connection = psycopg.Connection[Any]

_CALL: Final = "SELECT eskit_append_group({}, {}::json, {}::json, {}::json, {}, {}::text[], {})"
_UNLESS_TOUCHED: Final = (
    " WHERE NOT EXISTS (SELECT FROM eskit_streams WHERE stream = ANY({}::text[]))"
)
"""Guards the call when the last argument names streams (they must be ``UNTOUCHED``; the
function takes a missing row for a live one): one of them with an ``eskit_streams`` row,
no row comes back, and nothing was written. Left out when it names none (every append
without ``if_untouched``): no subquery for the server to plan and run."""
_APPEND_GROUP: Final = _CALL.format(*["%s"] * 7)
_APPEND_GROUP_UNTOUCHED: Final = (_CALL + _UNLESS_TOUCHED).format(*["%s"] * 8)
_APPEND_GROUP_AND_COMMIT: Final = sql.SQL(_CALL + "; COMMIT")
_APPEND_GROUP_UNTOUCHED_AND_COMMIT: Final = sql.SQL(_CALL + _UNLESS_TOUCHED + "; COMMIT")
_LOCK_HEAD: Final = "BEGIN; SELECT position FROM eskit_head FOR UPDATE"
"""Two statements without parameters: sent in one round trip (simple query protocol)."""


def append_group(conn: Connection, arguments: tuple[Any, ...]) -> bool:
    """Call ``eskit_append_group``: whether it wrote the group (False: the log or a stream
    was not as expected, or a stream expected untouched has a row). ``arguments``: the
    function's, then the streams expected untouched (``_UNLESS_TOUCHED``)."""
    *call, untouched = arguments
    if untouched:
        cursor = conn.execute(_APPEND_GROUP_UNTOUCHED, arguments)
    else:
        cursor = conn.execute(_APPEND_GROUP, call)
    row = cursor.fetchone()
    return row is not None and row[0] is not None


def lock_head(conn: Connection) -> int:
    """Begin a transaction on ``conn`` (in autocommit mode), lock the head row and read it;
    end it with ``append_group_and_commit`` or ``roll_back``."""
    cursor = conn.execute(_LOCK_HEAD)
    cursor.nextset()  # past BEGIN's empty result
    row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def append_group_and_commit(conn: Connection, arguments: tuple[Any, ...]) -> bool:
    """``append_group`` and COMMIT, sent together, in the transaction ``lock_head`` began.

    One simple query, its arguments quoted as literals by psycopg (``sql.Literal``): the
    head's lock is held until it returns, and it costs a few hundred microseconds less of
    client time than the same two statements in a pipeline (measured), time during which
    every other writer waits."""
    *call, untouched = arguments
    if untouched:
        query = _APPEND_GROUP_UNTOUCHED_AND_COMMIT.format(*map(sql.Literal, arguments))
    else:
        query = _APPEND_GROUP_AND_COMMIT.format(*map(sql.Literal, call))
    cursor = conn.execute(query)
    row = cursor.fetchone()
    return row is not None and row[0] is not None


def roll_back(conn: Connection) -> None:
    """End the transaction ``lock_head`` began, if it is still open; close the connection
    if even that fails (the writer opens a new one), so that the head's lock is let go."""
    if conn.closed or conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        return
    try:
        conn.execute("ROLLBACK")
    except Exception:  # the caller raises what went wrong first
        conn.close()
