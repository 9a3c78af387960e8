"""The PostgreSQL backend: the same contract at scale, many processes on one database.

How it stays correct and fast:

- Positions are given under the lock of the single ``eskit_head`` row, so transactions that
  append commit one after another and commit order is position order: a reader that saw
  position p never later finds a new event at or below p (the SQL file explains the choice).
- Group commit: every write of this process is queued to one writer task, which takes all
  the requests waiting, runs them in one transaction (one lock, one WAL flush) and checks
  each on its own against the stream heads as they stand inside the group, so a conflict
  fails that request alone. Callers are answered after COMMIT; if the transaction fails,
  each request is tried again alone so that one bad request cannot fail the others.
- Every event's hash link covers its position, so the writer numbers and hashes the rows
  itself, from a head it knows: the long way locks the head row and reads it first.
- One statement per group when it can: the writer remembers the log's head and the stream
  heads it saw commit, checks a group against them here (``rules``, the one place the
  rules live), numbers and hashes its rows from that head and sends it to
  ``eskit_append_group`` (migration 005), which writes it only if the heads still hold;
  otherwise, and for operations, retries and inline projections, the group runs the long
  way (lock, read the heads, check, insert), with the same outcome.
- Readers read a page and the committed head in one statement (one snapshot).
- ``LISTEN``/``NOTIFY`` only wakes subscriptions early: if the listening connection dies,
  subscriptions still find new events by polling every ``poll_interval``. The store listens
  only while something waits for events (and ``_LISTEN_IDLE`` after): a process that only
  writes does not wake up for each of its own commits.
- Inline projections (``postgres_inline``) apply each append's events inside the group's
  transaction, on a thread with a blocking twin of the writer's connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, NamedTuple

import msgspec
import psycopg
import psycopg_pool

from eskit.errors import StoreClosed, StoreError, StoreUnavailable, StreamDeleted
from eskit.store import rules
from eskit.store.base import EventStore, versions_up_to
from eskit.store.chain import ChainRow, ChainStart, audit_key, link
from eskit.store.ids import new_event_ids
from eskit.store.model import (
    ANY,
    NO_STREAM,
    AppendResult,
    ExpectedVersion,
    Page,
    RecordedEvent,
    Snapshot,
    StreamInfo,
    StreamMetadata,
)
from eskit.store.postgres_append import (
    append_group,
    append_group_and_commit,
    lock_head,
    roll_back,
)
from eskit.store.postgres_inline import InlineGroup, InlineHook, InlineProjections, Refused
from eskit.store.postgres_schema import check_schema, check_version, migrate, read_chain_start
from eskit.store.rules import ExistingEvent, PreparedAppend, PreparedSnapshot, clamp
from eskit.store.sqlite_writer import micros, moment

log = logging.getLogger("eskit.store.postgres")
LIVE, SOFT_DELETED, TOMBSTONED = 0, 1, 2
_STATUSES: Final = {None: "live", LIVE: "live", SOFT_DELETED: "deleted", TOMBSTONED: "tombstoned"}
_COLUMNS: Final = "id, stream, version, position, type, data, metadata, recorded_at"
_ROW: Final = f"{_COLUMNS}, NULL"
"""An event as ``_decode`` takes it: its columns and one more (a page's committed head)."""
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
"""The names of a ``_Group`` row's values in ``eskit_append_group``'s JSON."""
_KNOWN_STREAMS: Final = 10_000
"""At most this many stream heads are remembered for the one-statement path."""
_LISTEN_IDLE: Final = 10.0
"""Seconds the LISTEN connection stays open after the last wait for events."""
_NOTIFY_CHECK: Final = 1.0
"""Seconds between the listener's checks that someone still waits."""
Connection = psycopg.AsyncConnection[Any]
Operation = Callable[[Connection], Awaitable[Any]]
Outcome = tuple["_Request", Any, BaseException | None]


class _Request:
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


class _Head(NamedTuple):
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


class _Group:
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

    async def load(self, requests: list[_Request]) -> None:
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
        requests: list[_Request],
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
            assert id_ is not None, "ids are given before the first attempt (_with_ids)"
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

    def expect(self, heads: dict[str, _Head]) -> None:
        """Start from ``heads`` instead of loading them (the one-statement path)."""
        for stream, head in heads.items():
            self.heads[stream] = (head.last, head.state)
            self.links[stream] = head.link

    def known(self) -> dict[str, _Head]:
        """The heads of the group's streams after it: true once it has committed."""
        return {
            stream: _Head(last, state, self.links.get(stream))
            for stream, (last, state) in self.heads.items()
        }

    def arguments(
        self, expected: dict[str, _Head], given: list[uuid.UUID], channel: str
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


def _with_ids(
    appends: list[PreparedAppend],
) -> tuple[list[PreparedAppend], frozenset[uuid.UUID]]:
    """The appends with an id on every event, given before the first attempt, and the ids
    given here: if a COMMIT's answer is lost and the request is tried again, the retry is
    then recognised as a replay instead of being written twice."""
    missing = sum(e.id is None for a in appends for e in a.events)
    if not missing:
        return appends, frozenset()
    fresh = _new_ids(missing)
    given = iter(fresh)
    with_ids = [
        msgspec.structs.replace(
            a,
            events=[
                e if e.id is not None else msgspec.structs.replace(e, id=next(given))
                for e in a.events
            ],
        )
        for a in appends
    ]
    return with_ids, frozenset(fresh)


def _ids_to_look_up(requests: Sequence[_Request]) -> list[uuid.UUID]:
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


def _new_ids(count: int) -> list[uuid.UUID]:
    return [uuid.UUID(bytes=b) for b in new_event_ids(count)] if count else []


class PostgresStore(EventStore):
    """Events in PostgreSQL: many processes, one log, no skipped events."""

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str = "public",
        pool_size: int = 10,
        max_batch: int = 256,
        migrate_on_open: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.conninfo = conninfo
        self.schema = check_schema(schema)
        self.pool_size = pool_size
        self.max_batch = max_batch
        self.migrate_on_open = migrate_on_open
        self._audit_key = audit_key()
        self._pool: psycopg_pool.AsyncConnectionPool[Connection] | None = None
        self._queue: asyncio.Queue[_Request | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._writer_conn: Connection | None = None
        self._inline = InlineProjections()
        self._known: dict[str, _Head] = {}
        """Stream heads this writer saw commit: what the one-statement path expects."""
        self._head: int | None = None
        """The log's head after this writer's last commit (None: not known): the position
        the one-statement path numbers its rows from."""
        self._contended = False
        """Another process moved the head since this writer's previous commit: lock it
        before numbering (``postgres_append``)."""
        self._listener: asyncio.Task[None] | None = None
        self._last_wait = 0.0
        self._decode_text = msgspec.json.decode
        self.before_commit: Callable[[], Awaitable[None]] | None = None
        """Fault injection for tests: awaited inside each transaction just before COMMIT
        (sleep there to hold the head lock, raise to roll the transaction back)."""
        self._reads = 0
        self._no_reads = asyncio.Event()

    @classmethod
    def from_url(cls, url: urllib.parse.SplitResult, **options: Any) -> PostgresStore:
        """``postgresql://user@host:port/database?schema=name&pool_size=n``."""
        query = dict(urllib.parse.parse_qsl(url.query))
        for name, convert in (("schema", str), ("pool_size", int), ("max_batch", int)):
            if name in query:
                options.setdefault(name, convert(query.pop(name)))
        conninfo = urllib.parse.urlunsplit(
            (url.scheme, url.netloc, url.path, urllib.parse.urlencode(query), "")
        )
        return cls(conninfo, **options)

    @property
    def notify_channel(self) -> str:
        return f"eskit_{self.schema}"

    # -- lifecycle ------------------------------------------------------------------------

    async def _configure(self, conn: Connection) -> None:
        await conn.execute(f'SET search_path TO "{self.schema}"')

    async def _open_backend(self) -> None:
        try:
            async with await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True
            ) as conn:
                if self.migrate_on_open and not self.readonly:
                    await migrate(conn, self.schema, self._audit_key)
                else:
                    await check_version(conn, self.schema)
                await self._configure(conn)
                self._head = await _head(conn)  # the one-statement path's first guess
        except psycopg.OperationalError as error:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {error}") from error
        pool: psycopg_pool.AsyncConnectionPool[Connection] = psycopg_pool.AsyncConnectionPool(
            self.conninfo,
            min_size=1,
            max_size=self.pool_size,
            kwargs={"autocommit": True},
            configure=self._configure,
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=10)
        except psycopg_pool.PoolTimeout as error:
            await pool.close()
            raise StoreError(f"cannot connect to PostgreSQL: {error}") from error
        self._pool = pool
        self._queue = asyncio.Queue()
        if not self.readonly:
            self._writer = asyncio.create_task(self._write_loop(), name="eskit-postgres-writer")

    async def _close_backend(self) -> None:
        if self._writer is not None:
            await self._queue.put(None)
            await self._writer
            self._writer = None
        if self._reads:  # reads in flight (a subscription's last page) finish first
            self._no_reads.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_reads.wait(), 5)
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._writer_conn is not None:
            await self._writer_conn.close()
            self._writer_conn = None
        self._inline.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _wait_for_events_after(self, position: int) -> None:
        if self._open:
            self._listen_while_waited()
        await super()._wait_for_events_after(position)

    def _listen_while_waited(self) -> None:
        """Note a wait for events, and start listening if the store is not."""
        self._last_wait = asyncio.get_running_loop().time()
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="eskit-postgres-listener")

    def _waited(self) -> bool:
        """Whether something waits for events, or did within ``_LISTEN_IDLE`` seconds."""
        idle = asyncio.get_running_loop().time() - self._last_wait
        return self._open and (bool(self._waiters) or idle < _LISTEN_IDLE)

    async def _listen(self) -> None:
        """Wake subscriptions when any process commits, while something waits for events;
        reconnect if the connection dies."""
        pause = 0.1
        while self._waited():
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True
                ) as conn:
                    await conn.execute(f'LISTEN "{self.notify_channel}"')
                    pause = 0.1
                    while self._waited():
                        async for _ in conn.notifies(timeout=_NOTIFY_CHECK):
                            self._notify_waiters()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # polling still finds new events meanwhile
                log.warning("LISTEN connection lost (%s); reconnecting in %.1f s", error, pause)
                await asyncio.sleep(pause)
                pause = min(5.0, pause * 2)

    # -- the writer -------------------------------------------------------------------------

    async def _submit(self, request: _Request) -> Any:
        if self._writer is None or self._writer.done():
            self._check_open()
            self._check_writable()
            raise StoreError("the store is closing")
        await self._queue.put(request)
        return await request.future

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

    async def _commit(self, batch: list[_Request]) -> None:
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
                    outcomes.append((request, None, _transaction_failed(error)))
        for request, value, failure in outcomes:
            if request.future.done():
                continue
            if failure is None:
                request.future.set_result(value)
            else:
                request.future.set_exception(failure)
        self._notify_waiters()

    async def _in_one_statement(self, batch: list[_Request]) -> list[Outcome] | None:
        """Run the batch as one call of ``eskit_append_group``, checked here against the
        heads this writer saw commit; None (nothing written) if it cannot be done so: the
        batch holds an operation, a retry, a stream not seen and not expected to be new,
        inline projections run, or another process moved one of the streams meanwhile.
        While other processes write too (the log's head this writer remembered was stale),
        the head is locked and read first (``postgres_append``)."""
        expected = self._expected_heads(batch)
        if expected is None or self._head is None:
            return None
        conn = await self._writer_connection()
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
        batch: list[_Request],
        expected: dict[str, _Head],
        head: int,
        locked: bool = False,
    ) -> list[Outcome] | None:
        """Number and hash the batch's rows from ``head`` and send them; None if the
        function refused them. ``locked``: in the transaction ``lock_head`` began."""
        group = _Group(conn, head, micros(self.clock()), self._audit_key)
        group.expect(expected)
        outcomes: list[Outcome] = []
        group.add_all(batch, outcomes)
        given = _ids_to_look_up(batch)  # no request here is retried (_expected_heads)
        arguments = group.arguments(expected, given, self.notify_channel)
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

    def _expected_heads(self, batch: list[_Request]) -> dict[str, _Head] | None:
        """The head the one-statement path expects of each stream of ``batch``: as this
        writer last saw it commit, else empty if the stream is expected to be new."""
        if self._inline.hooks:
            return None
        expected: dict[str, _Head] = {}
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
                    head = _Head(None, LIVE, None)
                expected[append.stream] = head
        return expected

    def _remember(self, heads: dict[str, _Head], head: int) -> None:
        """Remember committed stream heads and the log's head for the one-statement path
        (a bounded guess: the statement checks it, so a stale one costs a round trip, never
        a wrong write)."""
        if len(self._known) > _KNOWN_STREAMS:
            self._known.clear()
        self._known.update(heads)
        self._head = head

    async def _transaction(self, batch: list[_Request], savepoints: bool = False) -> list[Outcome]:
        outcomes: list[Outcome] = []
        conn = await self._writer_connection()
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

    async def _writer_connection(self) -> Connection:
        """The writer's own connection (not borrowed from the pool for each group: no
        check round trip per transaction); reopened after it broke."""
        if self._writer_conn is None or self._writer_conn.closed:
            self._writer_conn = await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True
            )
            await self._configure(self._writer_conn)
        return self._writer_conn

    async def _group(
        self, conn: Connection, batch: list[_Request], outcomes: list[Outcome], savepoints: bool
    ) -> _Group:
        """The body of a group's transaction: lock the head, check and write each request."""
        cursor = await conn.execute("SELECT position FROM eskit_head FOR UPDATE")
        row = await cursor.fetchone()
        assert row is not None
        start = row[0]
        group = _Group(conn, start, micros(self.clock()), self._audit_key)
        await group.load(batch)
        hooks = self._inline.hooks
        inline = InlineGroup(hooks, start, savepoints) if hooks else None
        appends: list[_Request] = []
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
                (group.head, self.notify_channel),
            )
        if self.before_commit is not None:
            await self.before_commit()
        return group

    async def _add(
        self,
        conn: Connection,
        group: _Group,
        requests: list[_Request],
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
            await self._inline.call(conn, run)

    async def _write(self, operation: Operation) -> Any:
        return await self._submit(_Request(None, operation))

    # -- inline projections (eskit.projections.inline) --------------------------------------

    async def add_inline(
        self, hook: InlineHook, first: Callable[[psycopg.Connection[Any]], None]
    ) -> None:
        """Run ``first`` (catch a projection up) and start running ``hook`` in every group
        that appends, in one transaction that holds the head lock: no append of any process
        can fall between. ``first`` gets a blocking connection in that transaction."""

        async def run(conn: Connection) -> None:
            await self._inline.call(conn, first)
            self._inline.hooks.append(hook)

        try:
            await self._write(run)
        except BaseException:
            self._forget_inline(hook)  # the transaction may have failed after `run`
            raise

    async def remove_inline(self, hook: InlineHook) -> None:
        """Stop running ``hook``: no group that starts after this returns runs it."""
        if self._writer is None or self._writer.done():
            self._forget_inline(hook)
            return

        async def run(conn: Connection) -> None:
            self._forget_inline(hook)

        await self._write(run)

    def _forget_inline(self, hook: InlineHook) -> None:
        if hook in self._inline.hooks:
            self._inline.hooks.remove(hook)

    async def _read(self, run: Callable[[Connection], Awaitable[Any]]) -> Any:
        if self._pool is None:
            self._check_open()
            raise StoreError("the store is closing")
        self._reads += 1
        try:
            for attempt in (1, 2):
                try:
                    async with self._pool.connection() as conn:
                        return await run(conn)
                except psycopg.OperationalError:
                    # Idle connections the server dropped fail at their first use: then
                    # check them all and try once more (cheaper than checking every
                    # connection at every checkout, which costs a round trip per read).
                    if attempt == 2 or not self._open:
                        raise
                    await self._pool.check()
            raise AssertionError("unreachable")
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as error:
            if not self._open:
                raise StoreClosed("the store was closed during the read") from error
            raise StoreUnavailable(f"PostgreSQL read failed: {error}") from error
        finally:
            self._reads -= 1
            if not self._reads:
                self._no_reads.set()

    # -- writes -----------------------------------------------------------------------------

    async def _append_many(self, appends: list[PreparedAppend]) -> list[AppendResult]:
        with_ids, generated = _with_ids(appends)
        results: list[AppendResult] = await self._submit(_Request(with_ids, None, generated))
        return results

    async def _delete(self, stream: str, expected: ExpectedVersion, hard: bool) -> None:
        async def run(conn: Connection) -> None:
            last, state = await _stream_state(conn, stream)
            rules.check_version_matches(stream, expected, last, state == SOFT_DELETED)
            if hard:
                await conn.execute(
                    "INSERT INTO eskit_streams (stream, state) VALUES (%s, %s)"
                    " ON CONFLICT (stream) DO UPDATE SET state = excluded.state",
                    (stream, TOMBSTONED),
                )
                await conn.execute("DELETE FROM eskit_snapshots WHERE stream = %s", (stream,))
            elif last is not None and state != SOFT_DELETED:
                await conn.execute(
                    "INSERT INTO eskit_streams (stream, state, truncate_before)"
                    " VALUES (%s, %s, %s) ON CONFLICT (stream) DO UPDATE"
                    " SET state = excluded.state, truncate_before = excluded.truncate_before",
                    (stream, SOFT_DELETED, last + 1),
                )

        await self._write(run)

    async def _set_metadata(self, stream: str, metadata: StreamMetadata) -> None:
        async def run(conn: Connection) -> None:
            await conn.execute(
                "INSERT INTO eskit_streams (stream, truncate_before, max_count, max_age)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (stream) DO UPDATE SET"
                " truncate_before = excluded.truncate_before, max_count = excluded.max_count,"
                " max_age = excluded.max_age",
                (stream, *rules.stored_metadata(metadata)),
            )

        await self._write(run)

    async def _save_snapshot(self, snapshot: PreparedSnapshot, recorded_at: dt.datetime) -> None:
        stream, snapshot_version = snapshot.stream, snapshot.snapshot_version

        async def run(conn: Connection) -> None:
            await _stream_state(conn, stream)  # raises StreamDeleted before writing
            await conn.execute(
                "INSERT INTO eskit_snapshots (stream, snapshot_version, version, state,"
                " recorded_at) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (stream, snapshot_version, version)"
                " DO UPDATE SET state = excluded.state, recorded_at = excluded.recorded_at",
                (stream, snapshot_version, snapshot.version, snapshot.state, micros(recorded_at)),
            )
            await conn.execute(
                "DELETE FROM eskit_snapshots WHERE stream = %(s)s"
                " AND snapshot_version = %(v)s AND version < (SELECT version FROM"
                " eskit_snapshots WHERE stream = %(s)s AND snapshot_version = %(v)s"
                " ORDER BY version DESC LIMIT 1 OFFSET %(o)s)",
                {"s": stream, "v": snapshot_version, "o": rules.SNAPSHOTS_KEPT - 1},
            )

        await self._write(run)

    # -- reads ------------------------------------------------------------------------------

    def _decode(self, rows: Sequence[tuple[Any, ...]]) -> list[RecordedEvent]:
        """Rows of ``_ROW`` as events (the last column is not the event's)."""
        decode, events = self._decode_text, []
        last_micros, last_moment = -1, moment(0)  # the events of one commit share a time
        for id_, stream, version, position, type_, data, metadata, recorded, _ in rows:
            if recorded != last_micros:
                last_micros, last_moment = recorded, moment(recorded)
            events.append(
                RecordedEvent(
                    id_,
                    stream,
                    version,
                    position,
                    type_,
                    decode(data),
                    decode(metadata),
                    last_moment,
                )
            )
        return events

    async def _load_snapshot(
        self, stream: str, snapshot_version: int, max_version: int
    ) -> Snapshot | None:
        async def run(conn: Connection) -> Any:
            metadata = await _read_rules(conn, stream)
            return await _snapshot_row(conn, stream, snapshot_version, max_version, metadata)

        return _snapshot(stream, snapshot_version, await self._read(run))

    async def _snapshot_and_page(
        self, stream: str, snapshot_version: int, max_version: int, count: int
    ) -> tuple[Snapshot | None, list[RecordedEvent]]:
        """Both on one connection, the stream's rules read once: three round trips, not four
        on two connections."""
        now = self.clock()

        async def run(conn: Connection) -> tuple[Any, list[tuple[Any, ...]]]:
            metadata = await _read_rules(conn, stream)
            row = await _snapshot_row(conn, stream, snapshot_version, max_version, metadata)
            start = None if row is None else row[0] + 1
            wanted = min(count, versions_up_to(max_version, start))
            return row, await _stream_rows(conn, stream, start, False, wanted, now, metadata)

        row, rows = await self._read(run)
        return _snapshot(stream, snapshot_version, row), self._decode(rows)

    async def _get_metadata(self, stream: str) -> StreamMetadata:
        async def run(conn: Connection) -> StreamMetadata:
            cursor = await conn.execute(
                "SELECT truncate_before, max_count, max_age FROM eskit_streams WHERE stream = %s",
                (stream,),
            )
            row = await cursor.fetchone()
            return StreamMetadata() if row is None else StreamMetadata(*row)

        result: StreamMetadata = await self._read(run)
        return result

    async def _stream_version(self, stream: str) -> int | None:
        async def run(conn: Connection) -> int | None:
            last, state = await _stream_state(conn, stream)
            return None if state == SOFT_DELETED else last

        result: int | None = await self._read(run)
        return result

    async def _chain_page(self, after: int, limit: int) -> list[ChainRow]:
        async def run(conn: Connection) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(
                "SELECT position, stream, category, version, id, type, data, metadata,"
                " recorded_at, hash FROM eskit_events WHERE position > %s ORDER BY position"
                " LIMIT %s",
                (after, limit),
            )
            return await cursor.fetchall()

        rows = await self._read(run)
        return [
            ChainRow(position, stream, category, version, id_.bytes, kind, data, meta, at, link_)
            for position, stream, category, version, id_, kind, data, meta, at, link_ in rows
        ]

    async def _chain_start(self) -> ChainStart | None:
        found: ChainStart | None = await self._read(read_chain_start)
        return found

    async def _find_event(self, event_id: uuid.UUID) -> RecordedEvent | None:
        async def run(conn: Connection) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(
                f"SELECT {_ROW} FROM eskit_events WHERE id = %s", (event_id,)
            )
            return await cursor.fetchall()

        rows = await self._read(run)
        return self._decode(rows)[0] if rows else None

    async def _last_position(self) -> int:
        result: int = await self._read(_head)
        return result

    async def _list_streams(
        self, category: str | None, after: str | None, limit: int
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

        async def run(conn: Connection) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(sql, {"a": after or "", "c": category, "l": limit})
            return await cursor.fetchall()

        rows = await self._read(run)
        return [
            StreamInfo(stream, version, position, type_, moment(at), _STATUSES[state])  # type: ignore[arg-type]
            for stream, version, position, type_, at, state in rows
        ]

    async def _read_stream_page(
        self, stream: str, from_version: int | None, backwards: bool, count: int
    ) -> list[RecordedEvent]:
        now = self.clock()

        async def run(conn: Connection) -> list[tuple[Any, ...]]:
            metadata = await _read_rules(conn, stream)
            return await _stream_rows(conn, stream, from_version, backwards, count, now, metadata)

        return self._decode(await self._read(run))

    async def _read_all_page(
        self, after: int, count: int, types: tuple[str, ...] | None, category: str | None
    ) -> tuple[list[RecordedEvent], int]:
        sql, extra, prepare = _page_query(types, category)

        async def run(conn: Connection) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(sql, (clamp(after), *extra, count), prepare=prepare)
            return await cursor.fetchall()

        return self._page(await self._read(run), after, count)

    def page_in(
        self,
        conn: psycopg.Connection[Any],
        after: int,
        limit: int,
        types: tuple[str, ...] | None = None,
        category: str | None = None,
    ) -> Page:
        """``read_page`` with a blocking connection to this store's schema, inside a
        transaction the caller runs (projections read and apply a batch in one)."""
        sql, extra, prepare = _page_query(types, category)
        rows = conn.execute(sql, (clamp(after), *extra, limit), prepare=prepare).fetchall()
        return Page(*self._page(rows, after, limit))

    def _page(
        self, rows: list[tuple[Any, ...]], after: int, count: int
    ) -> tuple[list[RecordedEvent], int]:
        """A page's events and where the next page starts: after its last event if it is
        full, else at the committed head (a short page searched the log up to it)."""
        head = rows[0][-1] or 0  # the one row of an empty page holds only the head
        events = self._decode(rows) if rows[0][0] is not None else []
        return events, (events[-1].position if len(events) == count else max(head, after))


def _page_query(
    types: tuple[str, ...] | None, category: str | None
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
    per page."""
    where = ["position > %s", "position <= h.head"]
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
        " ORDER BY position LIMIT %s) AS e ON true"
    )
    return sql, extra, None if types is None and category is None else False


async def _head(conn: Connection) -> int:
    cursor = await conn.execute("SELECT position FROM eskit_head")
    row = await cursor.fetchone()
    return 0 if row is None else int(row[0])


async def _stream_state(conn: Connection, stream: str) -> tuple[int | None, int]:
    """The stream's last version (None: no events) and state; raises if tombstoned."""
    cursor = await conn.execute(
        "SELECT (SELECT max(version) FROM eskit_events WHERE stream = %(s)s),"
        " (SELECT state FROM eskit_streams WHERE stream = %(s)s)",
        {"s": stream},
    )
    row = await cursor.fetchone()
    assert row is not None
    last, state = row
    if state == TOMBSTONED:
        raise StreamDeleted(stream)
    return last, LIVE if state is None else state


async def _snapshot_row(
    conn: Connection,
    stream: str,
    snapshot_version: int,
    max_version: int,
    metadata: StreamMetadata | None,
) -> Any:
    """The newest visible snapshot's version, state and time (None: there is none)."""
    lowest = 0 if metadata is None else rules.lowest_snapshot_version(metadata)
    cursor = await conn.execute(
        "SELECT version, state, recorded_at FROM eskit_snapshots"
        " WHERE stream = %s AND snapshot_version = %s AND version <= %s"
        " AND version >= %s ORDER BY version DESC LIMIT 1",
        (stream, snapshot_version, clamp(max_version), lowest),
    )
    return await cursor.fetchone()


def _snapshot(stream: str, snapshot_version: int, row: Any) -> Snapshot | None:
    if row is None:
        return None
    version, state, recorded_at = row
    return Snapshot(
        stream, version, snapshot_version, msgspec.json.decode(state), moment(recorded_at)
    )


async def _stream_rows(
    conn: Connection,
    stream: str,
    from_version: int | None,
    backwards: bool,
    count: int,
    now: dt.datetime,
    metadata: StreamMetadata | None,
) -> list[tuple[Any, ...]]:
    """Up to ``count`` rows of the stream's visible events from ``from_version``."""
    last = None
    if metadata is not None:  # only then does the window depend on the last version
        cursor = await conn.execute(
            "SELECT max(version) FROM eskit_events WHERE stream = %s", (stream,)
        )
        row = await cursor.fetchone()
        last = None if row is None else row[0]
    start, first, oldest = rules.read_bounds(metadata, last, now, from_version, backwards)
    compare, descending = ("<=", " DESC") if backwards else (">=", "")
    cursor = await conn.execute(
        f"SELECT {_ROW} FROM eskit_events WHERE stream = %s AND version {compare} %s"
        f" AND version >= %s AND recorded_at >= %s ORDER BY version{descending}"
        " LIMIT %s",
        (stream, start, first, -1 if oldest is None else micros(oldest), count),
    )
    return await cursor.fetchall()


async def _read_rules(conn: Connection, stream: str) -> StreamMetadata | None:
    cursor = await conn.execute(
        "SELECT state, truncate_before, max_count, max_age FROM eskit_streams WHERE stream = %s",
        (stream,),
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    if row[0] == TOMBSTONED:
        raise StreamDeleted(stream)
    return StreamMetadata(*row[1:])


def _transaction_failed(error: Exception) -> StoreError:
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
