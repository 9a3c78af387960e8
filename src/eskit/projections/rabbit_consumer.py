"""Deprecated: ``RabbitConsumer`` moved to ``eskit.projections.consumers.rabbitmq``. Kept
for one release: the old path warns (``DeprecationWarning``)."""

from __future__ import annotations

from typing import Any

from eskit.projections.consumers import moved

_RENAMED = {"RabbitConsumer": ("eskit.projections.consumers.rabbitmq", "RabbitConsumer")}


def __getattr__(name: str) -> Any:
    return moved(__name__, name, _RENAMED)
