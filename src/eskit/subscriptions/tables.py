"""A consumer group's state, in SQL beside the read models: no leader process needed.

Every function takes a connection inside a transaction the caller runs (``Database.write``)
and reads the database's clock, so consumers in many processes and machines share one
group through these rows alone:

- ``eskit_groups``: settings, the checkpoint (every event up to it is acked, skipped or
  parked), how far the log was read, counters for metrics.
- ``eskit_group_events``: the window, the events read from the log and not yet done:
  waiting (no consumer) or in flight (a consumer and a deadline), with their attempts.
  Acked and skipped events are deleted; parked ones move to ``eskit_group_parked``.
  Replayed events come back here marked with their replay, and never move the checkpoint.
- ``eskit_group_consumers`` (heartbeats), ``eskit_group_pins`` (stream -> consumer, for
  the pinned strategy), ``eskit_group_replays`` (who asked for which replay).

On PostgreSQL each changing call first locks the group's row, so its transactions run
one at a time; SQLite's write lock does the same.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from eskit.projections.sql import Connection, execute, is_sqlite, kind_of, lock_setup, now_sql
from eskit.retry import backoff
from eskit.subscriptions.model import (
    Action,
    Claimed,
    Group,
    GroupExists,
    GroupNotFound,
    Parked,
    Replay,
    Settings,
    Source,
)

MICROS: Final = 1_000_000
WINDOW: Final = 1000
"""Events read ahead of the checkpoint at most, beyond what consumers hold."""
SCAN: Final = 2000
"""Waiting events the pinned strategy looks through per claim."""

SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS eskit_groups (
        name            TEXT PRIMARY KEY,
        kind            TEXT    NOT NULL,  -- stream | category | all
        source          TEXT    NOT NULL,
        message_timeout BIGINT  NOT NULL,  -- microseconds
        max_retries     BIGINT  NOT NULL,
        max_in_flight   BIGINT  NOT NULL,
        strategy        TEXT    NOT NULL,  -- round_robin | pinned
        retry_backoff   BIGINT  NOT NULL,  -- microseconds
        checkpoint      BIGINT  NOT NULL,  -- every event up to here is acked/skipped/parked
        read_position   BIGINT  NOT NULL,  -- the log is read up to here
        parked_seq      BIGINT  NOT NULL,  -- the last parked entry's number
        retried         BIGINT  NOT NULL,  -- counters, for metrics
        parked_total    BIGINT  NOT NULL,
        replayed        BIGINT  NOT NULL,
        created_at      BIGINT  NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS eskit_group_events (
        grp          TEXT    NOT NULL,
        position     BIGINT  NOT NULL,
        stream       TEXT    NOT NULL,
        event_id     TEXT    NOT NULL,
        event_type   TEXT    NOT NULL,
        consumer     TEXT,               -- NULL while waiting
        last_consumer TEXT,              -- who failed it last: another gets it, if any lives
        expires_at   BIGINT  NOT NULL,   -- in flight until (database clock, microseconds)
        available_at BIGINT  NOT NULL,   -- not handed out before (retry backoff)
        attempts     BIGINT  NOT NULL,   -- deliveries so far
        replay       BIGINT  NOT NULL,   -- the replay that brought it back, 0 if none
        reason       TEXT,               -- why it was last nacked
        PRIMARY KEY (grp, position)
    )""",
    "CREATE INDEX IF NOT EXISTS eskit_group_events_event ON eskit_group_events (grp, event_id)",
    "CREATE INDEX IF NOT EXISTS eskit_group_events_held"
    " ON eskit_group_events (grp, consumer, expires_at)",
    """CREATE TABLE IF NOT EXISTS eskit_group_parked (
        grp        TEXT    NOT NULL,
        seq        BIGINT  NOT NULL,
        position   BIGINT  NOT NULL,
        stream     TEXT    NOT NULL,
        event_type TEXT    NOT NULL,
        event_id   TEXT    NOT NULL,
        attempts   BIGINT  NOT NULL,
        reason     TEXT    NOT NULL,
        parked_at  BIGINT  NOT NULL,
        PRIMARY KEY (grp, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS eskit_group_consumers (
        grp      TEXT   NOT NULL,
        consumer TEXT   NOT NULL,
        seen_at  BIGINT NOT NULL,
        PRIMARY KEY (grp, consumer)
    )""",
    """CREATE TABLE IF NOT EXISTS eskit_group_pins (
        grp      TEXT NOT NULL,
        stream   TEXT NOT NULL,
        consumer TEXT NOT NULL,
        PRIMARY KEY (grp, stream)
    )""",
    """CREATE TABLE IF NOT EXISTS eskit_group_replays (
        grp          TEXT   NOT NULL,
        id           BIGINT NOT NULL,
        requested_by TEXT   NOT NULL,
        up_to        BIGINT NOT NULL,   -- parked entries up to this seq
        requested_at BIGINT NOT NULL,
        replayed     BIGINT NOT NULL,
        finished_at  BIGINT,
        PRIMARY KEY (grp, id)
    )""",
)

_GROUP_COLUMNS: Final = (
    "name, kind, source, message_timeout, max_retries, max_in_flight, strategy,"
    " retry_backoff, checkpoint, read_position, retried, parked_total, replayed, created_at"
)
_TABLES: Final = (
    "eskit_group_events",
    "eskit_group_parked",
    "eskit_group_consumers",
    "eskit_group_pins",
    "eskit_group_replays",
)


def ensure_schema(conn: Connection) -> None:
    lock_setup(conn)
    for statement in SCHEMA:
        execute(conn, statement)


def now(conn: Connection) -> int:
    return int(execute(conn, f"SELECT {now_sql(conn)}").fetchone()[0])


def _row(conn: Connection, name: str, lock: bool = True) -> tuple[object, ...]:
    """The group's row, locked for this transaction on PostgreSQL; ``GroupNotFound``."""
    if not lock and kind_of(conn, "eskit_groups") is None:  # a reader: nothing created yet
        raise GroupNotFound(name)
    lock_clause = " FOR UPDATE" if lock and not is_sqlite(conn) else ""
    row = execute(
        conn, f"SELECT {_GROUP_COLUMNS} FROM eskit_groups WHERE name = ?{lock_clause}", (name,)
    ).fetchone()
    if row is None:
        raise GroupNotFound(name)
    return tuple(row)


def _group(row: tuple[object, ...]) -> Group:
    (name, kind, source, timeout, retries, in_flight, strategy, retry_backoff, checkpoint,
     read, retried, parked_total, replayed, created_at) = row  # fmt: skip
    settings = Settings(
        message_timeout=int(timeout) / MICROS,  # type: ignore[call-overload]
        max_retries=int(retries),  # type: ignore[call-overload]
        max_in_flight=int(in_flight),  # type: ignore[call-overload]
        strategy=strategy,  # type: ignore[arg-type]
        retry_backoff=int(retry_backoff) / MICROS,  # type: ignore[call-overload]
    )
    return Group(
        str(name),
        Source(kind, str(source)),  # type: ignore[arg-type]
        settings,
        int(checkpoint),  # type: ignore[call-overload]
        int(read),  # type: ignore[call-overload]
        retried_total=int(retried),  # type: ignore[call-overload]
        parked_total=int(parked_total),  # type: ignore[call-overload]
        replayed_total=int(replayed),  # type: ignore[call-overload]
        created_at=int(created_at),  # type: ignore[call-overload]
    )


def load(conn: Connection, name: str) -> Group:
    """The group with its counts and live consumers; ``GroupNotFound``."""
    group = _group(_row(conn, name, lock=False))
    counts = dict.fromkeys(("in_flight", "waiting"), 0)
    for held, count in execute(
        conn,
        "SELECT consumer IS NOT NULL, COUNT(*) FROM eskit_group_events WHERE grp = ?"
        " GROUP BY consumer IS NOT NULL",
        (name,),
    ).fetchall():
        counts["in_flight" if held else "waiting"] = int(count)
    (parked,) = execute(
        conn, "SELECT COUNT(*) FROM eskit_group_parked WHERE grp = ?", (name,)
    ).fetchone()
    consumers = tuple(
        row[0]
        for row in execute(
            conn,
            f"SELECT consumer FROM eskit_group_consumers WHERE grp = ?"
            f" AND seen_at > {now_sql(conn)} - ? ORDER BY consumer",
            (name, int(group.settings.message_timeout * MICROS)),
        ).fetchall()
    )
    return msgspec.structs.replace(
        group,
        in_flight=counts["in_flight"],
        waiting=counts["waiting"],
        parked=int(parked),
        consumers=consumers,
    )


def names(conn: Connection) -> list[str]:
    if kind_of(conn, "eskit_groups") is None:
        return []
    return [row[0] for row in execute(conn, "SELECT name FROM eskit_groups ORDER BY name")]


def create(conn: Connection, name: str, source: Source, settings: Settings, start: int) -> None:
    """A new group whose checkpoint is ``start``; ``GroupExists`` if the name is taken."""
    if execute(conn, "SELECT 1 FROM eskit_groups WHERE name = ?", (name,)).fetchone():
        raise GroupExists(name)
    execute(
        conn,
        f"INSERT INTO eskit_groups (name, kind, source, message_timeout, max_retries,"
        f" max_in_flight, strategy, retry_backoff, checkpoint, read_position, parked_seq,"
        f" retried, parked_total, replayed, created_at)"
        f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0, {now_sql(conn)})",
        (name, source.kind, source.name, *_settings(settings), start, start),
    )


def _settings(settings: Settings) -> tuple[object, ...]:
    return (
        int(settings.message_timeout * MICROS),
        settings.max_retries,
        settings.max_in_flight,
        settings.strategy,
        int(settings.retry_backoff * MICROS),
    )


def update(conn: Connection, name: str, settings: Settings) -> None:
    """New settings; events in flight keep their deadlines."""
    _row(conn, name)
    execute(
        conn,
        "UPDATE eskit_groups SET message_timeout = ?, max_retries = ?, max_in_flight = ?,"
        " strategy = ?, retry_backoff = ? WHERE name = ?",
        (*_settings(settings), name),
    )
    if settings.strategy != "pinned":
        execute(conn, "DELETE FROM eskit_group_pins WHERE grp = ?", (name,))


def delete(conn: Connection, name: str) -> None:
    """The group and everything it kept (its parked events and replay records too)."""
    _row(conn, name)
    for table in _TABLES:
        execute(conn, f"DELETE FROM {table} WHERE grp = ?", (name,))
    execute(conn, "DELETE FROM eskit_groups WHERE name = ?", (name,))


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
    group = _group(_row(conn, name))
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
    group = _group(_row(conn, name))
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
    _row(conn, name)
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
    group = _group(_row(conn, name))
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
            _park(conn, group.name, position, reason, clock)
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
            _park(conn, group.name, position, reason, clock)
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


def _park(conn: Connection, name: str, position: int, reason: str, clock: int) -> None:
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
    _row(conn, name, lock=False)
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
    _row(conn, name)
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
    _row(conn, name)
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
    _row(conn, name, lock=False)
    rows = execute(
        conn,
        "SELECT id, grp, requested_by, up_to, requested_at, replayed, finished_at"
        " FROM eskit_group_replays WHERE grp = ? ORDER BY id",
        (name,),
    ).fetchall()
    return [Replay(*row) for row in rows]


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


def count_parked(conn: Connection, name: str, up_to: int | None = None) -> int:
    _row(conn, name, lock=False)
    (count,) = execute(
        conn,
        "SELECT COUNT(*) FROM eskit_group_parked WHERE grp = ? AND seq <= ?",
        (name, 2**62 if up_to is None else up_to),
    ).fetchone()
    return int(count)
