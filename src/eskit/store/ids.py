"""Event ids: UUIDv7, time-ordered, so the id index grows at its end like the log does."""

from __future__ import annotations

import os
import threading
import time
from itertools import repeat
from typing import Final

_FIXED: Final = 0x7 << 76 | 0b10 << 62
"""The version (7) and variant (0b10) bits."""
_RANDOM: Final = ((1 << 12) - 1) << 64 | ((1 << 60) - 1)
"""Where a millisecond's first id takes random bits: all 12 of ``rand_a``, and 60 of the 62
of ``rand_b``, so the ids after it count up from there and cannot carry into the variant
within one millisecond."""
_from_bytes: Final = int.from_bytes  # bound once: ~600 instructions less than int.from_bytes
_urandom: Final = os.urandom
_time_ns: Final = time.time_ns


class _Sequence(threading.local):
    """Each thread's millisecond and the next id in it (as an int), in one attribute that
    is changed in place: a thread-local attribute costs a lookup of the thread's dict each
    time it is read, and more each time it is set."""

    def __init__(self) -> None:
        self.state = [-1, 0]


_sequence = _Sequence()


def new_event_ids(count: int) -> list[bytes]:
    """``count`` fresh UUIDv7s as 16 bytes each (RFC 9562, monotonic random): a 48-bit
    millisecond time and 72 random bits drawn once per millisecond and thread (80 drawn,
    masked to their places), then counted up id by id, so ids are unique, in order within
    a thread, and cost an addition each (``int.from_bytes`` and ``int.to_bytes`` are
    big-endian by default)."""
    state = _sequence.state
    millisecond = _time_ns() // 1_000_000
    if millisecond != state[0]:
        state[0] = millisecond
        first = (millisecond << 80) | _FIXED | (_from_bytes(_urandom(10)) & _RANDOM)
    else:
        first = state[1]
    state[1] = first + count
    if count == 1:  # the common case: one event an append, no list to build
        return [first.to_bytes(16)]
    return list(map(int.to_bytes, range(first, first + count), repeat(16, count)))
