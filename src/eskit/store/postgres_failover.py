"""Riding through a PostgreSQL failover: the deadline, the connection settings that bound
every wait, and the one retry loop the writer and the readers use.

- A call that finds the database gone (the primary died, the standby is being promoted)
  reconnects with backoff (``eskit.retry``) until ``deadline`` seconds passed since it first
  failed, then raises ``StoreUnavailable``. With a multi-host URL and
  ``target_session_attrs=read-write`` libpq finds the new primary by itself.
- No call hangs: libpq's ``connect_timeout`` bounds each connection attempt, TCP keepalives
  and ``tcp_user_timeout`` a peer that vanished without closing, and the writer's
  ``Watchdog`` a statement the server does not answer (a lock never granted, a COMMIT
  waiting for a synchronous standby that is gone).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

import psycopg
import psycopg_pool
from psycopg import conninfo as libpq
from psycopg_pool.base import AttemptWithBackoff

from eskit.retry import backoff

log = logging.getLogger("eskit.store.postgres")
T = TypeVar("T")
DEADLINE: Final = 30.0
"""Seconds a call keeps trying to reach the (new) primary before it gives up."""
_PAUSE: Final = 0.05
"""The first pause between two attempts, in seconds (then doubled, with jitter)."""
_LONGEST_PAUSE: Final = 1.0
"""The longest: a promoted standby is found within a second of accepting writes."""


def bounded(conninfo: str, deadline: float) -> str:
    """``conninfo`` with the settings that bound every wait on a connection, unless the
    caller set them: no single attempt, statement or dead peer outlasts ``deadline``."""
    given = libpq.conninfo_to_dict(conninfo)
    seconds = max(1, int(deadline))
    defaults: dict[str, int] = {
        "connect_timeout": min(5, seconds),  # per host of a multi-host URL
        "keepalives": 1,
        "keepalives_idle": min(10, seconds),
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": seconds * 1000,
    }
    extra = {name: value for name, value in defaults.items() if name not in given}
    return libpq.make_conninfo(conninfo, **extra)


def transient(error: BaseException) -> bool:
    """An error that another attempt, on a new connection, may not meet: the connection
    failed or was cut, or it reached a server that is (still, or again) read-only."""
    return isinstance(error, psycopg.OperationalError | psycopg.errors.ReadOnlySqlTransaction)


def retrying(
    run: Callable[[float], T],
    deadline: float,
    closed: Callable[[], bool],
    between: Callable[[], None] | None = None,
    also: tuple[type[BaseException], ...] = (),
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``run(seconds)``, tried again while it fails with a ``transient`` error (or one of
    ``also``: a wait that timed out, dated from the attempt's start), until ``deadline``
    seconds passed since the first failure or ``closed()``; then the last error is raised.
    ``seconds`` is how long the attempt may wait (for a connection): ``deadline`` on the
    first, the time left on the next ones, so that the last one ends at the deadline too.
    The first new attempt is made at once (the server dropped an idle connection), the next
    ones after a backoff, the last one at the deadline itself (never a give-up before it).
    ``between`` runs before each new attempt (drop broken connections)."""
    attempt = 0
    give_up: float | None = None
    while True:
        began = time.monotonic()
        try:
            return run(deadline if give_up is None else max(0.0, give_up - began))
        except Exception as error:
            waited = isinstance(error, also)
            if not (transient(error) or waited) or closed():
                raise
            now = time.monotonic()
            if give_up is None:
                give_up = (began if waited else now) + deadline
            if now >= give_up:
                raise
            pause = backoff(_PAUSE, attempt - 1, _LONGEST_PAUSE) if attempt else 0.0
            sleep(min(pause, give_up - now))  # the last attempt is made at the deadline
            attempt += 1
            if between is not None:
                between()


def connect_timeout(seconds: float, given: str | int | None = None) -> int:
    """libpq's ``connect_timeout`` (per host) for an attempt that may take ``seconds``: the
    whole seconds, at least 2 (libpq's least), at most the URL's (``given``)."""
    wanted = max(2, math.ceil(seconds))
    return wanted if given is None else min(max(2, int(float(given))), wanted)


class _Reconnecting(AttemptWithBackoff):
    """The pool's attempts to replace a lost connection: from ``_PAUSE`` doubling to
    ``_LONGEST_PAUSE`` (psycopg_pool's own start at 1 s and double up to its
    ``reconnect_timeout``: after a 30 s outage the next attempt could come 16 s after the
    new primary is up, and reads would wait for it)."""

    INITIAL_DELAY = _PAUSE

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, _LONGEST_PAUSE)


class Pool(psycopg_pool.ConnectionPool[Any]):
    """A connection pool that finds the new primary within ``_LONGEST_PAUSE`` of its
    promotion, however long the failover took."""

    def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        if attempt is None:
            attempt = _Reconnecting(timeout=self.reconnect_timeout)
        super()._add_connection(attempt, growing)


class Watchdog:
    """Cancels a statement the server has not answered within ``deadline`` seconds, from a
    thread of its own that looks every ``deadline / 4`` seconds (at most one second): the
    writer notes when it sends (``sent``) and when it is answered (``answered``), no more
    on the hot path. Needed where no server setting helps: a COMMIT waiting for a
    synchronous standby that is gone (``statement_timeout`` ends before COMMIT waits).
    A transaction of a ``patient`` request (catching a projection up) is not watched.
    PostgreSQL then ends the wait with a warning: the transaction is committed on the
    primary, not confirmed by a standby."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._since: float | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sent(self, conn: psycopg.Connection[Any]) -> None:
        self._conn, self._since = conn, time.monotonic()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._watch, name="eskit-postgres-watchdog", daemon=True
            )
            self._thread.start()

    def answered(self) -> None:
        self._since = None

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _watch(self) -> None:
        tick = min(1.0, self.deadline / 4)
        while not self._stop.wait(tick):
            since, conn = self._since, self._conn
            if since is None or conn is None or time.monotonic() - since < self.deadline:
                continue
            self._since = None  # once per statement
            log.warning(
                "PostgreSQL did not answer the writer within %g s: cancelling the statement"
                " (a COMMIT waiting for a synchronous standby that is gone?)",
                self.deadline,
            )
            try:
                conn.cancel_safe(timeout=self.deadline)
            except Exception as error:  # the connection broke meanwhile: nothing waits
                log.warning("cancelling failed: %s", error)
