"""The peer's sides: the ``eventsourcing`` library (9.5.6, the ``bench`` extra) doing what
eskit does in the peer workloads, the way its documentation shows, with its defaults.

- The invoice is an ``Aggregate`` modelled on ``examples/invoicing`` (created with a
  customer, a currency and a due date; lines add to its total; the same rules), its events
  stored by the ``Application`` with the library's JSON transcoder (the due date as ISO
  text: the transcoder has no ``date``).
- SQLite: ``eventsourcing.sqlite`` on a file. The library turns WAL on and leaves
  ``synchronous`` at SQLite's default; :func:`_durable` checks on the peer's own
  connection that it is FULL, as eskit's, and refuses to measure otherwise.
- PostgreSQL: ``eventsourcing.postgres`` (psycopg 3) in a fresh schema of the run's
  database, the server's ``synchronous_commit`` (on) for both sides.
- No snapshots, and no aggregate cache (the library's defaults), so every command and load
  reads its events from the database — except where a workload asks for the library's
  aggregate cache (``existing_aggregates(..., cache=n)``, ES2c / PGES2c): then the
  repository keeps ``n`` aggregates (LRU) with ``AGGREGATE_CACHE_FASTFORWARD`` on (the
  library's default, said explicitly), so each ``get`` of a kept aggregate still reads the
  events after its version from the database and applies them (safe when other processes
  write; without fast-forward a kept aggregate goes stale), and hands out a deep copy
  (``DEEPCOPY_FROM_AGGREGATE_CACHE``, default on). :func:`_app` checks all three.
"""

from __future__ import annotations

import contextlib
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from eventsourcing.application import Application, LRUCache
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder

from benchmarks import invoices, postgres
from benchmarks.common import Measurement, Payload
from benchmarks.peer_data import (
    CURRENCY,
    CUSTOMER,
    Backend,
    existing_ids,
    lines,
    postgres_schema,
    sqlite_file,
    warm_up_lines,
)

WARM_UP = 20
DUE = invoices.DUE.isoformat()


class Invoice(Aggregate):
    """An invoice: created in a currency, lines added while it is a draft."""

    @staticmethod
    def create_id(invoice_id: str) -> uuid.UUID:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"/invoices/{invoice_id}")

    @event("Created")
    def __init__(self, invoice_id: str, customer_id: str, currency: str, due_date: str) -> None:
        if len(currency) != 3 or not currency.isupper():
            raise ValueError(f"currency must be an ISO code like EUR, got {currency!r}")
        self.invoice_id, self.customer_id = invoice_id, customer_id
        self.currency, self.due_date = currency, due_date
        self.status, self.total = "draft", 0

    def add_line(self, sku: str, amount: int, currency: str) -> None:
        if self.status != "draft":
            raise ValueError(f"cannot add a line to an invoice that is {self.status}")
        if amount <= 0:
            raise ValueError(f"a line amount must be positive, got {amount}")
        if currency != self.currency:
            raise ValueError(f"this invoice is in {self.currency}, not {currency}")
        self._line_added(sku, amount)

    @event("LineAdded")
    def _line_added(self, sku: str, amount: int) -> None:
        self.total += amount


class Invoicing(Application[uuid.UUID]):
    """The peer's application: its repository, recorder and notification log."""


def _env(backend: Backend, where: str) -> dict[str, str]:
    """The library's settings for a SQLite file or a PostgreSQL schema."""
    if backend == "sqlite":
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": where}
    url = urllib.parse.urlsplit(postgres.database_url())
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": url.path.lstrip("/"),
        "POSTGRES_HOST": url.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": url.username or "postgres",
        "POSTGRES_PASSWORD": url.password or "",
        "POSTGRES_SCHEMA": where,
    }


@contextlib.contextmanager
def _place(backend: Backend, directory: Path) -> Iterator[dict[str, str]]:
    """The settings of a fresh database for one side of one run."""
    if backend == "sqlite":
        with sqlite_file(directory, "eventsourcing") as path:
            yield _env(backend, str(path))
    else:
        with postgres_schema() as schema:
            yield _env(backend, schema)


def _cache(cache: int) -> dict[str, str]:
    """The library's settings for an aggregate cache of ``cache`` aggregates (0: none).

    The library reads a size of 0 or less as "unbounded", so 0 sets nothing (its default:
    no cache)."""
    if cache < 0:
        raise ValueError(f"cache must be 0 (none) or more, got {cache}")
    if cache == 0:
        return {}
    return {
        "AGGREGATE_CACHE_MAXSIZE": str(cache),
        "AGGREGATE_CACHE_FASTFORWARD": "y",
        "DEEPCOPY_FROM_AGGREGATE_CACHE": "y",
    }


@contextlib.contextmanager
def _app(env: dict[str, str], cache: int = 0) -> Iterator[Invoicing]:
    app = Invoicing(env={**env, **_cache(cache)})
    try:
        _durable(app)
        _cached(app, cache)
        yield app
    finally:
        app.close()


def _durable(app: Invoicing) -> None:
    """Refuse to measure a SQLite peer whose commits are not WAL + ``synchronous=FULL``."""
    recorder = app.recorder
    if not isinstance(recorder, SQLiteApplicationRecorder):
        return
    with recorder.datastore.get_connection(commit=True) as conn:  # the writer
        cursor = conn.cursor()
        cursor.execute("PRAGMA journal_mode")
        journal = cursor.fetchone()[0]
        cursor.execute("PRAGMA synchronous")
        synchronous = cursor.fetchone()[0]
    if (str(journal).lower(), synchronous) != ("wal", 2):
        raise RuntimeError(f"eventsourcing's SQLite runs {journal}, synchronous={synchronous}")


def _cached(app: Invoicing, cache: int) -> None:
    """Refuse to measure a repository whose aggregate cache is not what was asked: none for
    0, else an LRU of ``cache`` aggregates that fast-forwards and copies what it hands out."""
    repository = app.repository
    kept = repository.cache
    if cache == 0:
        if kept is not None:
            raise RuntimeError("eventsourcing's repository keeps aggregates: none was asked")
        return
    if not (
        isinstance(kept, LRUCache)
        and kept.maxsize == cache
        and repository.fastforward
        and not repository.fastforward_skipping
        and repository.deepcopy_from_cache
    ):
        raise RuntimeError(
            f"eventsourcing's aggregate cache is not {cache} aggregates fast-forwarded and copied"
        )


def _count_after(app: Invoicing, mark: int, topic_suffix: str) -> int:
    """Events of a topic ending ``topic_suffix`` recorded after notification ``mark``."""
    notifications = app.recorder.select_notifications(
        start=mark, limit=1_000_000, inclusive_of_start=False
    )
    return sum(n.topic.endswith(topic_suffix) for n in notifications)


def new_aggregates(backend: Backend, directory: Path, items: list[Payload]) -> Measurement:
    """``app.save(Invoice(...))`` of a new invoice per payload, one at a time."""
    with _place(backend, directory) as env, _app(env) as app:
        for i in range(WARM_UP):
            app.save(Invoice(f"warmup-{i}", CUSTOMER, CURRENCY, DUE))
        mark = app.recorder.max_notification_id() or 0
        start = time.perf_counter()
        for data, _ in items:
            app.save(Invoice(data["invoice_id"], data["customer_id"], data["currency"], DUE))
        elapsed = time.perf_counter() - start
        return Measurement(_count_after(app, mark, ".Created"), elapsed)


def existing_aggregates(
    backend: Backend, directory: Path, items: list[Payload], cache: int = 0
) -> Measurement:
    """Per payload: get the invoice from the repository, add a line, save (round robin over
    invoices created before the clock), the repository keeping ``cache`` aggregates (0: the
    library's default, none)."""
    ids = {invoice_id: Invoice.create_id(invoice_id) for invoice_id in existing_ids()}
    with _place(backend, directory) as env, _app(env, cache) as app:
        for invoice_id in ids:
            app.save(Invoice(invoice_id, CUSTOMER, CURRENCY, DUE))
        for x in warm_up_lines(WARM_UP):
            _add_line(app, ids[x.invoice_id], x.sku, x.amount)
        mark = app.recorder.max_notification_id() or 0
        start = time.perf_counter()
        for x in lines(items):
            _add_line(app, ids[x.invoice_id], x.sku, x.amount)
        elapsed = time.perf_counter() - start
        return Measurement(_count_after(app, mark, ".LineAdded"), elapsed)


def _add_line(app: Invoicing, invoice_id: uuid.UUID, sku: str, amount: int) -> None:
    invoice = cast(Invoice, app.repository.get(invoice_id))
    invoice.add_line(sku, amount, CURRENCY)
    app.save(invoice)


def appends(backend: Backend, directory: Path, items: list[Payload]) -> Measurement:
    """The recorder's ``insert_events`` of one stored event (a new invoice's ``Created``,
    made and encoded before the clock), one at a time: what ``store.append`` is in eskit."""
    with _place(backend, directory) as env, _app(env) as app:
        warm_up = _stored(app, [f"warmup-{i}" for i in range(WARM_UP)])
        stored = _stored(app, [data["invoice_id"] for data, _ in items])
        for one in warm_up:
            app.recorder.insert_events([one])
        mark = app.recorder.max_notification_id() or 0
        start = time.perf_counter()
        for one in stored:
            app.recorder.insert_events([one])
        elapsed = time.perf_counter() - start
        return Measurement(_count_after(app, mark, ".Created"), elapsed)


def _stored(app: Invoicing, invoice_ids: list[str]) -> list[StoredEvent]:
    """Each new invoice's ``Created`` event, as the recorder stores it."""
    created = [Invoice(invoice_id, CUSTOMER, CURRENCY, DUE) for invoice_id in invoice_ids]
    return [app.mapper.to_stored_event(e) for inv in created for e in inv.collect_events()]


def load(backend: Backend, directory: Path, items: list[Payload], loads: int) -> Measurement:
    """``app.repository.get`` of one invoice of ``len(items)`` events, ``loads`` times."""
    first, *rest = items
    with _place(backend, directory) as env:
        with _app(env) as app:
            invoice = Invoice(invoices.AGGREGATE_ID, first[0]["customer_id"], CURRENCY, DUE)
            for i, (data, _) in enumerate(rest, start=1):
                invoice.add_line(f"sku-{i % 1_000:03d}", data["amount"], CURRENCY)
            expected: Any = (invoice.version, invoice.total)
            app.save(invoice)
        with _app(env) as app:  # reopened, as eskit's side reopens its store
            app.repository.get(invoice.id, version=10)
            start = time.perf_counter()
            loaded = [cast(Invoice, app.repository.get(invoice.id)) for _ in range(loads)]
            elapsed = time.perf_counter() - start
    return Measurement(sum((x.version, x.total) == expected for x in loaded), elapsed)
