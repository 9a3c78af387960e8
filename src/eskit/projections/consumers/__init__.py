"""Projections fed from a broker, one module per broker, named as its publisher is:

- ``nats.NatsConsumer`` reads what ``eskit.brokers.nats.NatsPublisher`` publishes;
- ``redis.RedisConsumer`` reads what ``eskit.brokers.redis.RedisPublisher`` publishes;
- ``rabbitmq.RabbitConsumer`` reads what ``eskit.brokers.rabbitmq.RabbitPublisher``
  publishes.

``base`` holds what they share. The names are importable from here too; each broker's
client library is loaded only when its consumer is first asked for.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eskit.projections.consumers.nats import NatsConsumer
    from eskit.projections.consumers.rabbitmq import RabbitConsumer
    from eskit.projections.consumers.redis import RedisConsumer

_HOMES = {"NatsConsumer": "nats", "RedisConsumer": "redis", "RabbitConsumer": "rabbitmq"}
__all__ = ["NatsConsumer", "RabbitConsumer", "RedisConsumer"]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def moved(old_module: str, name: str, renamed: dict[str, tuple[str, str]]) -> Any:
    """``name`` of a module that moved here, with a ``DeprecationWarning`` naming its new
    home (the old names stay for one release)."""
    if name not in renamed:
        raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
    module, new = renamed[name]
    warnings.warn(
        f"{old_module}.{name} is deprecated: use {module}.{new}",
        DeprecationWarning,
        stacklevel=3,
    )
    return getattr(importlib.import_module(module), new)
