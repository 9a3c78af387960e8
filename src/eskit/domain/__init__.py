"""The domain layer: typed events, upcasting, and the two aggregate styles on one engine."""

from eskit.domain.aggregate import Aggregate, applies
from eskit.domain.events import EventRegistry, EventType
from eskit.domain.model import Decider, Model, struct_snapshots

__all__ = [
    "Aggregate",
    "Decider",
    "EventRegistry",
    "EventType",
    "Model",
    "applies",
    "struct_snapshots",
]
