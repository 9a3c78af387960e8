"""Event ids: UUIDv7, time-ordered, so the id index grows at its end like the log does."""

from __future__ import annotations

import os
import threading
import time
from itertools import repeat
from typing import Final

_VERSION: Final = 0x7 << 76
_VARIANT: Final = 0b10 << 62
_START_BITS: Final = 60
"""A millisecond's first id has 60 random bits in ``rand_b`` (62 bits): the ids after it
count up from there and cannot carry into the variant within one millisecond."""


class _Sequence(threading.local):
    """Each thread's millisecond and the next id in it (as an int), in one attribute that
    is changed in place: a thread-local attribute costs a lookup of the thread's dict each
    time it is read, and more each time it is set."""

    def __init__(self) -> None:
        self.state = [-1, 0]


_sequence = _Sequence()


def new_event_ids(count: int) -> list[bytes]:
    """``count`` fresh UUIDv7s as 16 bytes each (RFC 9562, monotonic random): a 48-bit
    millisecond time and 72 random bits drawn once per millisecond and thread, then counted
    up id by id, so ids are unique, in order within a thread, and cost an addition each
    (``int.to_bytes`` is big-endian by default)."""
    state = _sequence.state
    millisecond = time.time_ns() // 1_000_000
    last_millisecond, first = state
    if millisecond != last_millisecond:
        randomness = int.from_bytes(os.urandom(9), "big")  # 72 bits: rand_a and the start
        rand_a, start = randomness >> _START_BITS, randomness & ((1 << _START_BITS) - 1)
        first = (millisecond << 80) | _VERSION | (rand_a << 64) | _VARIANT | start
    state[0], state[1] = millisecond, first + count
    if count == 1:  # the common case: one event an append, no list to build
        return [first.to_bytes(16)]
    return list(map(int.to_bytes, range(first, first + count), repeat(16, count)))
