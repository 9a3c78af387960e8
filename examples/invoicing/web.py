"""The invoicing example over HTTP: ``eskit serve --app examples.invoicing.web:app_spec``.

Commands go to the example's command bus; the read models are kept by a projection runner
that catches up as the server starts (before the first request) and then follows the log,
and their queries are served by name; the admin UI (``/admin``) shows the runner's
projections and loads invoices and customers at any version. The read models' SQL is
SQLite's: on a SQLite store they live in the store's file, on another store in an in-memory
SQLite database that is rebuilt from the log at each start.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator

from eskit.projections import ProjectionRunner, SQLiteDatabase
from eskit.store import EventStore, SQLiteStore
from eskit.web import AppSpec
from eskit.web.queries import Query
from examples.invoicing.app import invoicing
from examples.invoicing.customer import CustomerError, customer_decider
from examples.invoicing.invoice import Invoice, InvoiceError
from examples.invoicing.read_models import (
    count_invoices,
    customer_balances,
    find_invoice,
    invoices_of,
    list_invoices,
    open_invoices,
    overdue_invoices,
    projections,
)
from examples.invoicing.search import SearchHit, search_invoices


def app_spec(store: EventStore) -> AppSpec:
    """The bus, the queries and the runner of the invoicing example on ``store``."""
    bus = invoicing(store)
    apart = None if isinstance(store, SQLiteStore) else SQLiteDatabase(":memory:")
    runner = ProjectionRunner(store, projections(store, bus), database=apart)
    db = runner.database

    async def search(text: str, status: str | None = None, limit: int = 10) -> list[SearchHit]:
        """Invoices matching every word of ``text`` (in ``status``, if given), the best
        match first, with a highlighted snippet."""
        return await search_invoices(db, text, status=status, limit=limit)

    @contextlib.asynccontextmanager
    async def running() -> AsyncIterator[None]:
        await runner.run_until_caught_up()  # queries find their tables from the first request
        async with runner:
            yield
        if apart is not None:
            await apart.close()

    queries: dict[str, Query] = {
        "invoices": functools.partial(list_invoices, db),
        "open_invoices": functools.partial(open_invoices, db),
        "overdue_invoices": functools.partial(overdue_invoices, db),
        "invoices_of": functools.partial(invoices_of, db),
        "invoice": functools.partial(find_invoice, db),
        "invoice_count": functools.partial(count_invoices, db),
        "customer_balances": functools.partial(customer_balances, db),
        "search": search,
    }
    return AppSpec(
        bus=bus,
        queries=queries,
        errors={InvoiceError: 409, CustomerError: 409},
        running=running,
        wait_until=runner.wait_until,
        runner=runner,
        aggregates={
            "invoice": bus.repository(Invoice.model()),
            "customer": bus.repository(customer_decider),
        },
    )
