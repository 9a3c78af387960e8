"""Persistent subscriptions: named consumer groups with ack, nack, park and replay.

``Groups(store)`` creates, updates, deletes and lists groups and replays their parked
events; ``Groups.consumer(group)`` reads one. The blocking face is ``eskit.sync.Groups``.
"""

from __future__ import annotations

from eskit.store.filters import EventFilter
from eskit.subscriptions.groups import Consumer, Delivery, Groups
from eskit.subscriptions.model import (
    END,
    START,
    Group,
    GroupExists,
    GroupNotFound,
    Parked,
    Replay,
    Settings,
    Source,
)

__all__ = [
    "END",
    "START",
    "Consumer",
    "Delivery",
    "EventFilter",
    "Group",
    "GroupExists",
    "GroupNotFound",
    "Groups",
    "Parked",
    "Replay",
    "Settings",
    "Source",
]
