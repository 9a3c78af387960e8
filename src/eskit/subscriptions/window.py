"""The window of a consumer group: events read from its log and not yet done (the
``eskit_group_events`` rows), and how they are claimed, acked, nacked and released.

Every function runs in a transaction the caller holds (see ``tables``); those that change
the window lock the group's row first.
"""

from __future__ import annotations

from typing import Any, Final

from eskit.projections.sql import Connection, execute, is_sqlite
from eskit.retry import backoff
from eskit.subscriptions.model import Action, Claimed, Group, Source
from eskit.subscriptions.parking import park
from eskit.subscriptions.tables import MICROS, as_group, group_row, now

WINDOW: Final = 1000
"""Events read ahead of the checkpoint at most, beyond what consumers hold."""
SCAN: Final = 2000
"""Waiting events the pinned strategy looks through per claim."""


class Want:
    """What a claim found: the events handed out, and whether reading the log could hand
    out more (``room`` events after ``read_position``)."""

    def __init__(self, claimed: list[Claimed], read_position: int, room: int, source: Source):
        self.claimed, self.read_position, self.room, self.source = (
            claimed,
            read_position,
            room,
            source,
        )


def claim(conn: Connection, name: str, consumer: str, limit: int) -> Want:
    """Heartbeat ``consumer``, take back what timed out (parking what ran out of retries)
    and hand it up to ``limit`` waiting events, within its ``max_in_flight``."""
    group = as_group(group_row(conn, name))
    settings = group.settings
    timeout = int(settings.message_timeout * MICROS)
    clock = now(conn)
    execute(
        conn,
        "INSERT INTO eskit_group_consumers (grp, consumer, seen_at) VALUES (?, ?, ?)"
        " ON CONFLICT (grp, consumer) DO UPDATE SET seen_at = excluded.seen_at",
        (name, consumer, clock),
    )
    _expire(conn, group, clock)
    (held,) = execute(
        conn,
        "SELECT COUNT(*) FROM eskit_group_events WHERE grp = ? AND consumer = ?",
        (name, consumer),
    ).fetchone()
    want = max(0, min(limit, settings.max_in_flight - int(held)))
    claimed: list[Claimed] = []
    if want:
        rows = (
            _pinned(conn, name, consumer, want, clock, timeout)
            if settings.strategy == "pinned"
            else _round_robin(conn, name, consumer, want, clock, timeout)
        )
        for chunk in _chunks([row[0] for row in rows]):
            execute(
                conn,
                "UPDATE eskit_group_events SET consumer = ?, expires_at = ?,"
                f" attempts = attempts + 1 WHERE grp = ? AND position IN {_marks(chunk)}",
                (consumer, clock + timeout, name, *chunk),
            )
        claimed = [Claimed(p, s, i, int(a) + 1, int(r)) for p, s, i, a, r in rows]
    (window,) = execute(
        conn, "SELECT COUNT(*) FROM eskit_group_events WHERE grp = ? AND replay = 0", (name,)
    ).fetchone()
    room = 0 if len(claimed) >= want else min(WINDOW - int(window), 10 * max(want, 10))
    return Want(claimed, group.read_position, max(0, room), group.source)


def _round_robin(
    conn: Connection, name: str, consumer: str, want: int, clock: int, timeout: int
) -> list[tuple[Any, ...]]:
    """The first waiting events, in position order; while another consumer lives, not
    those this one failed last (timed out or nacked): they go to another."""
    (others,) = execute(
        conn,
        "SELECT COUNT(*) FROM eskit_group_consumers WHERE grp = ? AND consumer <> ?"
        " AND seen_at > ?",
        (name, consumer, clock - timeout),
    ).fetchone()
    elsewhere = " AND (last_consumer IS NULL OR last_consumer <> ?)" if others else ""
    rows: list[tuple[Any, ...]] = execute(
        conn,
        "SELECT position, stream, event_id, attempts, replay FROM eskit_group_events"
        f" WHERE grp = ? AND consumer IS NULL AND available_at <= ?{elsewhere}"
        " ORDER BY position LIMIT ?",
        (name, clock, *([consumer] if others else []), want),
    ).fetchall()
    return rows


def _pinned(
    conn: Connection, name: str, consumer: str, want: int, clock: int, timeout: int
) -> list[tuple[Any, ...]]:
    """Waiting events of streams pinned to ``consumer``, or whose consumer is gone (then
    pinned to it), in position order; a stream with an earlier event held elsewhere or
    waiting out a retry backoff is passed over, so each stream's order holds."""
    live = {
        row[0]
        for row in execute(
            conn,
            "SELECT consumer FROM eskit_group_consumers WHERE grp = ? AND seen_at > ?",
            (name, clock - timeout),
        ).fetchall()
    }
    pins = dict(
        execute(conn, "SELECT stream, consumer FROM eskit_group_pins WHERE grp = ?", (name,))
    )
    blocked = {
        row[0]
        for row in execute(
            conn,
            "SELECT DISTINCT stream FROM eskit_group_events WHERE grp = ?"
            " AND consumer IS NOT NULL AND consumer <> ?",
            (name, consumer),
        ).fetchall()
    }
    chosen: list[tuple[Any, ...]] = []
    for position, stream, event_id, attempts, replay, available_at in execute(
        conn,
        "SELECT position, stream, event_id, attempts, replay, available_at"
        " FROM eskit_group_events WHERE grp = ? AND consumer IS NULL ORDER BY position LIMIT ?",
        (name, SCAN),
    ).fetchall():
        owner = pins.get(stream)
        if stream in blocked or (owner not in (None, consumer) and owner in live):
            blocked.add(stream)
            continue
        if available_at > clock:
            blocked.add(stream)
            continue
        if owner != consumer:
            execute(
                conn,
                "INSERT INTO eskit_group_pins (grp, stream, consumer) VALUES (?, ?, ?)"
                " ON CONFLICT (grp, stream) DO UPDATE SET consumer = excluded.consumer",
                (name, stream, consumer),
            )
            pins[stream] = consumer
        chosen.append((position, stream, event_id, attempts, replay))
        if len(chosen) >= want:
            break
    return chosen


def _expire(conn: Connection, group: Group, clock: int) -> None:
    """Events whose consumer did not answer in time: waiting again, or parked if they
    have had all their retries."""
    rows = execute(
        conn,
        "SELECT position FROM eskit_group_events WHERE grp = ? AND consumer IS NOT NULL"
        " AND expires_at <= ?",
        (group.name, clock),
    ).fetchall()
    if rows:
        _failed(conn, group, [row[0] for row in rows], "message_timeout expired", clock)


def fill(
    conn: Connection, name: str, after: int, events: list[tuple[int, str, str, str]], to: int
) -> None:
    """Add events ``(position, stream, id, type)`` read from the log after ``after`` up to
    ``to`` to the window, unless another consumer read that span first."""
    group = as_group(group_row(conn, name))
    if group.read_position != after or to <= after:
        return
    if events:
        statement = (
            "INSERT INTO eskit_group_events (grp, position, stream, event_id, event_type,"
            " consumer, expires_at, available_at, attempts, replay)"
            " VALUES (?, ?, ?, ?, ?, NULL, 0, 0, 0, 0)"
        )
        if not is_sqlite(conn):
            statement = statement.replace("?", "%s")
        conn.cursor().executemany(statement, [(name, *event) for event in events])
    execute(conn, "UPDATE eskit_groups SET read_position = ? WHERE name = ?", (to, name))
    _advance(conn, name)


def _advance(conn: Connection, name: str) -> None:
    """Move the checkpoint up to the first event not done (replayed events aside); it
    never moves back."""
    execute(
        conn,
        "UPDATE eskit_groups SET checkpoint = MAX_OF(checkpoint, COALESCE((SELECT MIN(position)"
        " - 1 FROM eskit_group_events WHERE grp = ? AND replay = 0), read_position))"
        " WHERE name = ?".replace("MAX_OF", "MAX" if is_sqlite(conn) else "GREATEST"),
        (name, name),
    )


def positions_of(conn: Connection, name: str, event_ids: list[str]) -> dict[str, int]:
    """The window positions of events by id (those no longer in it are left out)."""
    found: dict[str, int] = {}
    for event_id in event_ids:
        row = execute(
            conn,
            "SELECT position FROM eskit_group_events WHERE grp = ? AND event_id = ?",
            (name, event_id),
        ).fetchone()
        if row is not None:
            found[event_id] = int(row[0])
    return found


def ack(conn: Connection, name: str, positions: list[int]) -> int:
    """Done: the events leave the window, whoever holds them now (a late ack still
    counts, so the event is not handed out again). Returns how many were there."""
    group_row(conn, name)
    done = 0
    for chunk in _chunks(positions):
        done += len(
            execute(
                conn,
                f"DELETE FROM eskit_group_events WHERE grp = ? AND position IN {_marks(chunk)}"
                " RETURNING position",
                (name, *chunk),
            ).fetchall()
        )
    _advance(conn, name)
    return done


def _chunks(values: list[int], size: int = 500) -> list[list[int]]:
    """``values`` in lists small enough for one statement's parameters."""
    return [values[i : i + size] for i in range(0, len(values), size)]


def _marks(values: list[int]) -> str:
    return f"({', '.join('?' * len(values))})"


def nack(
    conn: Connection, name: str, consumer: str, positions: list[int], action: Action, reason: str
) -> int:
    """``retry`` (waiting again after a backoff, or parked once out of retries), ``park``
    or ``skip`` events ``consumer`` holds; an event it no longer holds (timed out and
    handed to another) is left alone. ``reason`` must be redacted already."""
    group = as_group(group_row(conn, name))
    held = [
        position
        for position in positions
        if execute(
            conn,
            "SELECT 1 FROM eskit_group_events WHERE grp = ? AND position = ? AND consumer = ?",
            (name, position, consumer),
        ).fetchone()
    ]
    clock = now(conn)
    if action == "skip":
        for position in held:
            execute(
                conn,
                "DELETE FROM eskit_group_events WHERE grp = ? AND position = ?",
                (name, position),
            )
    elif action == "park":
        for position in held:
            park(conn, group.name, position, reason, clock)
    else:
        _failed(conn, group, held, reason, clock)
    _advance(conn, name)
    return len(held)


def release(conn: Connection, name: str, consumer: str, positions: list[int]) -> None:
    """Hand back events ``consumer`` held and did not start (their attempt not counted)."""
    for position in positions:
        execute(
            conn,
            "UPDATE eskit_group_events SET consumer = NULL, expires_at = 0,"
            " attempts = attempts - 1 WHERE grp = ? AND position = ? AND consumer = ?",
            (name, position, consumer),
        )


def _failed(conn: Connection, group: Group, positions: list[int], reason: str, clock: int) -> None:
    """Failed deliveries: waiting again after a backoff, or parked after ``max_retries``."""
    retried = 0
    for position in positions:
        (attempts,) = execute(
            conn,
            "SELECT attempts FROM eskit_group_events WHERE grp = ? AND position = ?",
            (group.name, position),
        ).fetchone()
        if int(attempts) > group.settings.max_retries:
            park(conn, group.name, position, reason, clock)
            continue
        pause = backoff(group.settings.retry_backoff, int(attempts) - 1)
        execute(
            conn,
            "UPDATE eskit_group_events SET last_consumer = consumer, consumer = NULL,"
            " expires_at = 0, available_at = ?, reason = ? WHERE grp = ? AND position = ?",
            (clock + int(pause * MICROS), reason, group.name, position),
        )
        retried += 1
    if retried:
        execute(
            conn,
            "UPDATE eskit_groups SET retried = retried + ? WHERE name = ?",
            (retried, group.name),
        )


def leave(conn: Connection, name: str, consumer: str) -> None:
    """A consumer that stops: what it holds waits for others at once, its pins go."""
    execute(
        conn,
        "UPDATE eskit_group_events SET consumer = NULL, expires_at = 0,"
        " attempts = attempts - 1 WHERE grp = ? AND consumer = ?",
        (name, consumer),
    )
    execute(conn, "DELETE FROM eskit_group_pins WHERE grp = ? AND consumer = ?", (name, consumer))
    execute(
        conn, "DELETE FROM eskit_group_consumers WHERE grp = ? AND consumer = ?", (name, consumer)
    )
