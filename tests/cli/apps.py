"""Projections the CLI tests load with ``--app tests.cli.apps:<name>``."""

from __future__ import annotations

from eskit import EventStore, RecordedEvent
from eskit.projections import ReadModelConnection, SQLProjection, handles


class InvoiceTotals(SQLProjection):
    """Amount due per invoice."""

    name = "invoice_totals"
    tables = ("invoice_totals",)
    schema = ("CREATE TABLE {invoice_totals} (stream TEXT PRIMARY KEY, due INTEGER NOT NULL)",)
    batch_size = 2  # several batches even for a few events

    @handles("InvoiceCreated")
    def created(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        db.execute(
            "INSERT INTO {invoice_totals} (stream, due) VALUES (?, ?)",
            (event.stream, event.data["amount"]),
        )

    @handles("InvoicePaid")
    def paid(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        db.execute(
            "UPDATE {invoice_totals} SET due = due - ? WHERE stream = ?",
            (event.data["amount"], event.stream),
        )


class Fragile(SQLProjection):
    """Fails on every ``Poison`` event: gets stuck until skipped."""

    name = "fragile"
    tables = ("fragile_seen",)
    schema = ("CREATE TABLE {fragile_seen} (position INTEGER PRIMARY KEY)",)

    @handles("InvoiceCreated", "Poison")
    def seen(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        if event.type == "Poison":
            raise RuntimeError("cannot digest poison")
        db.execute("INSERT INTO {fragile_seen} (position) VALUES (?)", (event.position,))


projections = [InvoiceTotals()]
"""A list of projections."""


def build(store: EventStore) -> list[SQLProjection]:
    """A function of the store returning the projections."""
    return [InvoiceTotals()]


fragile = [Fragile()]
not_projections = [1, 2]
