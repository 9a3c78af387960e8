"""Full-text search over invoices: a ``SearchIndex`` (SQLite FTS5 or PostgreSQL full text).

Each invoice is one document: its customer (the name once the customer's registration is
seen, the id until then), the skus of its lines and its status. The customer's name is
strongest, a status weakest; the customer is the document's data subject and their name
its personal field, masked in the index when the customer is forgotten. The names learnt
before their invoices wait in a table of the index's own, cleared on a forget too.
"""

from __future__ import annotations

import msgspec

from eskit.projections import Database, ReadModelConnection, handles
from eskit.projections.search import Field, SearchIndex
from eskit.store.model import RecordedEvent
from examples.invoicing.events import (
    CustomerRegistered,
    CustomerRenamed,
    InvoiceCreated,
    InvoiceLineAdded,
)
from examples.invoicing.reading import customer_id, invoice_id, typed

STATUSES = {
    "InvoiceIssued": "issued",
    "InvoicePaid": "paid",
    "InvoiceCancelled": "cancelled",
    "InvoiceMarkedOverdue": "overdue",
}


class InvoiceSearch(SearchIndex):
    """One document per invoice, kept current as its customer and lines change."""

    name = "invoice_search"
    fields = (
        Field("customer", weight=4.0, personal=True),
        Field("lines", weight=2.0),
        Field("status", weight=1.0),
    )
    extra_tables = ("invoice_search_customers",)
    extra_schema = (
        "CREATE TABLE {invoice_search_customers}"
        " (customer_id TEXT PRIMARY KEY, name TEXT NOT NULL)",
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
        customer = typed(event, InvoiceCreated).customer_id
        row = db.execute(
            "SELECT name FROM {invoice_search_customers} WHERE customer_id = ?", (customer,)
        ).fetchone()
        name = customer if row is None else row[0]
        self.put(db, invoice_id(event), subject=customer, customer=name, status="draft")

    @handles("InvoiceLineAdded")
    def line_added(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        invoice = invoice_id(event)
        document = self.get(db, invoice)
        if document is not None:
            lines = f"{document['lines']} {typed(event, InvoiceLineAdded).sku}".strip()
            self.update(db, invoice, lines=lines)

    @handles(*STATUSES)
    def status_changed(self, event: RecordedEvent, db: ReadModelConnection) -> None:
        self.update(db, invoice_id(event), status=STATUSES[event.type])

    def forget(self, db: ReadModelConnection, subject: str) -> None:
        db.execute("DELETE FROM {invoice_search_customers} WHERE customer_id = ?", (subject,))
        super().forget(db, subject)

    def _name(self, db: ReadModelConnection, customer: str, name: str) -> None:
        """Remember the customer's name and put it in the documents of their invoices."""
        db.execute(
            "INSERT INTO {invoice_search_customers} VALUES (?, ?)"
            " ON CONFLICT (customer_id) DO UPDATE SET name = excluded.name",
            (customer, name),
        )
        self.update_subject(db, customer, customer=name)


class SearchHit(msgspec.Struct, frozen=True):
    invoice_id: str
    customer: str
    status: str
    snippet: str  # the best matching passage, matches between the ``highlight`` marks
    score: float  # the higher the better


async def search_invoices(
    db: Database,
    text: str,
    *,
    status: str | None = None,
    limit: int = 10,
    highlight: tuple[str, str] = ("«", "»"),
) -> list[SearchHit]:
    """Invoices matching every word of ``text`` (and in ``status``, if given), the best
    match first."""
    where = {} if status is None else {"status": status}
    hits = await InvoiceSearch.search(db, text, where=where, limit=limit, highlight=highlight)
    return [
        SearchHit(hit.key, hit.fields["customer"], hit.fields["status"], hit.snippet, hit.score)
        for hit in hits
    ]
