"""What the invoicing read models share: typed events, stream ids and typed rows."""

from __future__ import annotations

import sqlite3
from typing import TypeVar

import msgspec

from eskit.store.model import RecordedEvent
from examples.invoicing.events import events

E = TypeVar("E")


def typed(event: RecordedEvent, cls: type[E]) -> E:
    """The stored event as today's class: old schema versions are upcast on the way."""
    (decoded,) = events.decode(event)
    if not isinstance(decoded, cls):
        raise TypeError(f"{event.type} at {event.position} is not a {cls.__qualname__}")
    return decoded


def invoice_id(event: RecordedEvent) -> str:
    """The invoice an event of an ``invoice-<id>`` stream belongs to."""
    return event.stream.removeprefix("invoice-")


def customer_id(event: RecordedEvent) -> str:
    """The customer an event of a ``customer-<id>`` stream belongs to."""
    return event.stream.removeprefix("customer-")


def rows(cursor: sqlite3.Cursor, cls: type[E]) -> list[E]:
    """A query's rows as ``cls`` instances, by column name (ISO text becomes dates)."""
    names = [column[0] for column in cursor.description]
    return [msgspec.convert(dict(zip(names, row, strict=True)), cls) for row in cursor]
