"""Copy-transform migrations: copy a store into a new one while a function rewrites, splits,
renames or drops its events (``eskit migrate-events``), for the blue/green procedure of
``docs/schema-evolution.md``."""

from eskit.migration.copy_transform import (
    RECORD_TYPE,
    EventMigration,
    Migrated,
    Rewritten,
    migrate_events,
)
from eskit.migration.transforms import chain, rename_category, rename_type, upcast

__all__ = [
    "RECORD_TYPE",
    "EventMigration",
    "Migrated",
    "Rewritten",
    "chain",
    "migrate_events",
    "rename_category",
    "rename_type",
    "upcast",
]
