"""The read side: projections, their runner, rebuilds and inline read models."""

from __future__ import annotations

from eskit.projections.database import (
    Database,
    PostgresDatabase,
    SQLiteDatabase,
    StoreDatabase,
    database_for,
)
from eskit.projections.inline import InlineProjection, add_inline
from eskit.projections.live import live_tables, read_live, write_live
from eskit.projections.partitioned import PartitionedWorker
from eskit.projections.process import ProcessManager
from eskit.projections.projection import (
    Inbox,
    MemoryInbox,
    Projection,
    ReadModelConnection,
    SQLProjection,
    handles,
)
from eskit.projections.runner import ProjectionRunner, ProjectionStatus
from eskit.projections.state import Skip

__all__ = [
    "Database",
    "Inbox",
    "InlineProjection",
    "MemoryInbox",
    "PartitionedWorker",
    "PostgresDatabase",
    "ProcessManager",
    "Projection",
    "ProjectionRunner",
    "ProjectionStatus",
    "ReadModelConnection",
    "SQLProjection",
    "SQLiteDatabase",
    "Skip",
    "StoreDatabase",
    "add_inline",
    "database_for",
    "handles",
    "live_tables",
    "read_live",
    "write_live",
]
