"""The two drivers of eskit's IO-free procedures (command handling, the projection engine,
consumer groups): a procedure is a generator that yields effects and is sent each one's
result, or thrown its exception. ``drive`` performs them for the async face, ``drive_blocking``
in the caller's thread; a ``Pause`` is slept by the driver itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")
Steps = Generator[Any, Any, T]
"""A procedure that yields effects and is sent (or thrown) their outcomes."""


class Pause(msgspec.Struct, frozen=True):
    """Wait ``seconds`` before the next attempt.

    Yielded as itself, never a subclass: the drivers test an effect's exact type, as a
    failing ``isinstance`` (every other effect, a Struct) costs some 700 CPU instructions
    more than that."""

    seconds: float


async def drive(steps: Steps[T], perform: Callable[[Any], Awaitable[Any]]) -> T:
    """Run ``steps``: each effect it yields is awaited with ``perform`` (a ``Pause`` with
    ``asyncio.sleep``), its result sent back, its error thrown in. A cancellation or an
    interrupt closes the procedure and goes on up."""
    send: Callable[[Any], Any] = steps.send
    advance, outcome = send, None  # the next step: the effect's result sent, or its error thrown
    while True:
        try:
            effect = advance(outcome)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        try:
            if type(effect) is Pause:
                await asyncio.sleep(effect.seconds)
                advance, outcome = send, None
            else:
                advance, outcome = send, await perform(effect)
        except BaseException as raised:
            if not isinstance(raised, Exception):
                steps.close()
                raise
            advance, outcome = steps.throw, raised


def drive_blocking(steps: Steps[T], perform: Callable[[Any], Any]) -> T:
    """``drive`` for the blocking face: ``perform`` blocks, ``Pause`` sleeps."""
    send: Callable[[Any], Any] = steps.send
    advance, outcome = send, None  # as ``drive``'s
    while True:
        try:
            effect = advance(outcome)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        try:
            if type(effect) is Pause:
                time.sleep(effect.seconds)
                advance, outcome = send, None
            else:
                advance, outcome = send, perform(effect)
        except BaseException as raised:
            if not isinstance(raised, Exception):
                steps.close()
                raise
            advance, outcome = steps.throw, raised
