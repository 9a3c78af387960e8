"""Aggregates' states kept by the command bus between commands, checked against the store by
the append made from them.

After a command appended to an aggregate, the bus keeps the state it decided on (with the
events applied) and the stream's version. The next command on that aggregate takes the
entry out and decides on it without reading the stream, and its append, besides expecting
that version, is made *untouched* (``AppendUntouched``): the store refuses it, in the
transaction that would write it, unless the stream never hid an event (no ``streams`` row:
no read rules, never deleted, never scavenged; ``planner.UNTOUCHED``). Usually it is taken:
the command read nothing, one write to the store in all. Refused (events another process
appended since: a conflict; or the stream hid events), or if the handler raises or decides
nothing on that state, the guess is dropped, not counted as an attempt, and the command
runs as before: the store is asked for the events after the kept version (``CatchUp``:
``Engine.events_after``, given only for a stream that never hid one), which are applied to
the kept state (an ``Aggregate`` a handler may have changed in place is loaded instead),
else the aggregate is loaded as always, and the append expects the version the state was
folded to, so a change that lands in between is a conflict, as for any load. A stream
found to have hid events is remembered (a marker in place of its state: a row is never
removed), so the next command on it loads at once. Correct across processes. (It rests on
stored events never changing; a restore over a store is made with every process using it
stopped, ``docs/lifecycle.md``.) A command sent with a command id takes the catch-up read,
as before the fold: its append may replay an original.

An entry is taken out while a command uses it, so two commands never share a state (one
that fails, or whose append fails, leaves nothing behind); it is put back only after the
append committed (not after a command sent with a command id, whose append may have been
a concurrent retry's, decided a little otherwise). States of events that may hold
encrypted fields are never kept: a forgotten data subject's fields must not outlive the
key in memory. At most ``size`` aggregates are kept, the least recently used dropped
first.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Final

STATE_CACHE: Final = 1000
"""Aggregates a command bus keeps by default (``CommandBus(..., state_cache=0)``: none)."""


class StateCache:
    """At most ``size`` aggregates' (version, state), by stream; safe from any thread."""

    def __init__(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"state_cache must be an int, got {size!r}")
        if size < 0:
            raise ValueError(f"state_cache must be 0 (none) or more, got {size}")
        self.size = size
        self._entries: collections.OrderedDict[str, tuple[int, Any]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, stream: str) -> tuple[int, Any] | None:
        """The entry of ``stream``, removed (the caller owns the state now), or None."""
        self._lock.acquire()  # as in put
        try:
            return self._entries.pop(stream, None)
        finally:
            self._lock.release()

    def put(self, stream: str, version: int, state: Any) -> None:
        """Keep ``state``, folded from the stream's events up to ``version``."""
        entries = self._entries
        self._lock.acquire()  # not `with`: its __enter__ and __exit__ are two more calls
        try:
            if stream in entries:  # usually not: a command took its entry out
                entries.move_to_end(stream)
            entries[stream] = (version, state)
            while len(entries) > self.size:
                entries.popitem(last=False)
        finally:
            self._lock.release()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
