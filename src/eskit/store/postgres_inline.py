"""Inline projections on the PostgreSQL writer: read models updated in the group commit that
appends their events, by plain functions on the writer's own (blocking) connection.

Each append's events are applied as soon as the append passes its checks, so a handler sees
what the appends before it in the group did. A group first runs without savepoints, and its
handlers' ``db.write`` statements wait, as in a runner's batch, to go out together with the
checkpoint's move at the end of the group (or before an operation): a savepoint would cost
two round trips per append and a subtransaction (past 64 in one transaction PostgreSQL
slows every session's snapshots), and sending each append's writes alone a round trip per
append. If a projection refuses an append, that attempt is rolled back (``Refused``) and
the group runs again with a savepoint per append, each append's writes sent inside it: the
refused append fails alone, and the others commit together.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import psycopg

from eskit.store.model import RecordedEvent

log = logging.getLogger("eskit.store.postgres")
Blocking = psycopg.Connection[Any]


class InlineHook(Protocol):
    """An inline projection as the writer runs it: every call on a blocking connection, in
    the transaction of a group commit that holds the head lock."""

    def begin(self, conn: Blocking, head: int, verify: bool) -> None:
        """Before the group applies its first events; ``head`` is the last position written
        before the group (events appended without this hook, up to there, are applied).
        ``verify``: trust nothing remembered from earlier groups (a group run again)."""

    def apply(self, conn: Blocking, events: list[RecordedEvent]) -> None:
        """Apply one append's events; raise to refuse that append. Writes may wait for
        ``flush`` or ``end``."""

    def flush(self, conn: Blocking) -> None:
        """Send the writes waiting since the last ``apply`` (raise to refuse its append)."""

    def end(self, conn: Blocking, position: int) -> None:
        """After the group's appends, before COMMIT (``position`` is the new head): send
        the writes waiting and move the checkpoint; raise if the group must run again."""


class Refused(Exception):
    """An inline projection refused an append of a group run without savepoints."""


class InlineGroup:
    """The inline projections' part of one group commit."""

    def __init__(self, hooks: Sequence[InlineHook], head: int, savepoints: bool) -> None:
        self.hooks = list(hooks)  # the hooks installed when the group began
        self.head = head
        self.savepoints = savepoints
        self.begun = False

    def apply(self, conn: Blocking, events: list[RecordedEvent]) -> None:
        """Apply an append's events; raise what refused it (with savepoints: after rolling
        back what it did), or ``Refused`` (without: the group must be run again)."""
        if not self.begun:
            for hook in self.hooks:
                hook.begin(conn, self.head, verify=self.savepoints)
            self.begun = True
        with self._refusals(conn):
            if not self.savepoints:
                for hook in self.hooks:
                    hook.apply(conn, events)
                return
            with conn.transaction():  # the append's savepoint
                for hook in self.hooks:
                    hook.apply(conn, events)
                    hook.flush(conn)

    def flush(self, conn: Blocking, end: int | None = None) -> None:
        """Send the writes waiting: before an operation, and at the end of the group, where
        each projection also moves its checkpoint to ``end``, the new head."""
        if not self.begun:
            return
        with self._refusals(conn):
            for hook in self.hooks:
                if end is not None and end != self.head:
                    hook.end(conn, end)
                elif not self.savepoints:
                    hook.flush(conn)

    @contextlib.contextmanager
    def _refusals(self, conn: Blocking) -> Iterator[None]:
        """A projection's error as the writer needs it: with savepoints, the error refusing
        the append; without, ``Refused``; a lost connection is the store's error."""
        try:
            yield
        except Exception as error:
            if conn.closed:  # not the projection's doing: the writer's connection is gone
                raise psycopg.OperationalError(f"the connection was lost ({error})") from error
            if self.savepoints:  # final: this append fails alone
                log.warning("%s", error)  # "the append to ... was refused by projection ...: ..."
                raise
            raise Refused() from error
