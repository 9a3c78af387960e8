"""The one backoff policy (``eskit.retry``) every retry loop uses."""

from __future__ import annotations

from eskit.retry import CAP, backoff


def test_the_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    for attempt in range(6):
        pause = backoff(0.1, attempt)
        assert 0.05 * 2**attempt <= pause <= 0.15 * 2**attempt
    assert backoff(0.1, 1_000) <= CAP * 1.5
    assert backoff(0.1, 1_000, cap=5.0) <= 7.5
