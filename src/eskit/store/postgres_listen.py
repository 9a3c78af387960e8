"""``LISTEN``/``NOTIFY`` for the PostgreSQL backend: wakes subscriptions when any process
commits.

It only wakes them early: if the listening connection dies, subscriptions still find new
events by polling every ``poll_interval``. The store listens only while something waits
for events (and ``_LISTEN_IDLE`` after): a process that only writes does not wake up for
each of its own commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final

import psycopg

log = logging.getLogger("eskit.store.postgres")
_LISTEN_IDLE: Final = 10.0
"""Seconds the LISTEN connection stays open after the last wait for events."""
_NOTIFY_CHECK: Final = 1.0
"""Seconds between the listener's checks that someone still waits."""


class Listener:
    """Listens on ``channel`` while the store is open and something waits (``waiting()``)
    or lately did, calling ``wake`` for each notification."""

    def __init__(
        self,
        conninfo: str,
        channel: str,
        *,
        is_open: Callable[[], bool],
        waiting: Callable[[], bool],
        wake: Callable[[], None],
    ) -> None:
        self.conninfo, self.channel = conninfo, channel
        self._is_open, self._waiting, self._wake = is_open, waiting, wake
        self._task: asyncio.Task[None] | None = None
        self._last_wait = 0.0

    def waited(self) -> None:
        """Note a wait for events, and start listening if not yet."""
        self._last_wait = asyncio.get_running_loop().time()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._listen(), name="eskit-postgres-listener")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _wanted(self) -> bool:
        """Whether something waits for events, or did within ``_LISTEN_IDLE`` seconds."""
        idle = asyncio.get_running_loop().time() - self._last_wait
        return self._is_open() and (self._waiting() or idle < _LISTEN_IDLE)

    async def _listen(self) -> None:
        """Wake subscriptions when any process commits, while something waits for events;
        reconnect if the connection dies."""
        pause = 0.1
        while self._wanted():
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True
                ) as conn:
                    await conn.execute(f'LISTEN "{self.channel}"')
                    pause = 0.1
                    while self._wanted():
                        async for _ in conn.notifies(timeout=_NOTIFY_CHECK):
                            self._wake()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # polling still finds new events meanwhile
                log.warning("LISTEN connection lost (%s); reconnecting in %.1f s", error, pause)
                await asyncio.sleep(pause)
                pause = min(5.0, pause * 2)
