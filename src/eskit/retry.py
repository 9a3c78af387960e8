"""The one backoff policy of every retry loop: command retries, projection workers, broker
consumers."""

from __future__ import annotations

import random
from typing import Final

CAP: Final = 30.0
"""The longest pause between two attempts, in seconds, unless a caller caps lower."""


def backoff(base: float, attempt: int, cap: float = CAP) -> float:
    """``base``·2^``attempt`` seconds, at most ``cap``, with jitter (times 0.5 to 1.5) so
    that callers which failed together do not retry together."""
    return float(min(cap, base * 2.0 ** min(attempt, 32))) * (0.5 + random.random())
