"""Events whose data is kept as bytes (``eskit.RawData``, written by KurrentDB clients) are
not domain events: upcasting passes them through, decoding one or loading an aggregate whose
stream holds one raises a clear ``ValueError``."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from examples.invoicing.app import invoicing
from examples.invoicing.commands import CreateInvoice
from examples.invoicing.events import events

import eskit

pytestmark = pytest.mark.anyio

RAW = eskit.RawData("application/json", b"I wrote my first event")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def recorded(type_: str = "InvoiceCreated") -> eskit.RecordedEvent:
    return eskit.RecordedEvent(
        uuid.uuid4(), "invoice-1", 0, 1, type_, {}, {}, dt.datetime.now(dt.UTC), RAW
    )


def test_decoding_an_event_kept_as_bytes_is_refused_by_name() -> None:
    event = recorded()
    for decode in (events.decode, events.decode_old):
        with pytest.raises(ValueError, match=rf"event {event.id} \(InvoiceCreated\).*not a domain"):
            decode(event)


def test_upcasting_passes_an_event_kept_as_bytes_through() -> None:
    event = recorded()
    assert events.upcast(event) == [event]


async def test_loading_an_aggregate_whose_stream_holds_one_is_refused() -> None:
    async with eskit.open_store("memory://") as store:
        bus = invoicing(store)
        await bus.send(CreateInvoice("inv-1", "c-1", "EUR", dt.date(2024, 5, 2)))
        await store.append("invoice-inv-1", [eskit.NewEvent("InvoiceCreated", RAW)])
        repository = bus.repository_for("invoice-inv-1")
        assert repository is not None
        with pytest.raises(ValueError, match=r"invoice-inv-1' at version 1 holds data as bytes"):
            await repository.load("inv-1")
