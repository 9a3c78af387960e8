"""Long store procedures (scavenge, archive, restore) written once for both faces.

A procedure is a generator that does its blocking work only by yielding it, as calls that
take no argument, and is sent each call's result (or thrown its exception); it returns its
report. ``run_async`` makes each call in a worker thread, so the event loop goes on between
them (and a cancellation stops the procedure between two calls); ``run_blocking`` makes them
in the caller's thread (``eskit.sync``). Progress callbacks run in the procedure itself:
on the event loop's thread, or the caller's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from typing import Any, TypeAlias, TypeVar

from eskit.drivers import drive, drive_blocking

T = TypeVar("T")
Procedure: TypeAlias = Generator[Callable[[], Any], Any, T]


async def run_async(procedure: Procedure[T]) -> T:
    """Run ``procedure``, each of its calls in a worker thread: its report."""

    async def in_a_thread(call: Callable[[], Any]) -> Any:
        return await asyncio.to_thread(call)

    try:
        return await drive(procedure, in_a_thread)
    finally:
        procedure.close()


def run_blocking(procedure: Procedure[T]) -> T:
    """Run ``procedure``, its calls in the caller's thread: its report."""
    try:
        return drive_blocking(procedure, lambda call: call())
    finally:
        procedure.close()
