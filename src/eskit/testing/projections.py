"""Given / then specifications for projections: these events, then these rows, or this
answer to a query, on a real database (SQLite, PostgreSQL) or for a plain projection.

    spec = ProjectionSpec(InvoiceList(), database, events=registry)
    spec.given("invoice-1", InvoiceCreated(...), InvoiceIssued(...))
    await spec.then_rows("invoices", ("1", "ada", "EUR", ...))
    await spec.then_answer(open_invoices, [InvoiceRow(...)])

The events are appended to a memory store (each ``given`` one append, recorded one second
after the one before, from ``start``: ``recorded_at`` is known) and applied by a real
``ProjectionRunner``: what passes here passes in production. Failures show the expected
and actual rows side by side, as ``Spec`` does for aggregates; a failing handler, its
error.
"""

from __future__ import annotations

import datetime as dt
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from eskit.domain.events import SCHEMA_VERSION, EventRegistry
from eskit.projections.database import Database
from eskit.projections.projection import AnyProjection, ReadModelConnection, SQLProjection
from eskit.projections.runner import ProjectionRunner
from eskit.store.memory import MemoryStore
from eskit.store.model import NewEvent
from eskit.testing.specs import table

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


class ProjectionSpec:
    """The projection under test and the read-model database it writes to (None: a
    private in-memory SQLite database, or nothing for a plain projection). ``events`` turns
    typed events into stored ones; without it, give ``NewEvent``s."""

    def __init__(
        self,
        projection: AnyProjection,
        database: Database | None = None,
        *,
        events: EventRegistry | None = None,
        start: dt.datetime = START,
    ) -> None:
        self.projection, self.database, self.registry = projection, database, events
        self.now = start
        self.store = MemoryStore(clock=self._tick)
        self._given: list[tuple[str, list[NewEvent]]] = []
        self._applied = False
        self._runner: ProjectionRunner | None = None

    def _tick(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=1)
        return self.now

    def given(self, stream: str, *events: object) -> ProjectionSpec:
        """Events appended to ``stream`` (call again for other streams, in the order the
        store should record them)."""
        self._given.append((stream, [self._new_event(e) for e in events]))
        self._applied = False
        return self

    def _new_event(self, event: object) -> NewEvent:
        if isinstance(event, NewEvent):
            return event
        if self.registry is None:
            raise TypeError(f"give ProjectionSpec events= to store {type(event).__name__}")
        entry, data = self.registry.encode(event)
        return NewEvent(entry.name, data, {SCHEMA_VERSION: entry.version})

    async def then_rows(
        self, table_name: str, *expected: Sequence[Any] | Mapping[str, Any], order_by: str = ""
    ) -> list[Any]:
        """Assert the logical table holds exactly these rows: tuples in column order, or
        dicts of the same columns (only those compared), in ``order_by`` order (default:
        any order)."""
        if not isinstance(self.projection, SQLProjection):
            raise TypeError("then_rows is for a SQLProjection: use then_answer")
        if table_name not in self.projection.tables:
            raise ValueError(f"{self.projection.name} has no table {table_name!r}")
        as_dicts = [isinstance(row, Mapping) for row in expected]
        if any(as_dicts) and not all(as_dicts):
            raise TypeError("give rows all as tuples, or all as dicts of the same columns")
        columns = list(expected[0]) if expected and all(as_dicts) else None
        order = f" ORDER BY {order_by}" if order_by else ""

        def read(conn: Any) -> list[Any]:
            cursor = ReadModelConnection(conn).execute(f'SELECT * FROM "{table_name}"{order}')
            names = [column[0] for column in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            if columns is None:
                return [tuple(row.values()) for row in rows]
            return [{k: row.get(k) for k in columns} for row in rows]

        actual: list[Any] = await self._read(read)
        wanted = [dict(row) if isinstance(row, Mapping) else tuple(row) for row in expected]
        if not order_by:
            wanted, actual = sorted(wanted, key=repr), sorted(actual, key=repr)
        if actual != wanted:
            raise AssertionError(
                f"{table_name} holds other rows than expected\n" + table(wanted, actual, "rows")
            )
        return actual

    async def then_answer(self, query: Callable[..., Any], expected: object) -> Any:
        """Assert what ``query`` answers: called with the read-model ``Database`` for a
        SQLProjection (the example's query functions), with the projection itself for a
        plain one; it may be async."""
        await self._apply()
        subject: object = self.projection
        if isinstance(self.projection, SQLProjection):
            subject = self._database()
        answer = query(subject)
        if inspect.isawaitable(answer):
            answer = await answer
        if answer != expected:
            listed = isinstance(answer, list) and isinstance(expected, list)
            raise AssertionError(
                f"{getattr(query, '__name__', 'the query')} answered otherwise than expected\n"
                + (
                    table(expected, answer, "rows")  # type: ignore[arg-type]
                    if listed
                    else f"  expected {expected!r}\n  actual   {answer!r}"
                )
            )
        return answer

    async def _read(self, run: Callable[[Any], Any]) -> Any:
        await self._apply()
        return await self._database().read(run)

    def _database(self) -> Database:
        assert self._runner is not None
        return self._runner.database

    async def _apply(self) -> None:
        """Append what was given since the last check and apply it; a projection that got
        stuck fails the spec with its error."""
        if self._applied:
            return
        if self._runner is None:
            await self.store.open()
            self._runner = ProjectionRunner(
                self.store, [self.projection], database=self.database, retries=0, backoff=0.0
            )
        for stream, events in self._given:
            await self.store.append(stream, events)
        self._given.clear()
        await self._runner.run_until_caught_up()
        self._applied = True
        for status in await self._runner.status():
            if status.error is not None:
                raise AssertionError(
                    f"{status.name} failed on an event: {status.error}"
                    f" (position {status.error_position}, {status.error_type})"
                )

    async def close(self) -> None:
        """Close what the spec opened (not a database it was given)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.stop()
            await self.store.close()

    async def __aenter__(self) -> ProjectionSpec:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
