"""Full-text search over invoices: an SQLite FTS5 index kept by a projection.

Each invoice is one document: its customer (the name once the customer's registration is
seen, the id until then), the skus of its lines and its status. FTS5 ranks with ``bm25`` and
cuts ``snippet``s, two functions that take the FTS table itself, not a view of it: the query
looks the live build's table up in the same read transaction (``live_tables``).
"""

from __future__ import annotations

import sqlite3

import msgspec

from eskit.projections import Database, ReadModelConnection, SQLProjection, handles, live_tables
from eskit.store.model import RecordedEvent
from examples.invoicing.events import (
    CustomerRegistered,
    CustomerRenamed,
    InvoiceCreated,
    InvoiceLineAdded,
)
from examples.invoicing.reading import customer_id, invoice_id, rows, typed

STATUSES = {
    "InvoiceIssued": "issued",
    "InvoicePaid": "paid",
    "InvoiceCancelled": "cancelled",
    "InvoiceMarkedOverdue": "overdue",
}

WEIGHTS = (0.0, 4.0, 2.0, 1.0)
"""bm25 weight per column (invoice_id, customer, lines, status): a customer's name is the
strongest hint, a status the weakest."""


class InvoiceSearch(SQLProjection):
    """The FTS5 index, plus what it needs to keep documents current."""

    name = "invoice_search"
    tables = ("invoice_search", "invoice_search_docs", "invoice_search_customers")
    schema = (
        # rowid = the invoice's row in invoice_search_docs
        "CREATE VIRTUAL TABLE {invoice_search}"
        " USING fts5(invoice_id UNINDEXED, customer, lines, status)",
        """CREATE TABLE {invoice_search_docs} (
            id          INTEGER PRIMARY KEY,  -- the document's rowid in the FTS table
            invoice_id  TEXT NOT NULL UNIQUE,
            customer_id TEXT NOT NULL
        )""",
        "CREATE INDEX {invoice_search_docs}_by_customer ON {invoice_search_docs} (customer_id)",
        """CREATE TABLE {invoice_search_customers} (
            customer_id TEXT PRIMARY KEY,
            name        TEXT NOT NULL
        )""",
    )

    @handles("CustomerRegistered")
    def registered(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        customer = typed(event, CustomerRegistered)
        self._name(db, customer.customer_id, customer.name)

    @handles("CustomerRenamed")
    def renamed(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        self._name(db, customer_id(event), typed(event, CustomerRenamed).name)

    @handles("InvoiceCreated")
    def created(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        created = typed(event, InvoiceCreated)
        invoice = invoice_id(event)
        row = db.execute(
            "SELECT name FROM {invoice_search_customers} WHERE customer_id = ?",
            (created.customer_id,),
        ).fetchone()
        doc = db.execute(
            "INSERT INTO {invoice_search_docs} (invoice_id, customer_id) VALUES (?, ?)",
            (invoice, created.customer_id),
        ).lastrowid
        db.execute(
            "INSERT INTO {invoice_search} (rowid, invoice_id, customer, lines, status)"
            " VALUES (?, ?, ?, '', 'draft')",
            (doc, invoice, created.customer_id if row is None else row[0]),
        )

    @handles("InvoiceLineAdded")
    def line_added(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        sku = typed(event, InvoiceLineAdded).sku
        self._update(db, event, "lines = trim(lines || ' ' || ?)", sku)

    @handles(*STATUSES)
    def status_changed(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        self._update(db, event, "status = ?", STATUSES[event.type])

    @staticmethod
    def _update(db: ReadModelConnection, event: RecordedEvent, change: str, value: str) -> None:
        db.execute(
            f"UPDATE {{invoice_search}} SET {change} WHERE rowid ="
            " (SELECT id FROM {invoice_search_docs} WHERE invoice_id = ?)",
            (value, invoice_id(event)),
        )

    @staticmethod
    def _name(db: ReadModelConnection, customer: str, name: str) -> None:
        """Remember the customer's name and put it in the documents of their invoices."""
        db.execute(
            "INSERT INTO {invoice_search_customers} VALUES (?, ?)"
            " ON CONFLICT DO UPDATE SET name = excluded.name",
            (customer, name),
        )
        db.execute(
            "UPDATE {invoice_search} SET customer = ? WHERE rowid IN"
            " (SELECT id FROM {invoice_search_docs} WHERE customer_id = ?)",
            (name, customer),
        )


class SearchHit(msgspec.Struct, frozen=True):
    invoice_id: str
    customer: str
    status: str
    snippet: str  # the best matching column, matches between the ``highlight`` marks
    score: float  # bm25: lower is better


def match_expression(text: str) -> str:
    """The user's words as an FTS5 query that cannot be a syntax error: each word becomes a
    quoted string (``"`` doubled inside), so operators and quotes are searched as text and
    the words must all match. Empty if there is nothing to search for. (NUL is the one
    character FTS5 refuses inside a string: it separates words here.)"""
    words = text.replace("\x00", " ").split()
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


async def search_invoices(
    db: Database, text: str, *, limit: int = 10, highlight: tuple[str, str] = ("«", "»")
) -> list[SearchHit]:
    """Invoices matching every word of ``text``, the best match first."""
    query = match_expression(text)
    if not query:
        return []
    weights = ", ".join(map(str, WEIGHTS))

    def run(conn: sqlite3.Connection) -> list[SearchHit]:
        fts = live_tables(conn, InvoiceSearch)["invoice_search"]
        cursor = conn.execute(
            f"SELECT invoice_id, customer, status,"
            f' snippet("{fts}", -1, ?, ?, \'…\', 8) AS snippet, bm25("{fts}", {weights}) AS score'
            f' FROM "{fts}" WHERE "{fts}" MATCH ? ORDER BY score, invoice_id LIMIT ?',
            (*highlight, query, limit),
        )
        return rows(cursor, SearchHit)

    return await db.read(run)
