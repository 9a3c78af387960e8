"""The PostgreSQL writer: what one group commit (``group_commit``) runs, on the engine's one
write connection, each request decided by the append planner (``planner``).

- Group commit: the requests waiting when a commit starts run in one transaction (one
  lock, one WAL flush); the planner decides each on its own against the stream heads as
  they stand inside the group (``Group``), so a conflict fails that request alone. Callers
  are answered after COMMIT; if the transaction fails, each request is tried again alone
  so that one bad request cannot fail the others.
- Every event's hash link covers its position, so the writer numbers and hashes the rows
  itself, from a head it knows: the long way locks the head row and reads it first.
- One statement per group when it can: the writer remembers the log's head and the stream
  heads it saw commit, plans a group from them (``planner``, the one place an append is
  decided), which numbers and hashes its rows from that head, and sends it to
  ``eskit_append_group`` (migration 005, ``postgres_append``), which writes it only if the
  heads still hold; otherwise, and for operations, retries and inline projections, the
  group runs the long way (lock, read the heads, plan, insert), with the same outcome.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec
import psycopg
from psycopg import conninfo as libpq

from eskit.errors import OutcomeUnknown, StoreError, StoreUnavailable
from eskit.store.engine import Clock
from eskit.store.model import ANY, NO_STREAM, RecordedEvent
from eskit.store.planner import LIVE, NEW_STREAM, UNTOUCHED, Head, Planner, Row, lookups
from eskit.store.postgres_append import (
    append_group,
    append_group_and_commit,
    lock_head,
    roll_back,
)
from eskit.store.postgres_failover import (
    DEADLINE,
    Watchdog,
    connect_timeout,
    retrying,
    transient,
)
from eskit.store.postgres_inline import InlineGroup, InlineHook, Refused
from eskit.store.rules import ExistingEvent, PreparedAppend
from eskit.store.sqlite_writer import micros, recorded

_INSERT: Final = (
    "INSERT INTO eskit_events (position, stream, category, version, id, type, data, metadata,"
    " recorded_at, hash, content_type, raw_data, raw_metadata)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
"""A planner's row (``planner.Row``), its id as a UUID."""
_KNOWN_STREAMS: Final = 10_000
"""At most this many stream heads are remembered for the one-statement path."""
Connection = psycopg.Connection[Any]
Operation = Callable[[Connection], Any]
Outcome = tuple["Request", Any, BaseException | None]


class Request:
    """A write for the next group: appends, or an operation on the connection."""

    __slots__ = ("appends", "generated", "operation", "patient", "queued", "retried")

    def __init__(
        self,
        appends: list[PreparedAppend] | None,
        operation: Operation | None,
        generated: frozenset[uuid.UUID] = frozenset(),
        patient: bool = False,
    ) -> None:
        self.appends, self.operation = appends, operation
        self.patient = patient
        """An operation that may take longer than the deadline (catching a projection up):
        the watchdog leaves its transaction alone."""
        self.generated = generated
        """Ids eskit gave the events: new, so nobody can have written them, unless this
        request is tried again after a failed transaction (``retried``)."""
        self.retried = False
        self.queued = time.monotonic()
        """When it was made: a failover's retries of it end ``deadline`` seconds later."""


class Group:
    """The writes of one transaction: each run of appends between operations decided by a
    ``Planner`` (from the heads and ids read for the run, or expected), its rows inserted
    together."""

    def __init__(
        self, conn: Connection, start: int, recorded_at: int, key: bytes | None = None
    ) -> None:
        self.conn = conn
        self.start = start
        """The log's head before the group: its rows are numbered (and hashed) from here."""
        self.recorded_at = recorded_at
        self.key = key
        self.planner = Planner({}, {}, start + 1, recorded_at, key)
        """The planner of the current run (a run of appends between operations)."""
        self.rows: list[Row] = []
        self.revived: list[str] = []
        self.untouched: list[str] = []
        """The streams of the ``if_untouched`` appends planned (the one-statement path's
        function must check they have no ``eskit_streams`` row)."""

    @property
    def head(self) -> int:
        """The log's head after the rows planned so far."""
        return self.planner.next_position - 1

    def expect(self, heads: dict[str, Head]) -> None:
        """Plan from ``heads`` instead of reading them (the one-statement path): every
        stream of the group must be in it (a copy: the caller keeps ``heads``)."""
        self.planner = Planner(dict(heads), {}, self.head + 1, self.recorded_at, self.key)

    def forget(self) -> None:
        """Drop the heads planned from (an operation may have changed them)."""
        self.expect({})

    def load(self, requests: list[Request]) -> None:
        """Plan the run ``requests`` from what is written: the heads of its streams and the
        earlier home of every id that may have been written before, in two queries. Planned
        afresh each time (``prepare=False``): a plan cached while the table was small would
        scan it whole for ever after."""
        streams, _, _ = lookups(r.appends for r in requests if r.appends)
        heads: dict[str, Head] = {}
        if streams:
            cursor = self.conn.execute(
                "SELECT s.name, (SELECT max(version) FROM eskit_events WHERE stream = s.name),"
                " (SELECT hash FROM eskit_events WHERE stream = s.name"
                " ORDER BY version DESC LIMIT 1), t.state, t.last_version, t.last_link"
                " FROM unnest(%s::text[]) AS s(name)"
                " LEFT JOIN eskit_streams AS t ON t.stream = s.name",
                (streams,),
                prepare=False,
            )
            for stream, last, last_link, state, kept, kept_link in cursor.fetchall():
                if last is None and kept is not None:  # every event scavenged (migration 008)
                    last, last_link = kept, kept_link
                heads[stream] = Head(last, UNTOUCHED if state is None else state, last_link)
        earlier: dict[uuid.UUID, ExistingEvent] = {}
        ids = _ids_to_look_up(requests)
        if ids:
            cursor = self.conn.execute(
                "SELECT id, stream, version, position FROM eskit_events WHERE id = ANY(%s)"
                " UNION ALL SELECT id, stream, version, position FROM eskit_removals"
                " WHERE id = ANY(%s)",
                (ids, ids),
                prepare=False,
            )
            for id_, stream, version, position in cursor.fetchall():
                earlier[id_] = ExistingEvent(stream, version, position)
        self.planner = Planner(heads, earlier, self.head + 1, self.recorded_at, self.key)

    def add_all(
        self,
        requests: list[Request],
        outcomes: list[Outcome],
        inline: Callable[[list[RecordedEvent]], None] | None = None,
    ) -> None:
        """Plan each request, and give the events of each to ``inline`` (inline projections)
        at once; a request it refuses is forgotten. A request that fails fails alone."""
        planner = self.planner
        for request in requests:
            assert request.appends is not None
            plan = planner.plan(request.appends)
            if plan.error is not None:
                outcomes.append((request, None, plan.error))
                continue
            if inline is not None and plan.rows:
                try:
                    inline(recorded(plan.rows))
                except (Refused, psycopg.OperationalError):
                    raise  # the group must be run again; the connection is gone
                except Exception as error:
                    planner.undo()
                    outcomes.append((request, None, error))
                    continue
            self.rows += plan.rows
            self.revived += plan.revived
            for append in request.appends:
                if append.if_untouched:
                    self.untouched.append(append.stream)
            outcomes.append((request, plan.results, None))

    def known(self) -> dict[str, Head]:
        """The heads of the current run's streams after it: true once it has committed."""
        return self.planner.heads

    def arguments(
        self, expected: dict[str, Head], given: list[uuid.UUID], channel: str
    ) -> tuple[Any, ...]:
        """``_APPEND_GROUP``'s arguments: the heads expected, the caller's ids, the rows, as
        JSON (msgspec encodes it far faster than psycopg dumps arrays), and the streams that
        must have no ``eskit_streams`` row (those an ``if_untouched`` append planned for: the
        function takes a missing row for a live one). An id goes as its 32 hex digits, which
        PostgreSQL reads as a UUID."""
        heads = [
            {
                "stream": stream,
                "last": head.last,
                "state": LIVE if head.state == UNTOUCHED else head.state,
                "link": head.link,
            }
            for stream, head in expected.items()
        ]
        rows = [
            {
                "position": position,
                "stream": stream,
                "category": category,
                "version": version,
                "id": id_.hex(),
                "type": type_,
                "data": data,
                "metadata": metadata,
                "hash": hash_,
            }
            for position, stream, category, version, id_, type_, data, metadata, _, hash_, *_ in (
                self.rows
            )
        ]
        encode = msgspec.json.encode
        return (
            self.start,
            encode(heads).decode(),
            encode(given).decode(),
            encode(rows).decode(),
            self.recorded_at,
            self.revived,
            channel,
            self.untouched,
        )

    def flush(self) -> None:
        """Insert the rows queued so far (before an operation that may read them)."""
        if self.rows:
            rows = [
                (position, stream, category, version, uuid.UUID(bytes=id_), *rest)
                for position, stream, category, version, id_, *rest in self.rows
            ]
            with self.conn.cursor() as cursor:
                cursor.executemany(_INSERT, rows)
            self.rows = []
        if self.revived:
            self.conn.execute(
                "UPDATE eskit_streams SET state = 0 WHERE stream = ANY(%s)", (self.revived,)
            )
            self.revived = []


def _ids_to_look_up(requests: Sequence[Request]) -> list[uuid.UUID]:
    """The event ids that may have been written before: those callers gave, and all the
    ids of a request tried again (its COMMIT may have gone through)."""
    return [
        e.id
        for r in requests
        if r.appends
        for a in r.appends
        for e in a.events
        if e.id is not None and (r.retried or e.id not in r.generated)
    ]


class Writer:
    """The commit function of one engine's group commit (``commit``), on the engine's write
    connection (opened on first use, again after it broke). One thread at a time runs it."""

    def __init__(
        self,
        conninfo: str,
        configure: Callable[[Connection], None],
        *,
        channel: str,
        clock: Clock,
        key: bytes | None,
        head: int | None,
        deadline: float = DEADLINE,
    ) -> None:
        self.conninfo, self._configure = conninfo, configure
        self.deadline = deadline
        """Seconds a write keeps trying to reach the (new) primary (``postgres_failover``)."""
        self.closing = False
        """Set when the engine closes: a write waiting for the database gives up."""
        self._watchdog = Watchdog(deadline)
        self._patience: float | None = None
        """How long a new connection may take (per host): None, as the URL says; while a
        write is tried again, the time left before its deadline."""
        self.channel = channel
        """Notified in each transaction that appends (wakes every process's listeners)."""
        self.clock, self.key = clock, key
        self.inline: list[InlineHook] = []
        """The inline projections, changed only by operations: between groups."""
        self.before_commit: Callable[[], None] | None = None
        """Fault injection for tests (``PostgresStore.before_commit``)."""
        self._writer_conn: Connection | None = None
        self._known: dict[str, Head] = {}
        """Stream heads this writer saw commit: what the one-statement path expects."""
        self._head = head
        """The log's head after this writer's last commit (None: not known): the position
        the one-statement path numbers its rows from."""
        self._contended = False
        """Another process moved the head since this writer's previous commit: lock it
        before numbering (``postgres_append``)."""

    def close(self) -> None:
        """Close the connection (holding the lead: no group runs)."""
        self._watchdog.close()
        if self._writer_conn is not None:
            self._writer_conn.close()
            self._writer_conn = None
        self.inline = []

    def commit(
        self, batch: Sequence[Request]
    ) -> tuple[list[tuple[Any, BaseException | None]], bool]:
        """Run the batch in one transaction (if an inline projection refused an append: again,
        with a savepoint per append); if that fails as a whole, each request alone. Each
        request's value or error, in order, and whether anything may have been written."""
        batch = list(batch)
        # A new connection (after a failure) may take only the oldest request's time left.
        self._patience = max(0.0, batch[0].queued + self.deadline - time.monotonic())
        try:
            try:
                outcomes = self._in_one_statement(batch)
                if outcomes is None:
                    outcomes = self._transaction(batch)
            except Refused:
                outcomes = self._transaction(batch, savepoints=True)
        except Exception as error:
            # Each request again, alone: one bad request cannot fail the others, and if the
            # COMMIT went through but its answer was lost, a request's retry is a replay.
            outcomes = self._one_by_one(batch, sent=not isinstance(error, Unreached))
        finally:
            self._patience = None
        answers = {id(request): (value, failure) for request, value, failure in outcomes}
        wrote = any(failure is None for _, _, failure in outcomes)
        return [answers[id(request)] for request in batch], wrote

    def _one_by_one(self, batch: list[Request], sent: bool) -> list[Outcome]:
        """Each request of a batch that failed, alone; while the database cannot be reached
        (a failover), again with backoff until its deadline: ``deadline`` seconds after it
        was made (a ``patient`` one: after now), so that an append queued behind a group
        being retried does not wait for that group's deadline and then for its own. A
        request that was sent may have been committed: it looks its ids up, and is answered
        as a replay if it was."""
        now = time.monotonic()
        outcomes: list[Outcome] = []
        for request in batch:
            request.retried = True  # its COMMIT may have gone through: look its ids up
            unknown = sent

            def alone(seconds: float, request: Request = request) -> list[Outcome]:
                nonlocal unknown
                self._patience = seconds
                try:
                    return self._transaction([request], savepoints=True)
                except Unreached:
                    raise
                except Exception as error:
                    unknown = unknown or transient(error)
                    raise

            try:
                since = now if request.patient else min(now, request.queued)
                remaining = max(0.0, since + self.deadline - time.monotonic())
                outcomes += retrying(alone, remaining, lambda: self.closing)
            except Exception as error:
                outcomes.append((request, None, transaction_failed(error, unknown, self.deadline)))
        return outcomes

    def _in_one_statement(self, batch: list[Request]) -> list[Outcome] | None:
        """Run the batch as one call of ``eskit_append_group``, checked here against the
        heads this writer saw commit; None (nothing written) if it cannot be done so: the
        batch holds an operation, a retry, a stream not seen and not expected to be new,
        inline projections run, or another process moved one of the streams meanwhile.
        While other processes write too (the log's head this writer remembered was stale),
        the head is locked and read first (``postgres_append``)."""
        expected = self._expected_heads(batch)
        if expected is None or self._head is None:
            return None
        conn = self._connection()
        self._watchdog.sent(conn)
        try:
            if not self._contended:
                outcomes = self._one_statement(conn, batch, expected, self._head)
                if outcomes is not None:
                    return outcomes
                self._contended = True  # or a stream moved: the locked try will tell
            if self.before_commit is not None:
                return None
            head = lock_head(conn)
            self._contended = head != self._head
            return self._one_statement(conn, batch, expected, head, locked=True)
        except BaseException as error:
            if not transient(error):
                roll_back(conn)
                raise
            self._head = None
            conn.close()  # broken (or read-only): the next transaction opens a new one
            raise
        finally:
            self._watchdog.answered()

    def _one_statement(
        self,
        conn: Connection,
        batch: list[Request],
        expected: dict[str, Head],
        head: int,
        locked: bool = False,
    ) -> list[Outcome] | None:
        """Number and hash the batch's rows from ``head`` and send them; None if the
        function refused them. ``locked``: in the transaction ``lock_head`` began."""
        group = Group(conn, head, micros(self.clock()), self.key)
        group.expect(expected)
        outcomes: list[Outcome] = []
        group.add_all(batch, outcomes)
        given = _ids_to_look_up(batch)  # no request here is retried (_expected_heads)
        arguments = group.arguments(expected, given, self.channel)
        if locked:
            written = append_group_and_commit(conn, arguments)
        elif self.before_commit is None:  # autocommit: one round trip
            written = append_group(conn, arguments)
        else:
            with conn.transaction():
                written = append_group(conn, arguments)
                if written:
                    self.before_commit()
        if not written:
            return None
        self._remember(group.known(), group.head)
        return outcomes

    def _expected_heads(self, batch: list[Request]) -> dict[str, Head] | None:
        """The head the one-statement path expects of each stream of ``batch``: as this
        writer last saw it commit, else empty if the stream is expected to be new."""
        if self.inline:
            return None
        expected: dict[str, Head] = {}
        for request in batch:
            if request.appends is None or request.retried:
                return None
            for append in request.appends:
                if append.raw:  # eskit_append_group (written before them) takes no raw parts
                    return None
                if append.stream in expected:
                    continue
                head = self._known.get(append.stream)
                if head is None:
                    if append.expected is not NO_STREAM and append.expected is not ANY:
                        return None
                    head = NEW_STREAM
                expected[append.stream] = head
        return expected

    def _remember(self, heads: dict[str, Head], head: int) -> None:
        """Remember committed stream heads and the log's head for the one-statement path
        (a bounded guess: the statement checks it, so a stale one costs a round trip, never
        a wrong write)."""
        if len(self._known) > _KNOWN_STREAMS:
            self._known.clear()
        self._known.update(heads)
        self._head = head

    def _transaction(self, batch: list[Request], savepoints: bool = False) -> list[Outcome]:
        outcomes: list[Outcome] = []
        conn = self._connection()
        if not any(request.patient for request in batch):
            self._watchdog.sent(conn)
        try:
            with conn.transaction():
                group = self._group(conn, batch, outcomes, savepoints)
        except Exception as error:
            if transient(error):
                self._head = None
                conn.close()  # broken (or read-only): the next transaction opens a new one
            raise
        finally:
            self._watchdog.answered()
        if any(request.operation is not None for request in batch):
            self._known.clear()  # an operation may have changed any stream
        self._remember(group.known(), group.head)
        return outcomes

    def _connection(self) -> Connection:
        """The writer's own connection (not borrowed from the pool for each group: no
        check round trip per transaction); reopened after it broke. A statement the server
        does not answer within the deadline is cancelled (``Watchdog``)."""
        if self._writer_conn is None or self._writer_conn.closed:
            try:
                conninfo = self.conninfo
                if self._patience is not None:  # a retry: its last attempt ends in time
                    given = libpq.conninfo_to_dict(conninfo).get("connect_timeout")
                    timeout = connect_timeout(self._patience, given)
                    conninfo = libpq.make_conninfo(conninfo, connect_timeout=timeout)
                conn = psycopg.connect(conninfo, autocommit=True)
                self._configure(conn)
            except psycopg.OperationalError as error:
                raise Unreached(str(error)) from error
            self._writer_conn = conn
        return self._writer_conn

    def _group(
        self, conn: Connection, batch: list[Request], outcomes: list[Outcome], savepoints: bool
    ) -> Group:
        """The body of a group's transaction: lock the head, plan and write each request."""
        cursor = conn.execute("SELECT position FROM eskit_head FOR UPDATE")
        row = cursor.fetchone()
        assert row is not None
        start = row[0]
        group = Group(conn, start, micros(self.clock()), self.key)
        inline = InlineGroup(self.inline, start, savepoints) if self.inline else None
        appends: list[Request] = []
        for request in batch:
            if request.appends is not None:
                appends.append(request)
                continue
            self._add(conn, group, appends, outcomes, inline)
            appends = []
            assert request.operation is not None
            group.flush()
            try:
                with conn.transaction():  # a savepoint: it fails alone
                    value = request.operation(conn)
                outcomes.append((request, value, None))
            except Exception as error:
                outcomes.append((request, None, error))
            group.forget()  # the operation may have changed stream states
        self._add(conn, group, appends, outcomes, inline, last=True)
        group.flush()
        if group.head != start:  # the new head and the wake-up in one statement
            conn.execute(
                "UPDATE eskit_head SET position = %s RETURNING pg_notify(%s, '')",
                (group.head, self.channel),
            )
        if self.before_commit is not None:
            self.before_commit()
        return group

    def _add(
        self,
        conn: Connection,
        group: Group,
        requests: list[Request],
        outcomes: list[Outcome],
        inline: InlineGroup | None,
        last: bool = False,
    ) -> None:
        """Plan a run of append requests (read what it needs first) and add it to the group.
        With inline projections, each append's events are applied as it is planned; their
        waiting writes are sent at the end of the run and, after the group's last appends,
        their checkpoints moved."""
        if requests:
            group.load(requests)
        if inline is None:
            group.add_all(requests, outcomes)
            return
        if requests or (last and inline.begun):
            group.add_all(requests, outcomes, functools.partial(inline.apply, conn))
            inline.flush(conn, group.head if last else None)


class Unreached(psycopg.OperationalError):
    """The writer could not connect: nothing of the request was sent."""


def transaction_failed(error: Exception, sent: bool = True, deadline: float = 0.0) -> StoreError:
    """The error a caller gets: unknown outcome if the connection failed after the write
    was sent (the COMMIT may have gone through), nothing written otherwise."""
    failure: StoreError
    if transient(error) and sent:
        failure = OutcomeUnknown(
            f"PostgreSQL dropped the connection and could not be reached again within"
            f" {deadline:g} s ({_one_line(error)}); the write may or may not have been"
            " committed: appending the same events again with the same ids is safe (it is"
            " recognised as a replay)"
        )
    elif transient(error):
        failure = StoreUnavailable(
            f"PostgreSQL could not be reached within {deadline:g} s ({_one_line(error)});"
            " nothing was written"
        )
    else:
        failure = StoreError(f"PostgreSQL transaction failed, nothing of it was written: {error}")
    failure.__cause__ = error
    return failure


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
