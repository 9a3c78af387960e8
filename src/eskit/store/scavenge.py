"""Scavenging (``eskit scavenge``): physically removing the events reads no longer show.

Stream rules and deletes only hide events. A scavenge removes, stream by stream, the events
of soft-deleted and tombstoned streams (the tombstone stays) and those beyond ``max_count``,
older than ``max_age`` or before ``truncate_before``, through the storage protection of the
log, never around it:

- each removed event's position, stream, version, id, reason and link is recorded in the
  removals table in the very transaction that deletes it, and the log's delete trigger
  admits only recorded rows (on PostgreSQL, scavenging runs as the owner of the tables; the
  application role may read the record, not write it);
- a stream whose last event is removed keeps its head (last version and link) in the
  streams table: a deleted stream continues its version numbers, and appends, idempotent
  retries (the removed ids stay in the record) and ``eskit verify`` (which carries each
  chain across the removed links, so saved anchors still check) go on as before;
- only a prefix of a stream is removed (its lowest versions, up to the first event still
  visible), and nothing past the *floor*: the lowest checkpoint of the consumers registered
  in the store's database (projections, their rebuilds and partitions, the relay, persistent
  subscription groups and their parked events). An event some consumer has not passed stays;
- it runs online, in bounded transactions (``batch_size`` events), each reading the stream's
  rules under the write lock (SQLite) or the stream's row lock (PostgreSQL), so a rule
  changed meanwhile is obeyed. A scavenge killed at any point leaves whole batches only;
  running it again goes on.

Afterwards SQLite files are vacuumed incrementally (``PRAGMA incremental_vacuum``, in steps;
files made before eskit set ``auto_vacuum = INCREMENTAL`` need one ``full_vacuum``) and
PostgreSQL's tables get ``VACUUM (ANALYZE)``.

The SQL is written once for both backends (``Dialect``); each backend's ``Scavenger``
(``EventStore.scavenger()``) runs it in its own transactions.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple, Protocol

import msgspec

from eskit.store import procedure, rules, sqlite_chain
from eskit.store.model import StreamMetadata
from eskit.store.planner import SOFT_DELETED, TOMBSTONED

REASONS: Final = ("deleted", "tombstoned", "truncate_before", "max_count", "max_age", "archived")
"""Why an event was removed, as the removals table records it."""
CONSUMER_CHECKPOINTS: Final = (
    ("eskit_projections", "position"),
    ("eskit_projection_rebuilds", "position"),
    ("eskit_partitions", "position"),
    ("eskit_groups", "checkpoint"),
    ("eskit_group_parked", "position"),
)
"""Where registered consumers keep how far they got (projections and the relay, rebuilds
in progress, partitioned projections, persistent-subscription groups, and parked events a
group may replay): no event past the lowest of these is removed."""


class Removal(msgspec.Struct, frozen=True, gc=False):
    """An event removed through the audited path, as recorded."""

    position: int
    stream: str
    version: int
    id: bytes | None
    link: bytes | None
    reason: str
    used_for: dict[str, Any] | None = None
    """What the event's command id was used for (its metadata's ``command``,
    ``command_digest`` and ``command_stream``), so that a reused command id is judged as
    before the removal; None if no command with an id wrote it."""


class Candidate(NamedTuple):
    """One of a stream's lowest events, as a scavenge batch reads it."""

    position: int
    version: int
    id: Any  # bytes (SQLite) or uuid.UUID (PostgreSQL): written back as read
    recorded_at: int
    link: bytes | None


class StreamRules(NamedTuple):
    """A stream's row of the streams table: its state and read rules."""

    state: int
    truncate_before: int | None
    max_count: int | None
    max_age: float | None


def hidden_because(
    found: StreamRules, last: int, event: Candidate, oldest: int | None
) -> str | None:
    """Why reads no longer show ``event`` of a stream whose last version is ``last``
    (``oldest``: the oldest visible time in microseconds, None without ``max_age``); None
    if they still do."""
    if found.state == TOMBSTONED:
        return "tombstoned"
    if found.state == SOFT_DELETED:
        return "deleted"
    if found.truncate_before is not None and event.version < found.truncate_before:
        return "truncate_before"
    if found.max_count is not None and event.version < last - found.max_count + 1:
        return "max_count"
    if oldest is not None and event.recorded_at < oldest:
        return "max_age"
    return None


def removable(
    found: StreamRules, last: int, events: Sequence[Candidate], floor: int, now: dt.datetime
) -> list[tuple[Candidate, str]]:
    """The prefix of ``events`` (a stream's lowest, in version order) that may go: hidden
    and at or below ``floor``. It stops at the first event that must stay, so a stream
    only ever loses its oldest events and its surviving versions stay contiguous."""
    limit = rules.oldest_visible_time(StreamMetadata(max_age=found.max_age), now)
    oldest = None if limit is None else _micros(limit)
    taken = []
    for event in events:
        why = None if event.position > floor else hidden_because(found, last, event, oldest)
        if why is None:
            break
        taken.append((event, why))
    return taken


class Dialect(NamedTuple):
    """What differs between the backends' SQL: table names, placeholders, locking."""

    events: str
    removals: str
    streams: str
    snapshots: str
    mark: str
    """The driver's placeholder (``?`` or ``%s``)."""
    lock: str
    """Appended to the read of a stream's rules: PostgreSQL locks the row (``FOR UPDATE``)
    so a concurrent rule change waits; SQLite holds the file's write lock already."""
    head: str
    """The newest position ever given."""
    tables: str
    """The names of the store database's tables among ``?`` (one placeholder per name)."""
    used_for: str
    """An event's metadata keys recording its command (``idempotency``), as a JSON object
    without nulls; NULL for an event no command with an id wrote."""

    def sql(self, text: str) -> str:
        return text.format(
            events=self.events,
            removals=self.removals,
            streams=self.streams,
            snapshots=self.snapshots,
            lock=self.lock,
            used_for=self.used_for,
        ).replace("?", self.mark)


SQLITE: Final = Dialect(
    events="events",
    removals="removals",
    streams="streams",
    snapshots="snapshots",
    mark="?",
    lock="",
    head=sqlite_chain.HEAD,
    tables="SELECT name FROM sqlite_master WHERE type = 'table' AND name IN (%s)",
    used_for=(
        "CASE WHEN metadata ->> '$.command' IS NOT NULL THEN json_patch('{}', json_object("
        "'command', metadata -> '$.command', 'command_digest', metadata -> '$.command_digest',"
        " 'command_stream', metadata -> '$.command_stream')) END"
    ),
)
POSTGRES: Final = Dialect(
    events="eskit_events",
    removals="eskit_removals",
    streams="eskit_streams",
    snapshots="eskit_snapshots",
    mark="%s",
    lock=" FOR UPDATE",
    head="SELECT position FROM eskit_head",
    tables=(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND c.relname IN (%s)"
    ),
    used_for=(
        "(SELECT CASE WHEN m -> 'command' IS NOT NULL THEN jsonb_strip_nulls(jsonb_build_object("
        "'command', m -> 'command', 'command_digest', m -> 'command_digest',"
        " 'command_stream', m -> 'command_stream'))::text END"
        " FROM (SELECT metadata::jsonb AS m) AS parsed)"
    ),
)


class Step(NamedTuple):
    """What one scavenge transaction did: how many of the streams it was given it finished
    (the next transaction starts at the first unfinished one) and the events it removed,
    by reason."""

    finished: int
    removed: Counter[str]


def floor(conn: Any, dialect: Dialect) -> int:
    """The highest position a scavenge may remove: the lowest checkpoint of the registered
    consumers, or the head if there are none."""
    names = [table for table, _ in CONSUMER_CHECKPOINTS]
    marks = ", ".join("?" * len(names))
    present = {row[0] for row in conn.execute(dialect.sql(dialect.tables % marks), names)}
    lowest = int(conn.execute(dialect.head).fetchone()[0] or 0)
    for table, column in CONSUMER_CHECKPOINTS:
        if table in present:
            found = conn.execute(f"SELECT min({column}) FROM {table}").fetchone()[0]
            if found is not None:
                lowest = min(lowest, int(found))
    return lowest


def scavenge_streams(
    conn: Any,
    dialect: Dialect,
    streams: Sequence[str],
    budget: int,
    now: dt.datetime,
    removed_by: str,
) -> Step:
    """Remove what may go of ``streams``, in order, up to ``budget`` events, in the
    caller's transaction; see the module's docstring."""
    limit = floor(conn, dialect)
    removed: Counter[str] = Counter()
    for index, stream in enumerate(streams):
        taken, done = _scavenge_stream(conn, dialect, stream, limit, budget, now, removed_by)
        removed.update(taken)
        budget -= sum(taken.values())
        if not done:
            return Step(index, removed)
    return Step(len(streams), removed)


def _scavenge_stream(
    conn: Any,
    dialect: Dialect,
    stream: str,
    floor: int,
    budget: int,
    now: dt.datetime,
    removed_by: str,
) -> tuple[Counter[str], bool]:
    """Remove up to ``budget`` of the stream's hidden oldest events: what went, by reason,
    and whether the stream is done (nothing more may go now)."""
    q = dialect.sql
    row = conn.execute(
        q(
            "SELECT state, truncate_before, max_count, max_age FROM {streams}"
            " WHERE stream = ?{lock}"
        ),
        (stream,),
    ).fetchone()
    if row is None:
        return Counter(), True
    found = StreamRules(*row)
    last = conn.execute(q("SELECT max(version) FROM {events} WHERE stream = ?"), (stream,))
    last_version = last.fetchone()[0]
    if last_version is None or budget <= 0:
        return Counter(), last_version is None
    rows = conn.execute(
        q(
            "SELECT position, version, id, recorded_at, hash FROM {events}"
            " WHERE stream = ? ORDER BY version LIMIT ?"
        ),
        (stream, budget),
    ).fetchall()
    taken = removable(found, last_version, [Candidate(*r) for r in rows], floor, now)
    _remove(conn, dialect, stream, taken, last_version, now, removed_by)
    if found.truncate_before is not None:  # snapshots reads no longer show go too
        conn.execute(
            q("DELETE FROM {snapshots} WHERE stream = ? AND version < ?"),
            (stream, found.truncate_before),
        )
    done = len(taken) < len(rows) or len(rows) < budget
    return Counter(why for _, why in taken), done


def _remove(
    conn: Any,
    dialect: Dialect,
    stream: str,
    taken: Sequence[tuple[Candidate, str]],
    last_version: int,
    now: dt.datetime,
    by: str,
) -> None:
    """Record and delete ``taken`` (a prefix of the stream, in version order) in the
    caller's transaction; keep the stream's head if its last event goes, and give the
    stream a row in any case: a stream without one never hid an event (what
    ``Engine.events_after`` relies on)."""
    if not taken:
        return
    q = dialect.sql
    at = _micros(now)
    for why, first, last in _runs(taken):  # one statement per run of one reason
        conn.execute(
            q(
                "INSERT INTO {removals} (position, stream, version, reason, removed_at,"
                " removed_by, id, link, used_for)"
                " SELECT position, stream, version, ?, ?, ?, id, hash, {used_for}"
                " FROM {events} WHERE stream = ? AND version >= ? AND version <= ?"
            ),
            (why, at, by, stream, first, last),
        )
    conn.execute(
        q("DELETE FROM {events} WHERE stream = ? AND version >= ? AND version <= ?"),
        (stream, taken[0][0].version, taken[-1][0].version),
    )
    newest = taken[-1][0]
    if newest.version == last_version:  # the stream keeps its head
        conn.execute(
            q(
                "INSERT INTO {streams} (stream, last_version, last_link) VALUES (?, ?, ?)"
                " ON CONFLICT (stream) DO UPDATE"
                " SET last_version = excluded.last_version, last_link = excluded.last_link"
            ),
            (stream, newest.version, newest.link),
        )
    else:
        conn.execute(
            q("INSERT INTO {streams} (stream) VALUES (?) ON CONFLICT (stream) DO NOTHING"),
            (stream,),
        )


def _runs(taken: Sequence[tuple[Candidate, str]]) -> list[tuple[str, int, int]]:
    """``taken`` as runs of consecutive versions removed for one reason: (reason, first
    version, last version)."""
    runs: list[tuple[str, int, int]] = []
    for event, why in taken:
        if runs and runs[-1][0] == why:
            runs[-1] = (why, runs[-1][1], event.version)
        else:
            runs.append((why, event.version, event.version))
    return runs


ROW_COLUMNS: Final = "position, id, stream, version, type, data, metadata, recorded_at, hash"
"""An event as archives keep it: every column but the category (the stream's prefix)."""


def stream_rows(
    conn: Any, dialect: Dialect, stream: str, after_version: int, limit: int
) -> list[tuple[Any, ...]]:
    """The stream's events as stored (``ROW_COLUMNS``) past ``after_version``, by version."""
    rows = conn.execute(
        dialect.sql(
            f"SELECT {ROW_COLUMNS} FROM {{events}} WHERE stream = ? AND version > ?"
            " ORDER BY version LIMIT ?"
        ),
        (stream, after_version, limit),
    ).fetchall()
    return [tuple(row) for row in rows]


def remove_through(
    conn: Any, dialect: Dialect, stream: str, version: int, now: dt.datetime, by: str
) -> int | None:
    """Remove the stream's events up to ``version`` as ``archived`` (the caller archived
    them), in the caller's transaction: how many, or None if a registered consumer has not
    passed them yet (then nothing is removed)."""
    q = dialect.sql
    conn.execute(q("SELECT stream FROM {streams} WHERE stream = ?{lock}"), (stream,)).fetchall()
    last = conn.execute(q("SELECT max(version) FROM {events} WHERE stream = ?"), (stream,))
    last_version = last.fetchone()[0]
    rows = conn.execute(
        q(
            "SELECT position, version, id, recorded_at, hash FROM {events}"
            " WHERE stream = ? AND version <= ? ORDER BY version"
        ),
        (stream, version),
    ).fetchall()
    if not rows or last_version is None:
        return 0
    if rows[-1][0] > floor(conn, dialect):
        return None
    _remove(
        conn, dialect, stream, [(Candidate(*r), "archived") for r in rows], last_version, now, by
    )
    return len(rows)


def restore_rows(conn: Any, dialect: Dialect, rows: Sequence[tuple[Any, ...]]) -> int:
    """Put archived events back at their positions, ids, links and times (``ROW_COLUMNS``),
    in the caller's transaction; those already in the log are left alone. How many went in."""
    q = dialect.sql
    cursor = conn.cursor()
    added = 0
    for row in rows:
        cursor.execute(
            q(
                f"INSERT INTO {{events}} ({ROW_COLUMNS}, category)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
            ),
            (*row, rules.category(row[2])),
        )
        added += cursor.rowcount
    return added


def removed_page(conn: Any, dialect: Dialect, after: int, limit: int) -> list[Removal]:
    """The removal records past position ``after``, in position order."""
    rows = conn.execute(
        dialect.sql(
            "SELECT position, stream, version, id, link, reason FROM {removals}"
            " WHERE position > ? ORDER BY position LIMIT ?"
        ),
        (after, limit),
    ).fetchall()
    return [Removal(p, s, v, _id_bytes(i), link, why) for p, s, v, i, link, why in rows]


def find_removed(conn: Any, dialect: Dialect, event_id: Any) -> Removal | None:
    """The removal record of the event with this id (as the driver stores ids), or None."""
    rows = conn.execute(
        dialect.sql(
            "SELECT position, stream, version, id, link, reason, used_for FROM {removals}"
            " WHERE id = ?"
        ),
        (event_id,),
    ).fetchall()
    if not rows:
        return None
    position, stream, version, id_, link, why, used_for = rows[0]
    recorded = None if used_for is None else msgspec.json.decode(used_for)
    return Removal(position, stream, version, _id_bytes(id_), link, why, recorded)


def _id_bytes(id_: Any) -> bytes | None:
    return None if id_ is None else (id_ if isinstance(id_, bytes) else id_.bytes)


def _micros(moment: dt.datetime) -> int:
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class Scavenger(Protocol):
    """A backend's scavenging primitives, blocking (``EventStore.scavenger()``)."""

    def candidates(self, after: str, limit: int) -> list[str]:
        """Names of streams with a row in the streams table (deleted or with read rules),
        after ``after``, in order."""
        ...

    def count_candidates(self) -> int: ...

    def step(self, streams: Sequence[str], budget: int, now: dt.datetime, by: str) -> Step:
        """``scavenge_streams`` in one transaction of its own."""
        ...

    def removed_page(self, after: int, limit: int) -> list[Removal]: ...

    def rows(self, stream: str, after_version: int, limit: int) -> list[tuple[Any, ...]]:
        """``stream_rows`` (for archives)."""
        ...

    def remove_through(self, stream: str, version: int, now: dt.datetime, by: str) -> int | None:
        """``remove_through`` in one transaction of its own."""
        ...

    def restore(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """``restore_rows`` in one transaction of its own."""
        ...

    def size(self) -> int:
        """Bytes the store's log takes (file pages in use, or the tables' relation size)."""
        ...

    def maintain(self, full: bool) -> str:
        """Give the space back after a scavenge (``full``: SQLite's blocking VACUUM);
        a sentence saying what was done."""
        ...

    def close(self) -> None: ...


def writable_scavenger(store: Any) -> Scavenger:
    """``store``'s scavenger; ``ValueError`` for a store that has none or is read-only."""
    scavenger: Scavenger | None = store.scavenger()
    if scavenger is None:
        raise ValueError(f"{type(store).__name__} keeps nothing to scavenge, archive or restore")
    if store.readonly:
        raise ValueError("the store is open read-only: scavenging, archives and restores write")
    return scavenger


class ScavengeReport(msgspec.Struct):
    """What a scavenge did."""

    streams: int = 0
    """Streams looked at (those deleted or with read rules)."""
    removed: dict[str, int] = msgspec.field(default_factory=dict)
    """Events removed, by reason."""
    size_before: int = 0
    size_after: int = 0
    seconds: float = 0.0
    maintenance: str = ""

    @property
    def total(self) -> int:
        return sum(self.removed.values())


Progress = Callable[[int, int, int], None]
"""Called after each transaction with streams done, streams in all, events removed."""


async def scavenge(
    store: Any,
    *,
    batch_size: int = 1000,
    removed_by: str = "eskit scavenge",
    progress: Progress | None = None,
    maintain: bool = True,
    full_vacuum: bool = False,
) -> ScavengeReport:
    """Scavenge ``store`` (an open ``EventStore``) online; see the module's docstring.

    Each transaction removes at most ``batch_size`` events. Raises ``ValueError`` for a
    store that cannot scavenge (the memory store) or a bad argument. ``eskit.sync.scavenge``
    is the same for a blocking store.
    """
    steps = scavenging(store, batch_size, removed_by, progress, maintain, full_vacuum)
    return await procedure.run_async(steps)


def scavenging(
    store: Any,
    batch_size: int,
    removed_by: str,
    progress: Progress | None,
    maintain: bool,
    full_vacuum: bool,
) -> procedure.Procedure[ScavengeReport]:
    """``scavenge`` as a procedure (``eskit.store.procedure``) for either face's store."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not isinstance(removed_by, str) or not removed_by:
        raise ValueError("removed_by must be a non-empty str (it is recorded with each removal)")
    scavenger = writable_scavenger(store)
    return _scavenging(
        scavenger, store.clock, batch_size, removed_by, progress, maintain, full_vacuum
    )


def _scavenging(
    scavenger: Scavenger,
    clock: Callable[[], dt.datetime],
    batch_size: int,
    removed_by: str,
    progress: Progress | None,
    maintain: bool,
    full_vacuum: bool,
) -> procedure.Procedure[ScavengeReport]:
    started = time.monotonic()
    try:
        report = ScavengeReport(size_before=(yield scavenger.size))
        total = yield scavenger.count_candidates
        removed: Counter[str] = Counter()
        after, done = "", 0
        while True:
            page = yield functools.partial(scavenger.candidates, after, 500)
            if not page:
                break
            pending = list(page)
            while pending:
                step = yield functools.partial(
                    scavenger.step, pending, batch_size, clock(), removed_by
                )
                removed.update(step.removed)
                done += step.finished
                pending = pending[step.finished :]
                if progress is not None:
                    progress(done, max(total, done), sum(removed.values()))
            after = page[-1]
        report.streams = done
        report.removed = {why: removed[why] for why in REASONS if removed[why]}
        if maintain:
            report.maintenance = yield functools.partial(scavenger.maintain, full_vacuum)
        report.size_after = yield scavenger.size
    finally:
        yield scavenger.close
    report.seconds = time.monotonic() - started
    return report
