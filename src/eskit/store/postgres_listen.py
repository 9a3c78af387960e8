"""``LISTEN``/``NOTIFY`` for the PostgreSQL backend: wakes subscriptions when any process
commits.

It only wakes them early: if the listening connection dies, subscriptions still find new
events by polling every ``poll_interval``. The engine listens, on a thread of its own with
a connection of its own, only while something waits for events (and ``_LISTEN_IDLE``
after): a process that only writes does not wake up for each of its own commits.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final

import psycopg

from eskit.retry import backoff

log = logging.getLogger("eskit.store.postgres")
_LISTEN_IDLE: Final = 10.0
"""Seconds the LISTEN connection stays open after the last wait for events."""
_LONGEST_PAUSE: Final = 2.0
"""The longest pause between two attempts to LISTEN again, in seconds."""
_NOTIFY_CHECK: Final = 1.0
"""Seconds between the listener's checks that someone still waits."""


class Listener:
    """Listens on ``channel`` while something waited lately (``waited``), calling ``wake``
    (in its thread) for each notification."""

    def __init__(self, conninfo: str, channel: str, wake: Callable[[], None]) -> None:
        self.conninfo, self.channel, self._wake = conninfo, channel, wake
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._last_wait = 0.0
        self._waiting = 0
        self._closed = False
        self.standby = False
        """The server is a standby (a replica): it cannot LISTEN, nobody tries again."""
        self._stop_r, self._stop_w = socket.socketpair()  # wakes the thread to close

    def waited(self) -> None:
        """Note a wait for events, and start listening if not yet."""
        self._last_wait = time.monotonic()
        with self._lock:
            if self.standby or self._closed or (self._thread and self._thread.is_alive()):
                return
            self._thread = threading.Thread(
                target=self._listen, name="eskit-postgres-listener", daemon=True
            )
            self._thread.start()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Something waits for events until the block ends: listen all that time, however
        long the wait (a subscription's poll interval may be longer than ``_LISTEN_IDLE``)."""
        self.waited()
        with self._lock:
            self._waiting += 1
        try:
            yield
        finally:
            with self._lock:
                self._waiting -= 1
            self._last_wait = time.monotonic()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
        self._stop_w.send(b"x")
        if thread is not None:
            thread.join()
        self._stop_r.close()
        self._stop_w.close()

    def _wanted(self) -> bool:
        """Whether something waits for events now, or waited within ``_LISTEN_IDLE``
        seconds."""
        if self._closed:
            return False
        return self._waiting > 0 or time.monotonic() - self._last_wait < _LISTEN_IDLE

    def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless closed meanwhile; True if closed."""
        ready, _, _ = select.select([self._stop_r], [], [], seconds)
        return bool(ready) or self._closed

    def _listen(self) -> None:
        """Wake subscriptions when any process commits, while something waits for events;
        reconnect if the connection dies (a failover: the new primary). Each time LISTEN
        starts, wake them once, for what was committed while nobody listened: a wait that
        looked at the head before LISTEN began would otherwise sleep through such a commit
        until its poll. A standby (a replica) cannot LISTEN: there subscriptions wake by
        polling only."""
        attempt = 0
        while self._wanted():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    if conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,):
                        self.standby = True
                        return
                    conn.execute(f'LISTEN "{self.channel}"')
                    self._wake()
                    attempt = 0
                    while self._wanted():
                        stop = self._stop_r.fileno()
                        ready, _, _ = select.select([conn.fileno(), stop], [], [], _NOTIFY_CHECK)
                        if stop in ready:
                            return
                        if ready and sum(1 for _ in conn.notifies(timeout=0)):
                            self._wake()
            except Exception as error:  # polling still finds new events meanwhile
                if self._closed:
                    return
                pause = backoff(0.1, attempt, _LONGEST_PAUSE)
                log.warning("LISTEN connection lost (%s); reconnecting in %.1f s", error, pause)
                if self._pause(pause):
                    return
                attempt += 1
