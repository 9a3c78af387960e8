"""Reading the next page while the caller works through this one (the async face's reads
and subscriptions): two pages in memory at most."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from eskit.store.model import RecordedEvent

C = TypeVar("C")


def drop(read: asyncio.Future[Any] | None) -> None:
    """Cancel a read nobody will wait for; if it already failed (say, the store closed),
    take its error, so that it is not reported as never retrieved."""
    if read is not None and not read.cancel() and not read.cancelled():
        read.exception()


async def read_ahead(
    read: Callable[[C], Awaitable[tuple[list[RecordedEvent], C | None]]], cursor: C
) -> AsyncIterator[list[RecordedEvent]]:
    """Yield the pages ``read`` returns, each with the cursor of the next (None: no more).

    The next page is asked for before this one is handed over, so the database reads it
    while the caller works through this one (two pages in memory at most). A read of one
    page starts no task.
    """
    page, following = await read(cursor)
    while True:
        ahead = None if following is None else asyncio.ensure_future(read(following))
        try:
            yield page
        except BaseException:  # the caller stopped: the page read ahead is not wanted
            drop(ahead)
            raise
        if ahead is None:
            return
        page, following = await ahead
