"""The read model of the P workloads, shared by both sides: per-invoice totals.

One upsert per event into ``invoice_totals`` keyed by the event's stream (the invoice):
the first event of a stream inserts its row, the others update it. The eskit side is a
``SQLProjection`` whose handler runs that statement; the raw side runs the same statement
with plain sqlite3. Both read model tables live in the events file, beside the log.
"""

from __future__ import annotations

import sqlite3

from benchmarks.common import EVENT_TYPE, Payload
from eskit.projections import ReadModelConnection, SQLProjection, handles
from eskit.store.model import RecordedEvent

BATCH = 500
"""Events per transaction (and checkpoint) on both sides: eskit's default batch size."""
TABLE = "invoice_totals"
SCHEMA = (
    "CREATE TABLE {invoice_totals} (invoice TEXT PRIMARY KEY, events INTEGER NOT NULL,"
    " amount INTEGER NOT NULL)"
)
UPSERT = (
    "INSERT INTO {invoice_totals} (invoice, events, amount) VALUES (?, 1, ?)"
    " ON CONFLICT (invoice) DO UPDATE SET events = events + 1, amount = amount + excluded.amount"
)


class InvoiceTotals(SQLProjection):
    """Per-invoice event count and amount, one upsert per event."""

    name = "totals"
    batch_size = BATCH
    tables = (TABLE,)
    schema = (SCHEMA,)

    @handles(EVENT_TYPE)
    def issued(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        db.write(UPSERT, (event.stream, event.data["amount"]))


def counted(conn: sqlite3.Connection, items: list[Payload], checkpoint: int, head: int) -> int:
    """After the clock: the events the read model counted, or 0 if its amounts or its
    checkpoint are wrong (every event must be applied exactly once, up to the head)."""
    events, amount = conn.execute(f"SELECT sum(events), sum(amount) FROM {TABLE}").fetchone()
    right = amount == sum(data["amount"] for data, _ in items) and checkpoint == head
    return int(events or 0) if right else 0


PG_UPSERT = (
    "INSERT INTO {invoice_totals} (invoice, events, amount) VALUES (%s, 1, %s)"
    " ON CONFLICT (invoice) DO UPDATE SET events = {invoice_totals}.events + 1,"
    " amount = {invoice_totals}.amount + excluded.amount"
)
"""The same upsert for PostgreSQL: its placeholders, and the table named for the old row."""


class PgInvoiceTotals(InvoiceTotals):
    """``InvoiceTotals`` over PostgreSQL: the same statement in PostgreSQL's dialect."""

    @handles(EVENT_TYPE)
    def issued(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        db.write(PG_UPSERT, (event.stream, event.data["amount"]))


def counted_rows(
    totals: tuple[object, object], items: list[Payload], checkpoint: int, head: int
) -> int:
    """``counted`` for a (sum of events, sum of amounts) already read."""
    events, amount = totals
    right = amount == sum(data["amount"] for data, _ in items) and checkpoint == head
    return int(str(events or 0)) if right else 0
