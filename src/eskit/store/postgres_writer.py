"""The PostgreSQL writer: one task per store that commits every write of the process in
groups, each request decided by the append planner (``planner``).

- Group commit: every write of this process is queued to the writer task, which takes all
  the requests waiting, runs them in one transaction (one lock, one WAL flush) and has
  the planner decide each on its own against the stream heads as they stand inside the
  group (``Group``), so a conflict fails that request alone. Callers are answered after
  COMMIT; if the transaction fails, each request is tried again alone so that one bad
  request cannot fail the others.
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

import asyncio
import functools
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import msgspec
import psycopg
import psycopg_pool

from eskit.errors import StoreError, StoreUnavailable
from eskit.store.base import Clock
from eskit.store.model import ANY, NO_STREAM, RecordedEvent
from eskit.store.planner import LIVE, NEW_STREAM, Head, Planner, Row, lookups
from eskit.store.postgres_append import (
    append_group,
    append_group_and_commit,
    lock_head,
    roll_back,
)
from eskit.store.postgres_inline import InlineGroup, InlineProjections, Refused
from eskit.store.rules import ExistingEvent, PreparedAppend
from eskit.store.sqlite_writer import micros, recorded

_INSERT: Final = (
    "INSERT INTO eskit_events (position, stream, category, version, id, type, data, metadata,"
    " recorded_at, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
"""A planner's row (``planner.Row``), its id as a UUID."""
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

    @property
    def head(self) -> int:
        """The log's head after the rows planned so far."""
        return self.planner.next_position - 1

    def expect(self, heads: dict[str, Head]) -> None:
        """Plan from ``heads`` instead of reading them (the one-statement path): every
        stream of the group must be in it."""
        self.planner = Planner(heads, {}, self.head + 1, self.recorded_at, self.key)

    def forget(self) -> None:
        """Drop the heads planned from (an operation may have changed them)."""
        self.expect({})

    async def load(self, requests: list[Request]) -> None:
        """Plan the run ``requests`` from what is written: the heads of its streams and the
        earlier home of every id that may have been written before, in two queries. Planned
        afresh each time (``prepare=False``): a plan cached while the table was small would
        scan it whole for ever after."""
        streams, _ = lookups(r.appends for r in requests if r.appends)
        heads: dict[str, Head] = {}
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
                heads[stream] = Head(last, LIVE if state is None else state, last_link)
        earlier: dict[uuid.UUID, ExistingEvent] = {}
        ids = _ids_to_look_up(requests)
        if ids:
            cursor = await self.conn.execute(
                "SELECT id, stream, version, position FROM eskit_events WHERE id = ANY(%s)",
                (ids,),
                prepare=False,
            )
            for id_, stream, version, position in await cursor.fetchall():
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
            outcomes.append((request, plan.results, None))

    def known(self) -> dict[str, Head]:
        """The heads of the current run's streams after it: true once it has committed."""
        return self.planner.heads

    def arguments(
        self, expected: dict[str, Head], given: list[uuid.UUID], channel: str
    ) -> tuple[Any, ...]:
        """``_APPEND_GROUP``'s arguments: the heads expected, the caller's ids, the rows, as
        JSON (msgspec encodes it far faster than psycopg dumps arrays). An id goes as its 32
        hex digits, which PostgreSQL reads as a UUID."""
        heads = [
            {"stream": stream, "last": head.last, "state": head.state, "link": head.link}
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
            for position, stream, category, version, id_, type_, data, metadata, _, hash_ in (
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
        )

    async def flush(self) -> None:
        """Insert the rows queued so far (before an operation that may read them)."""
        if self.rows:
            rows = [
                (position, stream, category, version, uuid.UUID(bytes=id_), *rest)
                for position, stream, category, version, id_, *rest in self.rows
            ]
            async with self.conn.cursor() as cursor:
                await cursor.executemany(_INSERT, rows)
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
        """The body of a group's transaction: lock the head, plan and write each request."""
        cursor = await conn.execute("SELECT position FROM eskit_head FOR UPDATE")
        row = await cursor.fetchone()
        assert row is not None
        start = row[0]
        group = Group(conn, start, micros(self.clock()), self.key)
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
            group.forget()  # the operation may have changed stream states
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
        """Plan a run of append requests (read what it needs first) and add it to the group.
        With inline projections, on their thread (one hop for the run), which sends their
        waiting writes at the end of the run and, after the group's last appends, moves
        their checkpoints."""
        if requests:
            await group.load(requests)
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
