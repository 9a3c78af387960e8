"""Deprecated: ``RedisStreamConsumer`` is now ``eskit.projections.consumers.redis.
RedisConsumer``. Kept for one release: the old name warns (``DeprecationWarning``)."""

from __future__ import annotations

from typing import Any

from eskit.projections.consumers import moved

_RENAMED = {"RedisStreamConsumer": ("eskit.projections.consumers.redis", "RedisConsumer")}


def __getattr__(name: str) -> Any:
    return moved(__name__, name, _RENAMED)
