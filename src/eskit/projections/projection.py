"""What a projection is: a name, a version, handlers per event type, and where it writes.

Two kinds share one runner:

- ``SQLProjection``: a read model in SQL tables. Its handlers are plain functions that get
  the event and a ``ReadModelConnection``; the runner calls them inside the transaction
  that also advances the projection's checkpoint, so each event changes the read model
  exactly once, whatever crashes. Tables are written as ``{name}`` placeholders: each build
  of the projection gets tables of its own (``invoices__g2``), and a view named ``invoices``
  shows the live one, so a rebuild never takes the read model away from its readers.
- ``Projection``: anything else (a cache, a search service, e-mails). Handlers may be
  ``async``; delivery is at least once, so an ``inbox`` keyed by event id can make a
  redelivered event change nothing.
"""

from __future__ import annotations

import inspect
import re
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Protocol, TypeVar

from eskit.domain.events import EventRegistry
from eskit.projections.sql import portable
from eskit.store.model import RecordedEvent

F = TypeVar("F", bound=Callable[..., Any])
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_HANDLES = "__eskit_handles__"


def handles(*types: str) -> Callable[[F], F]:
    """Method decorator: call this handler for events of these types."""
    if not types or not all(isinstance(t, str) and t for t in types):
        raise ValueError("handles() needs one or more event type names")

    def mark(handler: F) -> F:
        setattr(handler, _HANDLES, (*getattr(handler, _HANDLES, ()), *types))
        return handler

    return mark


def check_name(name: object, what: str = "projection name") -> str:
    """Names become SQL identifiers and checkpoint keys: lower case, digits, underscores."""
    if not isinstance(name, str) or not _NAME.match(name) or "__" in name:
        raise ValueError(
            f"invalid {what} {name!r}: use 1-63 lower-case letters, digits and single"
            " underscores, starting with a letter"
        )
    return name


class Inbox(Protocol):
    """Event ids a projection already applied, kept beside its target."""

    async def seen(self, event_id: str) -> bool: ...

    async def record(self, event_id: str) -> None: ...


class MemoryInbox:
    """An inbox for a target in this process's memory (caches, tests)."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    async def seen(self, event_id: str) -> bool:
        return event_id in self.ids

    async def record(self, event_id: str) -> None:
        self.ids.add(event_id)


class _Base:
    name: str
    """Keys the checkpoint; never change it (change ``version`` to rebuild instead). A
    class attribute, or set per instance in ``__init__`` (e.g. one relay per broker)."""
    version: ClassVar[int] = 1
    """Bump it when the handlers change what they build: the runner rebuilds the read model
    beside the live one and switches when the new one has caught up."""
    start_from: ClassVar[int] = 0
    """Position after which the projection starts (0: the whole log)."""
    batch_size: int = 500
    """Events handled per transaction (a class attribute, or set per instance)."""
    every_type: ClassVar[bool] = False
    """Read every event whatever its type (a relay, an archive): ``handle_batch`` gets them
    all, and no ``@handles`` handler is needed."""
    events: ClassVar[EventRegistry | None] = None
    """Set it to the application's registry to get events in today's schema: old versions
    are upcast (renamed, split, dropped) before the handlers see them."""
    handlers: ClassVar[Mapping[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for attribute, value in vars(klass).items():
                for type_ in getattr(value, _HANDLES, ()):
                    found[type_] = attribute
        cls.handlers = found
        if "name" in vars(cls):
            check_name(cls.name)
            if not isinstance(cls.version, int) or cls.version < 1:
                raise ValueError(f"{cls.__qualname__}.version must be an int >= 1")
            if not isinstance(cls.batch_size, int) or cls.batch_size < 1:
                raise ValueError(f"{cls.__qualname__}.batch_size must be an int >= 1")
            if not found and not cls.every_type:
                raise ValueError(f"{cls.__qualname__} has no @handles(...) handlers")

    @property
    def types(self) -> tuple[str, ...] | None:
        """The stored event types to read: those it handles, and any an upcaster may turn
        into one of them (None: every type)."""
        if self.every_type:
            return None
        names = set(self.handlers)
        if self.events is not None:
            names.update(name for name, _ in self.events.upcasters.keys())  # noqa: SIM118
        return tuple(sorted(names))

    def today(self, events: Sequence[RecordedEvent]) -> list[RecordedEvent]:
        """The events in today's schema (unchanged without a registry)."""
        if self.events is None:
            return events if isinstance(events, list) else list(events)
        return [current for event in events for current in self.events.upcast(event)]

    def handler(self, event_type: str) -> Callable[..., Any] | None:
        """The bound handler for a type, None if it has none."""
        return self.bound_handlers().get(event_type)

    def bound_handlers(self) -> dict[str, Callable[..., Any]]:
        """Handlers by event type, bound to this instance (built once)."""
        bound: dict[str, Callable[..., Any]] | None = self.__dict__.get("_bound")
        if bound is None:
            bound = self.__dict__["_bound"] = {
                type_: getattr(self, attribute) for type_, attribute in self.handlers.items()
            }
        return bound


class Projection(_Base):
    """A projection into anything but SQL tables of its own: at-least-once delivery.

    Handlers take the event and may be ``async``. Set ``inbox`` to skip events already
    applied (a redelivery after a crash then changes nothing). Override ``reset`` to clear
    the target before a rebuild.
    """

    inbox: Inbox | None = None

    async def handle_batch(self, events: Sequence[RecordedEvent]) -> None:
        """Apply a batch in order (it may hold types without handlers: they are skipped)."""
        for event in self.today(events):
            await self.handle(event)

    async def handle(self, event: RecordedEvent) -> None:
        """Apply one event unless the inbox has seen it."""
        handler = self.handler(event.type)
        if handler is None:
            return
        key = str(event.id)
        if self.inbox is not None and await self.inbox.seen(key):
            return
        result = handler(event)
        if inspect.isawaitable(result):
            await result
        if self.inbox is not None:
            await self.inbox.record(key)

    async def reset(self) -> None:
        """Clear the target before a rebuild or a reset (default: nothing to clear)."""


class SQLProjection(_Base):
    """A read model in SQL tables, written in the same transaction as its checkpoint.

    ``tables`` names the logical tables; ``schema`` holds the statements that create them,
    with ``{table}`` placeholders for their physical names. Handlers are synchronous
    (they run inside the transaction) and get ``(event, db)``.
    """

    tables: ClassVar[tuple[str, ...]] = ()
    schema: ClassVar[tuple[str, ...]] = ()
    database: ClassVar[str | None] = None
    """None: the store's own database (SQLite store) or a private in-memory one (memory
    store). A path: a SQLite file of its own (checkpoint kept there too)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in vars(cls):
            if not cls.tables or not cls.schema:
                raise ValueError(f"{cls.__qualname__} needs `tables` and `schema`")
            for table in cls.tables:
                check_name(table, "table name")

    def statements(self, sqlite: bool) -> Sequence[str]:
        """The statements that create one build's tables, for SQLite or PostgreSQL: the
        ``schema``, the same on both (override when they must differ, as a search index's
        FTS5 table and ``tsvector`` column do)."""
        return self.schema

    def handle_batch(self, events: Sequence[RecordedEvent], db: ReadModelConnection) -> None:
        """Apply a batch in order inside one transaction (it may hold types without
        handlers: they are skipped); override to write in bulk."""
        handler = self.bound_handlers().get
        for event in self.today(events):
            handle = handler(event.type)
            if handle is not None:
                handle(event, db)


class ReadModelConnection:
    """The connection handlers write with: ``{table}`` placeholders in SQL become the
    physical tables of the build being written, and on PostgreSQL ``?`` and ``:name``
    placeholders become psycopg's ``%s`` and ``%(name)s`` (``sql.portable``), so one
    handler runs on both databases. Each statement is rewritten once, then cached.

    ``write`` is for statements whose result the handler does not need (inserts, upserts,
    deletes): consecutive writes of the same statement are sent to SQLite together with
    one ``executemany``, which is what a hand-written bulk load would do. ``execute`` and
    ``executemany`` send the waiting writes first, so every statement still runs in the
    order the handlers issued it.
    """

    def __init__(self, conn: sqlite3.Connection, names: Mapping[str, str] | None = None) -> None:
        self.conn = conn
        self.names = dict(names or {})
        self._sql: dict[str, str] = {}
        self._portable = not isinstance(conn, sqlite3.Connection)
        self._pending: str | None = None
        self._rows: list[Sequence[Any] | Mapping[str, Any]] = []

    def sql(self, statement: str) -> str:
        """``statement`` with its ``{table}`` placeholders filled in."""
        text = self._sql.get(statement)
        if text is None:
            text = statement.format_map(self.names) if self.names else statement
            if self._portable:
                text = portable(text)
            self._sql[statement] = text
        return text

    def write(self, statement: str, parameters: Sequence[Any] | Mapping[str, Any] = ()) -> None:
        """Run a statement whose result is not needed, batched with the same one before."""
        if statement is not self._pending and statement != self._pending:
            self.flush()
            self._pending = statement
        self._rows.append(parameters)

    def execute(self, statement: str, parameters: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        self.flush()
        return self.conn.execute(self.sql(statement), parameters)

    def executemany(self, statement: str, rows: Iterable[Sequence[Any] | Mapping[str, Any]]) -> Any:
        self.flush()
        cursor = self.conn.cursor()  # sqlite3 and psycopg alike
        cursor.executemany(self.sql(statement), rows)
        return cursor

    def flush(self) -> None:
        """Send the waiting writes (done for you at the end of every batch)."""
        if self._pending is not None:
            statement, rows = self._pending, self._rows
            self._pending, self._rows = None, []
            self.conn.cursor().executemany(self.sql(statement), rows)


def apply(
    projection: SQLProjection,
    conn: sqlite3.Connection,
    names: Mapping[str, str],
    events: Sequence[RecordedEvent],
) -> None:
    """Apply a batch to the build whose tables are ``names``, inside the caller's
    transaction, and send every write before it commits."""
    db = ReadModelConnection(conn, names)
    projection.handle_batch(events, db)
    db.flush()


def physical_names(tables: Iterable[str], generation: int) -> dict[str, str]:
    """The tables of one build: ``invoices`` -> ``invoices__g3``."""
    return {table: f"{table}__g{generation}" for table in tables}


AnyProjection = Projection | SQLProjection
Handler = Callable[[RecordedEvent], Awaitable[None] | None]
