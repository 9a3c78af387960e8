"""Deprecated: the broker consumers moved to ``eskit.projections.consumers`` (one module
per broker); ``JetStreamConsumer`` is now ``consumers.nats.NatsConsumer``. Kept for one
release: every name here warns (``DeprecationWarning``) and gives the new one."""

from __future__ import annotations

from typing import Any

from eskit.projections.consumers import moved

_BASE = "eskit.projections.consumers.base"
_RENAMED = {
    "JetStreamConsumer": ("eskit.projections.consumers.nats", "NatsConsumer"),
    "PartitionStatus": (_BASE, "PartitionStatus"),
    "BrokerWorker": (_BASE, "BrokerWorker"),
    "apply_once": (_BASE, "apply_once"),
    "drop_consumer": (_BASE, "drop_consumer"),
    "setup": (_BASE, "setup"),
}


def __getattr__(name: str) -> Any:
    return moved(__name__, name, _RENAMED)
