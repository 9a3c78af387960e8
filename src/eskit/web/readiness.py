"""When a server is ready for traffic: it is not stopping, the store answers within
``STORE_TIMEOUT``, and every projection of its runner is at most ``max_lag`` events behind
the log's head (a stuck projection falls behind as soon as events arrive). The answer
also says when each projection was last rebuilt.

No FastAPI here: ``eskit serve`` reads the default without loading the web stack.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Final

import msgspec

from eskit.projections.runner import ProjectionRunner
from eskit.projections.status import statuses
from eskit.store.base import EventStore

DEFAULT_MAX_LAG: Final = 1000
"""Events a projection may be behind the head before the server reports not ready."""
STORE_TIMEOUT: Final = 2.0
"""Seconds the store has to answer a readiness check."""


class Readiness(msgspec.Struct, frozen=True):
    """The answer of ``/health/ready``: ``reasons`` is empty exactly when ready."""

    status: str  # ready | unready
    head: int | None
    lag: dict[str, int]
    reasons: list[str]
    last_rebuild: dict[str, dt.datetime | None] = {}
    """When each projection's last rebuild switched in (None: never rebuilt)."""


async def readiness(
    store: EventStore, runner: ProjectionRunner | None, max_lag: int, *, stopping: bool = False
) -> Readiness:
    """Check the store and the lag of ``runner``'s projections."""
    reasons = ["the server is stopping"] if stopping else []
    try:
        async with asyncio.timeout(STORE_TIMEOUT):
            head: int | None = await store.written_position()  # the primary's
    except TimeoutError:
        head = None
        reasons.append(f"the store did not answer within {STORE_TIMEOUT:g} s")
    except Exception as error:  # unreachable, closed: say what, not the details
        head = None
        reasons.append(f"the store is not reachable ({type(error).__name__})")
    lag: dict[str, int] = {}
    rebuilt: dict[str, dt.datetime | None] = {}
    if runner is not None and head is not None:
        for status in statuses(head, [], await runner.status()):
            rebuilt[status.name] = status.last_rebuild
            behind = lag[status.name] = status.lag
            if behind > max_lag:
                state = f", {status.status}" if status.status != "running" else ""
                reasons.append(
                    f"projection {status.name} is {behind} events behind (over {max_lag}{state})"
                )
    return Readiness("unready" if reasons else "ready", head, lag, reasons, rebuilt)
