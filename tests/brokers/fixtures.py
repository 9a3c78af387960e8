"""What the broker tests share: the conformance suite's helpers (a store filled with
interleaved streams, a relay run to the head, reading a ``StreamLog`` read model back),
and closing the databases of several workers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eskit.projections import Database
from eskit.testing.brokers import (
    StreamLog,
    append_events,
    counts,
    relay_to_head,
    running,
    until,
    until_counted,
)

__all__ = [
    "StreamLog",
    "append_events",
    "counts",
    "counts_then_close",
    "relay_to_head",
    "running",
    "until",
    "until_counted",
]


async def counts_then_close(databases: Sequence[Database]) -> tuple[dict[str, int], list[Any]]:
    """``counts`` of the first database (they all hold the same file), then close them all."""
    found = await counts(databases[0])
    for database in databases:
        await database.close()
    return found
