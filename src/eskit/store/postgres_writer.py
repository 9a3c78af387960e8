"""The PostgreSQL writer: one task per store that commits every write of the process in
groups, and the group it checks each request against.

- Group commit: every write of this process is queued to the writer task, which takes all
  the requests waiting, runs them in one transaction (one lock, one WAL flush) and checks
  each on its own against the stream heads as they stand inside the group (``Group``), so
  a conflict fails that request alone. Callers are answered after COMMIT; if the
  transaction fails, each request is tried again alone so that one bad request cannot fail
  the others.
- Every event's hash link covers its position, so the writer numbers and hashes the rows
  itself, from a head it knows: the long way locks the head row and reads it first.
- One statement per group when it can: the writer remembers the log's head and the stream
  heads it saw commit, checks a group against them here (``rules``, the one place the
  rules live), numbers and hashes its rows from that head and sends it to
  ``eskit_append_group`` (migration 005, ``postgres_append``), which writes it only if the
  heads still hold; otherwise, and for operations, retries and inline projections, the
  group runs the long way (lock, read the heads, check, insert), with the same outcome.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, NamedTuple

import msgspec
import psycopg
import psycopg_pool

from eskit.errors import StoreError, StoreUnavailable, StreamDeleted
from eskit.store import rules
from eskit.store.base import Clock
from eskit.store.chain import link
from eskit.store.model import ANY, NO_STREAM, AppendResult, RecordedEvent
from eskit.store.postgres_append import (
    append_group,
    append_group_and_commit,
    lock_head,
    roll_back,
)
from eskit.store.postgres_inline import InlineGroup, InlineProjections, Refused
from eskit.store.postgres_reads import LIVE, SOFT_DELETED, TOMBSTONED
from eskit.store.rules import ExistingEvent, PreparedAppend
from eskit.store.sqlite_writer import micros, moment

_INSERT: Final = (
    "INSERT INTO eskit_events (position, id, stream, category, version, type, data, metadata,"
    " recorded_at, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_ROW_KEYS: Final = (
    "position",
    "id",
    "stream",
    "category",
    "version",
    "type",
    "data",
    "metadata",
    "_",
    "hash",
)
"""The names of a ``Group`` row's values in ``eskit_append_group``'s JSON."""
_KNOWN_STREAMS: Final = 10_000
"""At most this many stream heads are remembered for the one-statement path."""
Connection = psycopg.AsyncConnection[Any]
Operation = Callable[[Connection], Awaitable[Any]]
Outcome = tuple["Request", Any, BaseException | None]


class Request:
    """A write queued for the writer task: appends, or an operation on the connection."""

    __slots__ = ("appends", "future", "generated", "operation", "retried")

    def __init__(
        self,
        appends: list[PreparedAppend] | None,
        operation: Operation | None,
        generated: frozenset[uuid.UUID] = frozenset(),
    ) -> None:
        self.appends, self.operation = appends, operation
        self.generated = generated
        """Ids eskit gave the events: new, so nobody can have written them, unless this
        request is tried again after a failed transaction (``retried``)."""
        self.retried = False
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()


class Head(NamedTuple):
    """A stream as the writer last saw it commit: what the one-statement path expects."""

    last: int | None
    state: int
    link: bytes | None


class _Mark(NamedTuple):
    """How far a group had got before an append, to forget the append if it is refused."""

    head: int
    rows: int
    revived: int
    heads: dict[str, tuple[int | None, int] | None]
    links: dict[str, bytes | None]


class Group:
    """The writes of one transaction: checked request by request against the heads as they
    stand in the group, rows numbered from the locked head and inserted together."""

    def __init__(
        self, conn: Connection, head: int, recorded_at: int, key: bytes | None = None
    ) -> None:
        self.conn = conn
        self.start = head
        """The log's head before the group: its rows are numbered (and hashed) from here."""
        self.head = head
        self.recorded_at = recorded_at
        self.key = key
        self.heads: dict[str, tuple[int | None, int]] = {}
        self.links: dict[str, bytes | None] = {}
        """The link of each stream's last event, as the group goes (``chain.link``)."""
        self.earlier: dict[uuid.UUID, ExistingEvent] = {}
        self.rows: list[tuple[Any, ...]] = []
        self.revived: list[str] = []

    async def load(self, requests: list[Request]) -> None:
        """The heads of every stream and the earlier home of every id that may have been
        written before, in two queries. Planned afresh each time (``prepare=False``): a
        plan cached while the table was small would scan it whole for ever after."""
        appends = [a for r in requests if r.appends for a in r.appends]
        streams = list({a.stream: None for a in appends})
        if streams:
            cursor = await self.conn.execute(
                "SELECT s.name, (SELECT max(version) FROM eskit_events WHERE stream = s.name),"
                " (SELECT state FROM eskit_streams WHERE stream = s.name),"
                " (SELECT hash FROM eskit_events WHERE stream = s.name"
                " ORDER BY version DESC LIMIT 1)"
                " FROM unnest(%s::text[]) AS s(name)",
                (streams,),
                prepare=False,
            )
            for stream, last, state, last_link in await cursor.fetchall():
                self.heads[stream] = (last, LIVE if state is None else state)
                self.links[stream] = last_link
        ids = _ids_to_look_up(requests)
        if ids:
            cursor = await self.conn.execute(
                "SELECT id, stream, version, position FROM eskit_events WHERE id = ANY(%s)",
                (ids,),
                prepare=False,
            )
            for id_, stream, version, position in await cursor.fetchall():
                self.earlier[id_] = ExistingEvent(stream, version, position)

    def add_all(
        self,
        requests: list[Request],
        outcomes: list[Outcome],
        inline: Callable[[list[RecordedEvent]], None] | None = None,
    ) -> None:
        """Add each request, and give the events of each to ``inline`` (inline projections)
        at once; a request it refuses is forgotten. A request that fails fails alone."""
        for request in requests:
            assert request.appends is not None
            mark = self._mark(request.appends)
            try:
                results = self.add(request.appends)
                if inline is not None and len(self.rows) > mark.rows:
                    inline(self._events_since(mark))
            except (Refused, psycopg.OperationalError):
                raise  # the group must be run again; the connection is gone
            except Exception as error:
                self._undo(mark)
                outcomes.append((request, None, error))
                continue
            outcomes.append((request, results, None))

    def add(self, appends: list[PreparedAppend]) -> list[AppendResult]:
        """Check every part, then number its rows; raises (writing nothing) if one fails."""
        checked = [self._check(append) for append in appends]
        results = []
        for append, outcome in zip(appends, checked, strict=True):
            if isinstance(outcome, AppendResult):
                results.append(outcome)
            else:
                results.append(self._queue(append, *outcome))
        return results

    def _check(self, append: PreparedAppend) -> AppendResult | tuple[int, bool]:
        stream, expected = append.stream, append.expected
        last, state = self.heads.get(stream, (None, LIVE))
        if state == TOMBSTONED:
            raise StreamDeleted(stream)
        ids = [e.id for e in append.events]
        if any(id_ is not None for id_ in ids):
            existing = [None if id_ is None else self.earlier.get(id_) for id_ in ids]
            replayed = rules.replayed_append(stream, expected, existing)
            if replayed is not None:
                return replayed
        rules.check_version_matches(stream, expected, last, state == SOFT_DELETED)
        return (0 if last is None else last + 1, state == SOFT_DELETED)

    def _queue(self, append: PreparedAppend, first: int, revives: bool) -> AppendResult:
        stream, events = append.stream, append.events
        category, at, key = rules.category(stream), self.recorded_at, self.key
        previous = self.links.get(stream)
        for i, event in enumerate(events):
            self.head += 1
            id_ = event.id
            assert id_ is not None, "ids are given before the first attempt (PostgresStore)"
            version, kind, data, meta = first + i, event.type, event.data, event.metadata
            previous = link(previous, self.head, stream, version, id_, kind, data, meta, at, key)
            self.rows.append(
                (self.head, id_, stream, category, version, kind, data, meta, at, previous)
            )
            self.earlier[id_] = ExistingEvent(stream, first + i, self.head)
        self.heads[stream] = (first + len(events) - 1, LIVE)
        self.links[stream] = previous
        if revives:
            self.revived.append(stream)
        return AppendResult(first + len(events) - 1, self.head, len(events))

    def _mark(self, appends: list[PreparedAppend]) -> _Mark:
        heads = {a.stream: self.heads.get(a.stream) for a in appends}
        links = {a.stream: self.links.get(a.stream) for a in appends}
        return _Mark(self.head, len(self.rows), len(self.revived), heads, links)

    def _undo(self, mark: _Mark) -> None:
        """Forget what was queued since ``mark`` (its positions are given again)."""
        for row in self.rows[mark.rows :]:
            del self.earlier[row[1]]
        del self.rows[mark.rows :], self.revived[mark.revived :]
        self.head = mark.head
        for stream, head in mark.heads.items():
            if head is None:
                self.heads.pop(stream, None)
            else:
                self.heads[stream] = head
        self.links.update(mark.links)

    def _events_since(self, mark: _Mark) -> list[RecordedEvent]:
        """The rows queued since ``mark``, as readers will see them."""
        decode, at = msgspec.json.decode, moment(self.recorded_at)
        return [
            RecordedEvent(id_, stream, version, position, type_, decode(data), decode(meta), at)
            for position, id_, stream, _, version, type_, data, meta, *_ in self.rows[mark.rows :]
        ]

    def expect(self, heads: dict[str, Head]) -> None:
        """Start from ``heads`` instead of loading them (the one-statement path)."""
        for stream, head in heads.items():
            self.heads[stream] = (head.last, head.state)
            self.links[stream] = head.link

    def known(self) -> dict[str, Head]:
        """The heads of the group's streams after it: true once it has committed."""
        return {
            stream: Head(last, state, self.links.get(stream))
            for stream, (last, state) in self.heads.items()
        }

    def arguments(
        self, expected: dict[str, Head], given: list[uuid.UUID], channel: str
    ) -> tuple[Any, ...]:
        """``_APPEND_GROUP``'s arguments: the heads expected, the caller's ids, the rows, as
        JSON (msgspec encodes it far faster than psycopg dumps arrays)."""
        heads = [
            {"stream": stream, "last": head.last, "state": head.state, "link": head.link}
            for stream, head in expected.items()
        ]
        rows = [dict(zip(_ROW_KEYS, row, strict=True)) for row in self.rows]
        encode = msgspec.json.encode
        return (
            self.start,
            encode(heads).decode(),
            encode(given).decode(),
            encode(rows).decode(),
            self.recorded_at,
            self.revived,
            channel,
        )

    async def flush(self) -> None:
        """Insert the rows queued so far (before an operation that may read them)."""
        if self.rows:
            async with self.conn.cursor() as cursor:
                await cursor.executemany(_INSERT, self.rows)
            self.rows = []
        if self.revived:
            await self.conn.execute(
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
    """The writer task of one store, on a connection of its own: takes the requests
    waiting, commits them as a group, answers each after COMMIT."""

    def __init__(
        self,
        conninfo: str,
        configure: Callable[[Connection], Awaitable[None]],
        *,
        channel: str,
        max_batch: int,
        clock: Clock,
        key: bytes | None,
        inline: InlineProjections,
        head: int | None,
        committed: Callable[[], None],
    ) -> None:
        self.conninfo, self._configure = conninfo, configure
        self.channel = channel
        """Notified in each transaction that appends (wakes every process's listeners)."""
        self.max_batch = max_batch
        self.clock, self.key, self.inline = clock, key, inline
        self.committed = committed
        """Called after each group is answered (wakes this process's subscriptions)."""
        self.before_commit: Callable[[], Awaitable[None]] | None = None
        """Fault injection for tests (``PostgresStore.before_commit``)."""
        self._queue: asyncio.Queue[Request | None] = asyncio.Queue()
        self._writer_conn: Connection | None = None
        self._known: dict[str, Head] = {}
        """Stream heads this writer saw commit: what the one-statement path expects."""
        self._head = head
        """The log's head after this writer's last commit (None: not known): the position
        the one-statement path numbers its rows from."""
        self._contended = False
        """Another process moved the head since this writer's previous commit: lock it
        before numbering (``postgres_append``)."""
        self._task = asyncio.create_task(self._write_loop(), name="eskit-postgres-writer")

    @property
    def running(self) -> bool:
        return not self._task.done()

    async def submit(self, request: Request) -> Any:
        """Queue ``request`` and wait for its answer, given after its group's COMMIT."""
        await self._queue.put(request)
        return await request.future

    async def stop(self) -> None:
        """Commit what is queued and stop the task."""
        await self._queue.put(None)
        await self._task

    async def close(self) -> None:
        """Close the connection (after ``stop``)."""
        if self._writer_conn is not None:
            await self._writer_conn.close()
            self._writer_conn = None

    async def _write_loop(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stop = True
                    break
                batch.append(item)
            await self._commit(batch)
            if stop:
                return

    async def _commit(self, batch: list[Request]) -> None:
        """Run the batch in one transaction (if an inline projection refused an append: again,
        with a savepoint per append); if that fails as a whole, each request alone."""
        try:
            try:
                outcomes = await self._in_one_statement(batch)
                if outcomes is None:
                    outcomes = await self._transaction(batch)
            except Refused:
                outcomes = await self._transaction(batch, savepoints=True)
        except Exception:
            # Each request again, alone: one bad request cannot fail the others, and if the
            # COMMIT went through but its answer was lost, a request's retry is a replay.
            outcomes = []
            for request in batch:
                request.retried = True  # its COMMIT may have gone through: look its ids up
                try:
                    outcomes += await self._transaction([request], savepoints=True)
                except Exception as error:
                    outcomes.append((request, None, transaction_failed(error)))
        for request, value, failure in outcomes:
            if request.future.done():
                continue
            if failure is None:
                request.future.set_result(value)
            else:
                request.future.set_exception(failure)
        self.committed()

    async def _in_one_statement(self, batch: list[Request]) -> list[Outcome] | None:
        """Run the batch as one call of ``eskit_append_group``, checked here against the
        heads this writer saw commit; None (nothing written) if it cannot be done so: the
        batch holds an operation, a retry, a stream not seen and not expected to be new,
        inline projections run, or another process moved one of the streams meanwhile.
        While other processes write too (the log's head this writer remembered was stale),
        the head is locked and read first (``postgres_append``)."""
        expected = self._expected_heads(batch)
        if expected is None or self._head is None:
            return None
        conn = await self._connection()
        try:
            if not self._contended:
                outcomes = await self._one_statement(conn, batch, expected, self._head)
                if outcomes is not None:
                    return outcomes
                self._contended = True  # or a stream moved: the locked try will tell
            if self.before_commit is not None:
                return None
            head = await lock_head(conn)
            self._contended = head != self._head
            return await self._one_statement(conn, batch, expected, head, locked=True)
        except psycopg.OperationalError:
            self._head = None
            await conn.close()  # broken: the next transaction opens a new one
            raise
        except BaseException:
            await roll_back(conn)
            raise

    async def _one_statement(
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
            written = await append_group_and_commit(conn, arguments)
        elif self.before_commit is None:  # autocommit: one round trip
            written = await append_group(conn, arguments)
        else:
            async with conn.transaction():
                written = await append_group(conn, arguments)
                if written:
                    await self.before_commit()
        if not written:
            return None
        self._remember(group.known(), group.head)
        return outcomes

    def _expected_heads(self, batch: list[Request]) -> dict[str, Head] | None:
        """The head the one-statement path expects of each stream of ``batch``: as this
        writer last saw it commit, else empty if the stream is expected to be new."""
        if self.inline.hooks:
            return None
        expected: dict[str, Head] = {}
        for request in batch:
            if request.appends is None or request.retried:
                return None
            for append in request.appends:
                if append.stream in expected:
                    continue
                head = self._known.get(append.stream)
                if head is None:
                    if append.expected is not NO_STREAM and append.expected is not ANY:
                        return None
                    head = Head(None, LIVE, None)
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

    async def _transaction(self, batch: list[Request], savepoints: bool = False) -> list[Outcome]:
        outcomes: list[Outcome] = []
        conn = await self._connection()
        try:
            async with conn.transaction():
                group = await self._group(conn, batch, outcomes, savepoints)
        except psycopg.OperationalError:
            self._head = None
            await conn.close()  # broken: the next transaction opens a new one
            raise
        if any(request.operation is not None for request in batch):
            self._known.clear()  # an operation may have changed any stream
        self._remember(group.known(), group.head)
        return outcomes

    async def _connection(self) -> Connection:
        """The writer's own connection (not borrowed from the pool for each group: no
        check round trip per transaction); reopened after it broke."""
        if self._writer_conn is None or self._writer_conn.closed:
            self._writer_conn = await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True
            )
            await self._configure(self._writer_conn)
        return self._writer_conn

    async def _group(
        self, conn: Connection, batch: list[Request], outcomes: list[Outcome], savepoints: bool
    ) -> Group:
        """The body of a group's transaction: lock the head, check and write each request."""
        cursor = await conn.execute("SELECT position FROM eskit_head FOR UPDATE")
        row = await cursor.fetchone()
        assert row is not None
        start = row[0]
        group = Group(conn, start, micros(self.clock()), self.key)
        await group.load(batch)
        hooks = self.inline.hooks
        inline = InlineGroup(hooks, start, savepoints) if hooks else None
        appends: list[Request] = []
        for request in batch:
            if request.appends is not None:
                appends.append(request)
                continue
            await self._add(conn, group, appends, outcomes, inline)
            appends = []
            assert request.operation is not None
            await group.flush()
            try:
                async with conn.transaction():  # a savepoint: it fails alone
                    value = await request.operation(conn)
                outcomes.append((request, value, None))
            except Exception as error:
                outcomes.append((request, None, error))
            group.heads.clear()  # the operation may have changed stream states
            group.links.clear()
            await group.load(batch)
        await self._add(conn, group, appends, outcomes, inline, last=True)
        await group.flush()
        if group.head != start:  # the new head and the wake-up in one statement
            await conn.execute(
                "UPDATE eskit_head SET position = %s RETURNING pg_notify(%s, '')",
                (group.head, self.channel),
            )
        if self.before_commit is not None:
            await self.before_commit()
        return group

    async def _add(
        self,
        conn: Connection,
        group: Group,
        requests: list[Request],
        outcomes: list[Outcome],
        inline: InlineGroup | None,
        last: bool = False,
    ) -> None:
        """Add a run of append requests to the group. With inline projections, on their
        thread (one hop for the run), which sends their waiting writes at the end of the run
        and, after the group's last appends, moves their checkpoints."""
        if inline is None:
            group.add_all(requests, outcomes)
            return

        def run(twin: psycopg.Connection[Any]) -> None:
            group.add_all(requests, outcomes, functools.partial(inline.apply, twin))
            inline.flush(twin, group.head if last else None)

        if requests or (last and inline.begun):
            await self.inline.call(conn, run)


def transaction_failed(error: Exception) -> StoreError:
    """The error a caller gets: unknown outcome if the connection failed (the COMMIT may
    have gone through), nothing written otherwise."""
    failure: StoreError
    if isinstance(error, psycopg.OperationalError | psycopg_pool.PoolTimeout):
        failure = StoreUnavailable(
            f"PostgreSQL could not be reached or dropped the connection ({error}); the write"
            " may or may not have been committed: appending the same events again with the"
            " same ids is safe (it is recognised as a replay)"
        )
    else:
        failure = StoreError(f"PostgreSQL transaction failed, nothing of it was written: {error}")
    failure.__cause__ = error
    return failure
