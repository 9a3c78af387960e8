"""A consumer group's parked events (``eskit_group_parked``) and their replays
(``eskit_group_replays``): events that ran out of retries or were parked by a nack, kept
in the order they were parked until a replay moves them back to the window, page by page.
"""

from __future__ import annotations

from eskit.projections.sql import Connection, execute, now_sql
from eskit.subscriptions.model import Parked, Replay
from eskit.subscriptions.tables import group_row, now


def park(conn: Connection, name: str, position: int, reason: str, clock: int) -> None:
    row = execute(
        conn,
        "DELETE FROM eskit_group_events WHERE grp = ? AND position = ?"
        " RETURNING stream, event_id, attempts, event_type",
        (name, position),
    ).fetchone()
    if row is None:
        return
    (seq,) = execute(
        conn,
        "UPDATE eskit_groups SET parked_seq = parked_seq + 1, parked_total = parked_total + 1"
        " WHERE name = ? RETURNING parked_seq",
        (name,),
    ).fetchone()
    execute(
        conn,
        "INSERT INTO eskit_group_parked (grp, seq, position, stream, event_type, event_id,"
        " attempts, reason, parked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (name, seq, position, row[0], row[3], row[1], row[2], reason, clock),
    )


def parked(conn: Connection, name: str, after: int = 0, limit: int = 100) -> list[Parked]:
    """A page of the parked events, in the order they were parked (``seq`` > ``after``)."""
    group_row(conn, name, lock=False)
    rows = execute(
        conn,
        "SELECT seq, position, stream, event_type, event_id, attempts, reason, parked_at"
        " FROM eskit_group_parked WHERE grp = ? AND seq > ? ORDER BY seq LIMIT ?",
        (name, after, limit),
    ).fetchall()
    return [Parked(*row) for row in rows]


def start_replay(conn: Connection, name: str, requested_by: str, up_to: int | None) -> Replay:
    """Record a replay of the parked events up to ``up_to`` (all parked now, if None):
    events parked again while it runs come after it, and wait for another."""
    group_row(conn, name)
    (seq,) = execute(conn, "SELECT parked_seq FROM eskit_groups WHERE name = ?", (name,)).fetchone()
    last = int(seq) if up_to is None else min(int(up_to), int(seq))
    (number,) = execute(
        conn, "SELECT COALESCE(MAX(id), 0) + 1 FROM eskit_group_replays WHERE grp = ?", (name,)
    ).fetchone()
    clock = now(conn)
    execute(
        conn,
        "INSERT INTO eskit_group_replays (grp, id, requested_by, up_to, requested_at, replayed)"
        " VALUES (?, ?, ?, ?, ?, 0)",
        (name, number, requested_by, last, clock),
    )
    return Replay(int(number), name, requested_by, last, clock)


def replay_page(conn: Connection, replay: Replay, limit: int) -> int:
    """Move up to ``limit`` parked events of ``replay`` back to the window (waiting, a
    fresh count of attempts, marked with the replay); the number moved, 0 when done."""
    name = replay.group
    group_row(conn, name)
    rows = execute(
        conn,
        "DELETE FROM eskit_group_parked WHERE grp = ? AND seq IN (SELECT seq FROM"
        " eskit_group_parked WHERE grp = ? AND seq <= ? ORDER BY seq LIMIT ?)"
        " RETURNING position, stream, event_id, event_type",
        (name, name, replay.up_to, limit),
    ).fetchall()
    for position, stream, event_id, event_type in rows:
        execute(
            conn,
            "INSERT INTO eskit_group_events (grp, position, stream, event_id, event_type,"
            " consumer, expires_at, available_at, attempts, replay)"
            " VALUES (?, ?, ?, ?, ?, NULL, 0, 0, 0, ?) ON CONFLICT (grp, position) DO NOTHING",
            (name, position, stream, event_id, event_type, replay.id),
        )
    moved = len(rows)
    finished = f", finished_at = {now_sql(conn)}" if moved < limit else ""
    execute(
        conn,
        f"UPDATE eskit_group_replays SET replayed = replayed + ?{finished}"
        " WHERE grp = ? AND id = ?",
        (moved, name, replay.id),
    )
    execute(conn, "UPDATE eskit_groups SET replayed = replayed + ? WHERE name = ?", (moved, name))
    return moved


def replays(conn: Connection, name: str) -> list[Replay]:
    group_row(conn, name, lock=False)
    rows = execute(
        conn,
        "SELECT id, grp, requested_by, up_to, requested_at, replayed, finished_at"
        " FROM eskit_group_replays WHERE grp = ? ORDER BY id",
        (name,),
    ).fetchall()
    return [Replay(*row) for row in rows]


def count_parked(conn: Connection, name: str, up_to: int | None = None) -> int:
    group_row(conn, name, lock=False)
    (count,) = execute(
        conn,
        "SELECT COUNT(*) FROM eskit_group_parked WHERE grp = ? AND seq <= ?",
        (name, 2**62 if up_to is None else up_to),
    ).fetchone()
    return int(count)
