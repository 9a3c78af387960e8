"""Commands registered with ``creates=True`` on both faces: a new aggregate is decided and
appended without reading its stream first (one round trip), and a stream that exists after
all is loaded and decided again, so what the command does to it is unchanged."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from examples.invoicing.app import invoicing, sync_invoicing
from examples.invoicing.commands import CreateInvoice
from examples.invoicing.invoice import InvoiceError

import eskit
import eskit.sync
from eskit.application import CommandBus
from eskit.sync import SyncStore
from tests.application.conftest import ManualClock
from tests.application.test_commands import Deposit, Deposited, account_decider, events

CREATE = CreateInvoice("inv-1", "c-1", "EUR", dt.date(2024, 4, 1))
READS = ("read_stream", "read_from_snapshot")


ENGINE_READS = {
    "read_stream": "read_stream_page",
    "read_from_snapshot": "snapshot_and_page",
    "find_event": "find_event",
}
"""The engine's primitive under each read of the store (the async bus may make its reads
with the engine's blocking face, in a worker thread: counted there, they are seen)."""


def count_reads(store: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the store's reads of streams and lookups of events, either face."""
    counts = dict.fromkeys((*READS, "find_event"), 0)
    for name in counts:
        method = getattr(store.engine, ENGINE_READS[name])

        def counted(*args: Any, _name: str = name, _method: Any = method, **kw: Any) -> Any:
            counts[_name] += 1
            return _method(*args, **kw)

        monkeypatch.setattr(store.engine, ENGINE_READS[name], counted)
    return counts


def deposits(bus: CommandBus | eskit.sync.CommandBus) -> None:
    """Deposits create the account when there is none: each goes to any account, new or not."""
    bus.register(Deposit, account_decider, aggregate_id=lambda c: c.account_id, creates=True)


# -- the async face ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_create_reads_nothing_before_its_append(
    store: eskit.EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = invoicing(store)
    counts = count_reads(store, monkeypatch)

    result = await bus.send(CREATE)

    assert (result.stream, result.version, result.position) == ("invoice-inv-1", 0, 1)
    assert counts == {"read_stream": 0, "read_from_snapshot": 0, "find_event": 0}


@pytest.mark.anyio
async def test_a_create_with_a_command_id_only_looks_the_id_up(
    store: eskit.EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = invoicing(store)
    counts = count_reads(store, monkeypatch)
    command_id = uuid.uuid4()

    first = await bus.send(CREATE, command_id=command_id)
    assert counts == {"read_stream": 0, "read_from_snapshot": 0, "find_event": 1}
    again = await bus.send(CREATE, command_id=command_id)

    assert (again.version, again.position, again.replayed) == (first.version, first.position, True)
    assert await store.last_position() == 1


@pytest.mark.anyio
async def test_a_create_on_an_existing_aggregate_is_refused_as_without_the_option(
    store: eskit.EventStore,
) -> None:
    bus = invoicing(store)
    await bus.send(CREATE)

    with pytest.raises(InvoiceError, match="invoice inv-1 already exists"):
        await bus.send(CreateInvoice("inv-1", "c-2", "EUR", dt.date(2024, 5, 1)))
    with pytest.raises(InvoiceError, match="currency must be an ISO code"):  # decided anew
        await bus.send(CreateInvoice("inv-2", "c-2", "eur", dt.date(2024, 5, 1)))

    assert await store.last_position() == 1


@pytest.mark.anyio
async def test_an_existing_aggregate_is_loaded_and_the_command_decided_on_it(
    store: eskit.EventStore,
) -> None:
    bus = CommandBus(store, events, backoff=0)
    deposits(bus)

    results = await asyncio.gather(*(bus.send(Deposit("a", n)) for n in (1, 2, 3, 4)))
    later = await bus.send(Deposit("a", 10))

    assert sorted(r.version for r in results if r.version is not None) == [0, 1, 2, 3]
    assert later.version == 4
    loaded = await bus.repository(account_decider).load("a")
    assert (loaded.state.balance, loaded.version) == (20, 4)


# -- the blocking face ------------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def sync_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> Iterator[SyncStore]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/events.db"
    with eskit.sync.open_store(url, clock=clock) as opened:
        yield opened


def test_a_blocking_create_reads_nothing_before_its_append(
    sync_store: SyncStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = sync_invoicing(sync_store)
    counts = count_reads(sync_store, monkeypatch)

    result = bus.send(CREATE)

    assert (result.version, result.position) == (0, 1)
    assert counts == {"read_stream": 0, "read_from_snapshot": 0, "find_event": 0}
    bus.states.clear()  # else the state the bus kept is caught up instead (test_state_cache)
    with pytest.raises(InvoiceError, match="invoice inv-1 already exists"):
        bus.send(CREATE)
    assert counts["read_from_snapshot"] == 1  # the second one loaded the invoice


def test_a_blocking_create_on_an_existing_aggregate_decides_on_it(sync_store: SyncStore) -> None:
    bus = eskit.sync.CommandBus(sync_store, events)
    deposits(bus)
    command_id = uuid.uuid4()

    first = bus.send(Deposit("a", 5))
    second = bus.send(Deposit("a", 7), command_id=command_id)
    again = bus.send(Deposit("a", 7), command_id=command_id)

    assert (first.version, second.version, again.version, again.replayed) == (0, 1, 1, True)
    assert second.events == [Deposited(7)]
    assert bus.repository(account_decider).load("a").state.balance == 12
