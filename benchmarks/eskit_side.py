"""The eskit side: the same workloads through the public store API, on a SQLite file.

Each function opens ``eskit.open_store("sqlite:///...")`` with its defaults
(``synchronous=FULL``), sets up and warms up untimed, then times only the workload.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from examples.invoicing.app import invoicing
from examples.invoicing.events import events as invoice_events

import eskit
from benchmarks import invoices
from benchmarks.common import (
    Measurement,
    Payload,
    catch_up,
    new_events,
    payloads,
    placements,
)
from eskit.application import Repository
from eskit.store.model import Snapshot

WARM_UP = 20
FILL_BATCH = 1_000


def _url(directory: Path) -> str:
    return f"sqlite:///{directory.resolve() / 'eskit.db'}"


async def warm_up_writes(store: eskit.EventStore) -> None:
    for (stream, _), event in zip(
        placements(WARM_UP, 1, "warmup"), new_events(payloads(WARM_UP, seed=1)), strict=True
    ):
        await store.append(stream, [event], expected_version=eskit.NO_STREAM)


async def written_since(store: eskit.EventStore, mark: int) -> int:
    """How many events the log holds after position ``mark`` (checked after the clock)."""
    count = 0
    async for _ in store.read_all(after=mark):
        count += 1
    return count


async def in_tasks(tasks: int, count: int, op: Callable[[int], Awaitable[object]]) -> None:
    """Run ``op(0)`` … ``op(count - 1)`` from ``tasks`` concurrent tasks, each awaiting its
    share in order (one task: strictly one at a time)."""

    async def client(first: int) -> None:
        for i in range(first, count, tasks):
            await op(i)

    await asyncio.gather(*(client(k) for k in range(tasks)))


async def timed_one_at_a_time(store: eskit.EventStore, items: list[Payload]) -> tuple[int, float]:
    """One event per append to a new stream, each awaited before the next, on any store:
    the position before the first and the seconds taken (W1, PG1)."""
    events = new_events(items)
    streams = [stream for stream, _ in placements(len(events), 1)]
    await warm_up_writes(store)
    mark = await store.last_position()
    start = time.perf_counter()
    for stream, event in zip(streams, events, strict=True):
        await store.append(stream, [event], expected_version=eskit.NO_STREAM)
    return mark, time.perf_counter() - start


async def timed_batches(
    store: eskit.EventStore, items: list[Payload], per_append: int
) -> tuple[int, float]:
    """All events into one stream, ``per_append`` per append, with exact expected versions,
    on any store: the position before the first and the seconds taken (W2, PG3)."""
    events = new_events(items)
    batches = [events[i : i + per_append] for i in range(0, len(events), per_append)]
    await warm_up_writes(store)
    mark = await store.last_position()
    expected: eskit.ExpectedVersion = eskit.NO_STREAM
    start = time.perf_counter()
    for batch in batches:
        expected = (await store.append("invoice-0", batch, expected)).last_version
    return mark, time.perf_counter() - start


async def append_one_at_a_time(directory: Path, items: list[Payload]) -> Measurement:
    """One event per append to a new stream, each append awaited before the next."""
    async with eskit.open_store(_url(directory)) as store:
        mark, elapsed = await timed_one_at_a_time(store, items)
        written = await written_since(store, mark)
    return Measurement(written, elapsed)


async def append_concurrently(directory: Path, items: list[Payload], tasks: int) -> Measurement:
    """One event per append to a new stream, issued by ``tasks`` concurrent asyncio tasks."""
    events = new_events(items)
    streams = [stream for stream, _ in placements(len(events), 1)]
    async with eskit.open_store(_url(directory)) as store:
        await warm_up_writes(store)
        mark = await store.last_position()
        start = time.perf_counter()
        await in_tasks(
            tasks,
            len(events),
            lambda i: store.append(streams[i], [events[i]], expected_version=eskit.NO_STREAM),
        )
        elapsed = time.perf_counter() - start
        written = await written_since(store, mark)
    return Measurement(written, elapsed)


async def append_batches(directory: Path, items: list[Payload], per_append: int) -> Measurement:
    """All events into one stream, ``per_append`` per append, with exact expected versions."""
    async with eskit.open_store(_url(directory)) as store:
        mark, elapsed = await timed_batches(store, items, per_append)
        written = await written_since(store, mark)
    return Measurement(written, elapsed)


async def _fill(directory: Path, items: list[Payload], per_stream: int) -> None:
    """Write the events through eskit, 100 per append (appends to distinct streams run 50
    at a time), then close the store so its WAL is checkpointed before anything is timed."""
    events = new_events(items)
    where = placements(len(events), per_stream)
    batches: list[tuple[str, list[eskit.NewEvent]]] = []
    for (stream, version), event in zip(where, events, strict=True):
        if version % 100 == 0:
            batches.append((stream, []))
        batches[-1][1].append(event)
    async with eskit.open_store(_url(directory)) as store:
        if per_stream <= 100:  # one append per stream: they may run concurrently
            for i in range(0, len(batches), 50):
                await asyncio.gather(*(store.append(s, b) for s, b in batches[i : i + 50]))
        else:
            for stream, batch in batches:
                await store.append(stream, batch)


async def read_stream(directory: Path, items: list[Payload]) -> Measurement:
    """Read one stream of all the events back with ``read_stream``."""
    await _fill(directory, items, per_stream=len(items))
    async with eskit.open_store(_url(directory)) as store:
        async for _ in store.read_stream("invoice-0", limit=10):
            pass
        count = 0
        start = time.perf_counter()
        async for _ in store.read_stream("invoice-0"):
            count += 1
        elapsed = time.perf_counter() - start
    return Measurement(count, elapsed)


async def read_all(
    directory: Path, items: list[Payload], per_stream: int, page: int
) -> Measurement:
    """Read the whole log with ``read_all(after=checkpoint, limit=page)``, page after page."""
    await _fill(directory, items, per_stream)
    async with eskit.open_store(_url(directory)) as store:
        async for _ in store.read_all(limit=10):
            pass
        start = time.perf_counter()
        count, _ = await read_in_pages(store, page)
        elapsed = time.perf_counter() - start
    return Measurement(count, elapsed)


async def read_in_pages(store: eskit.EventStore, page: int) -> tuple[int, int]:
    """Read the whole log with ``read_all(after=checkpoint, limit=page)``, page after page:
    the events read and the position of the last one."""
    count, after = 0, 0
    while True:
        got = 0
        async for event in store.read_all(after=after, limit=page):
            got += 1
            after = event.position
        count += got
        if got < page:
            return count, after


async def subscribe(directory: Path, items: list[Payload], per_stream: int) -> Measurement:
    """Catch up with ``subscribe(after=0)``; stop at the last position the store had."""
    await _fill(directory, items, per_stream)
    async with eskit.open_store(_url(directory)) as store:
        async for _ in store.read_all(limit=10):
            pass
        count, elapsed = await catch_up(store, await store.last_position())
    return Measurement(count, elapsed)


# -- the write side: commands and aggregate loads -------------------------------------------


async def invoices_created_since(store: eskit.EventStore, mark: int) -> int:
    """How many new invoices were created after position ``mark`` (checked after the clock):
    events ``InvoiceCreated`` at version 0 of an ``invoice-inv-…`` stream."""
    count = 0
    async for event in store.read_all(after=mark):
        created = event.type == "InvoiceCreated" and event.version == 0
        count += created and event.stream.startswith("invoice-inv-")
    return count


async def send_commands(directory: Path, items: list[Payload], tasks: int) -> Measurement:
    """A ``CreateInvoice`` for a new invoice per payload through the invoicing example's
    ``CommandBus`` (each records one event), sent from ``tasks`` concurrent tasks."""
    return await send_commands_to(_url(directory), items, tasks)


async def send_commands_to(url: str, items: list[Payload], tasks: int) -> Measurement:
    """:func:`send_commands` on the store at ``url`` (any backend)."""
    commands = invoices.create_commands(items)
    async with eskit.open_store(url) as store:
        bus = invoicing(store)
        for command in invoices.warm_up_commands(WARM_UP):
            await bus.send(command)
        mark = await store.last_position()
        start = time.perf_counter()
        await in_tasks(tasks, len(commands), lambda i: bus.send(commands[i]))
        elapsed = time.perf_counter() - start
        created = await invoices_created_since(store, mark)
    return Measurement(created, elapsed)


async def append_created(directory: Path, items: list[Payload], tasks: int) -> Measurement:
    """The store under the bus: ``append`` of each command's ``InvoiceCreated``, encoded
    beforehand as the repository encodes it, to its new stream (``NO_STREAM``)."""
    envelopes = invoices.envelopes(invoices.created(items))
    streams = invoices.streams(items)
    async with eskit.open_store(_url(directory)) as store:
        await warm_up_writes(store)
        mark = await store.last_position()
        start = time.perf_counter()
        await in_tasks(
            tasks,
            len(envelopes),
            lambda i: store.append(streams[i], [envelopes[i]], expected_version=eskit.NO_STREAM),
        )
        elapsed = time.perf_counter() - start
        created = await invoices_created_since(store, mark)
    return Measurement(created, elapsed)


async def fill_invoice(url: str, history: invoices.History, snapshot: bool) -> None:
    """Write one invoice's events, ``FILL_BATCH`` per append, and with ``snapshot`` its
    snapshot at the last event; then close the store so its WAL is checkpointed."""
    envelopes = invoices.envelopes(history)
    model = invoices.WITH_SNAPSHOTS
    async with eskit.open_store(url) as store:
        expected: eskit.ExpectedVersion = eskit.NO_STREAM
        for i in range(0, len(envelopes), FILL_BATCH):
            batch = envelopes[i : i + FILL_BATCH]
            expected = (await store.append(invoices.STREAM, batch, expected)).last_version
        if snapshot:
            assert model.to_snapshot is not None
            state = model.to_snapshot(invoices.final_state(history))
            last = len(envelopes) - 1
            await store.save_snapshot(
                Snapshot(invoices.STREAM, last, model.snapshot_version, state)
            )


async def load_invoice(
    directory: Path, items: list[Payload], loads: int, snapshots: bool
) -> Measurement:
    """``Repository.load`` of one invoice of ``len(items)`` events, ``loads`` times; with
    ``snapshots`` from its snapshot at the last event, else replaying every event."""
    return await load_invoice_from(_url(directory), items, loads, snapshots)


async def load_invoice_from(
    url: str, items: list[Payload], loads: int, snapshots: bool
) -> Measurement:
    """:func:`load_invoice` from the store at ``url`` (any backend)."""
    history = invoices.history(items)
    await fill_invoice(url, history, snapshots)
    model = invoices.WITH_SNAPSHOTS if snapshots else invoices.WITHOUT_SNAPSHOTS
    async with eskit.open_store(url) as store:
        repository = Repository(store, invoice_events, model)
        await repository.load(invoices.AGGREGATE_ID, version=9)
        start = time.perf_counter()
        loaded = [await repository.load(invoices.AGGREGATE_ID) for _ in range(loads)]
        elapsed = time.perf_counter() - start
    expected, last = invoices.final_state(history), len(history) - 1
    return Measurement(sum(invoices.loaded_right(r, expected, last) for r in loaded), elapsed)
