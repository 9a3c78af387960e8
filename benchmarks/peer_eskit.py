"""eskit's sides of the peer workloads: the async face (``eskit.open_store``, the invoicing
example's ``CommandBus`` and ``Repository``) and the blocking face (``eskit.sync``: its
store, and the same example's bus and repository on it), on a fresh SQLite file or
PostgreSQL schema, with defaults.

Each function sets up and warms up untimed, times only the workload, then checks what was
written (or loaded) after the clock.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from examples.invoicing.app import invoicing, sync_invoicing
from examples.invoicing.commands import AddInvoiceLine, CreateInvoice
from examples.invoicing.events import events as invoice_events

import eskit
import eskit.sync
from benchmarks import eskit_side, invoices
from benchmarks.common import Measurement, Payload, new_events, payloads, placements
from benchmarks.peer_data import (
    CURRENCY,
    CUSTOMER,
    Backend,
    eskit_url,
    existing_ids,
    lines,
    warm_up_lines,
)

WARM_UP = eskit_side.WARM_UP


def new_aggregates(backend: Backend, directory: Path, items: list[Payload]) -> Measurement:
    """``bus.send(CreateInvoice(...))`` for a new invoice per payload, one at a time."""
    with eskit_url(backend, directory) as url:
        return asyncio.run(eskit_side.send_commands_to(url, items, tasks=1))


def sync_new_aggregates(backend: Backend, directory: Path, items: list[Payload]) -> Measurement:
    """The same creates through ``eskit.sync.CommandBus``, the blocking face."""
    commands = invoices.create_commands(items)
    with eskit_url(backend, directory) as url, eskit.sync.open_store(url) as store:
        bus = sync_invoicing(store)
        for command in invoices.warm_up_commands(WARM_UP):
            bus.send(command)
        mark = store.last_position()
        start = time.perf_counter()
        for command in commands:
            bus.send(command)
        elapsed = time.perf_counter() - start
        created = sum(e.type == "InvoiceCreated" for e in store.read_all(after=mark))
    return Measurement(created, elapsed)


def existing_aggregates(backend: Backend, directory: Path, items: list[Payload]) -> Measurement:
    """``bus.send(AddInvoiceLine(...))`` per payload, round robin over invoices created
    before the clock: each command loads its invoice and appends one event."""
    with eskit_url(backend, directory) as url:
        return asyncio.run(_existing_aggregates(url, items))


async def _existing_aggregates(url: str, items: list[Payload]) -> Measurement:
    commands = [AddInvoiceLine(x.invoice_id, x.sku, x.amount, CURRENCY) for x in lines(items)]
    async with eskit.open_store(url) as store:
        bus = invoicing(store)
        for invoice_id in existing_ids():
            await bus.send(CreateInvoice(invoice_id, CUSTOMER, CURRENCY, invoices.DUE))
        for x in warm_up_lines(WARM_UP):
            await bus.send(AddInvoiceLine(x.invoice_id, x.sku, x.amount, CURRENCY))
        mark = await store.last_position()
        start = time.perf_counter()
        for command in commands:
            await bus.send(command)
        elapsed = time.perf_counter() - start
        added = 0
        async for event in store.read_all(after=mark):
            added += event.type == "InvoiceLineAdded"
    return Measurement(added, elapsed)


def sync_existing_aggregates(
    backend: Backend, directory: Path, items: list[Payload]
) -> Measurement:
    """The same commands on existing invoices through ``eskit.sync.CommandBus``."""
    commands = [AddInvoiceLine(x.invoice_id, x.sku, x.amount, CURRENCY) for x in lines(items)]
    with eskit_url(backend, directory) as url, eskit.sync.open_store(url) as store:
        bus = sync_invoicing(store)
        for invoice_id in existing_ids():
            bus.send(CreateInvoice(invoice_id, CUSTOMER, CURRENCY, invoices.DUE))
        for x in warm_up_lines(WARM_UP):
            bus.send(AddInvoiceLine(x.invoice_id, x.sku, x.amount, CURRENCY))
        mark = store.last_position()
        start = time.perf_counter()
        for command in commands:
            bus.send(command)
        elapsed = time.perf_counter() - start
        added = sum(e.type == "InvoiceLineAdded" for e in store.read_all(after=mark))
    return Measurement(added, elapsed)


def appends(backend: Backend, directory: Path, items: list[Payload]) -> Measurement:
    """``store.append`` of one event to a new stream, each awaited before the next."""
    with eskit_url(backend, directory) as url:
        return asyncio.run(_appends(url, items))


async def _appends(url: str, items: list[Payload]) -> Measurement:
    async with eskit.open_store(url) as store:
        mark, elapsed = await eskit_side.timed_one_at_a_time(store, items)
        written = await eskit_side.written_since(store, mark)
    return Measurement(written, elapsed)


def sync_appends(backend: Backend, directory: Path, items: list[Payload]) -> Measurement:
    """The same appends through ``eskit.sync``, the blocking face."""
    events = new_events(items)
    streams = [stream for stream, _ in placements(len(events), 1)]
    warm_up = new_events(payloads(WARM_UP, seed=1))
    with eskit_url(backend, directory) as url, eskit.sync.open_store(url) as store:
        for (stream, _), event in zip(placements(WARM_UP, 1, "warmup"), warm_up, strict=True):
            store.append(stream, [event], expected_version=eskit.NO_STREAM)
        mark = store.last_position()
        start = time.perf_counter()
        for stream, event in zip(streams, events, strict=True):
            store.append(stream, [event], expected_version=eskit.NO_STREAM)
        elapsed = time.perf_counter() - start
        written = sum(1 for _ in store.read_all(after=mark))
    return Measurement(written, elapsed)


def load(backend: Backend, directory: Path, items: list[Payload], loads: int) -> Measurement:
    """``Repository.load`` of one invoice of ``len(items)`` events (no snapshot: every event
    read, decoded and applied), ``loads`` times."""
    with eskit_url(backend, directory) as url:
        return asyncio.run(eskit_side.load_invoice_from(url, items, loads, snapshots=False))


def sync_load(backend: Backend, directory: Path, items: list[Payload], loads: int) -> Measurement:
    """The same loads through ``eskit.sync.Repository`` (the invoice written as for
    :func:`load`)."""
    history = invoices.history(items)
    with eskit_url(backend, directory) as url:
        asyncio.run(eskit_side.fill_invoice(url, history, snapshot=False))
        with eskit.sync.open_store(url) as store:
            repository = eskit.sync.Repository(store, invoice_events, invoices.WITHOUT_SNAPSHOTS)
            repository.load(invoices.AGGREGATE_ID, version=9)
            start = time.perf_counter()
            loaded = [repository.load(invoices.AGGREGATE_ID) for _ in range(loads)]
            elapsed = time.perf_counter() - start
    expected, last = invoices.final_state(history), len(history) - 1
    return Measurement(sum(invoices.loaded_right(r, expected, last) for r in loaded), elapsed)
