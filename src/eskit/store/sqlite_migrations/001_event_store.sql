-- eskit event store schema for SQLite, version 1 (PRAGMA user_version; store/sqlite_schema.py).
--
-- The schema as it stood when SQLite files got a version. Files written before that have
-- user_version 0 and most of these tables already, so every statement is idempotent; a
-- file from before the hash chain gets its `hash` column from sqlite_schema.py right after
-- this script (SQLite cannot add a column only if it is missing). A new file gets it all.

-- The log. One row per event; never updated, only deleted by an explicit purge.
CREATE TABLE IF NOT EXISTS events (
    -- Global position, 1, 2, 3, ... AUTOINCREMENT (not a bare INTEGER PRIMARY KEY) so that a
    -- position is never issued twice, even after the newest rows are purged: a subscriber's
    -- checkpoint must never point past an event it has not seen.
    position    INTEGER PRIMARY KEY AUTOINCREMENT,
    id          BLOB    NOT NULL UNIQUE,   -- event id, 16 bytes of a UUID; unique in the store
    stream      TEXT    NOT NULL,          -- stream name, 1-200 characters
    category    TEXT    NOT NULL,          -- part of the stream name before the first '-'
    version     INTEGER NOT NULL,          -- zero-based, contiguous within the stream
    type        TEXT    NOT NULL,          -- event type name
    data        TEXT    NOT NULL,          -- JSON object
    metadata    TEXT    NOT NULL,          -- JSON object ('{}' when none)
    recorded_at INTEGER NOT NULL,          -- microseconds since 1970-01-01 UTC
    hash        BLOB,                      -- link of the stream's hash chain (store/chain.py);
                                           -- NULL for events written before the chain
    -- The constraint that makes optimistic concurrency safe whatever the code above does.
    UNIQUE (stream, version)
);

-- read_all(category=...) and category subscriptions.
CREATE INDEX IF NOT EXISTS events_by_category ON events (category, position);

-- Per-stream state, only for streams that were deleted or given read rules (most have no row).
CREATE TABLE IF NOT EXISTS streams (
    stream          TEXT    PRIMARY KEY,
    state           INTEGER NOT NULL DEFAULT 0,  -- 0 live, 1 soft-deleted, 2 tombstoned
    truncate_before INTEGER,                     -- versions below are hidden
    max_count       INTEGER,                     -- only the newest n events are visible
    max_age         REAL                         -- seconds; older events are hidden
) WITHOUT ROWID;

-- Snapshots of aggregate state, beside the streams they fold (save_snapshot/load_snapshot).
-- Only the newest 5 per (stream, snapshot_version) are kept (rules.SNAPSHOTS_KEPT): saving
-- deletes older ones. A tombstone deletes a stream's snapshots. A rowid table, not WITHOUT
-- ROWID: a state may be up to 1 MiB, far beyond the small rows WITHOUT ROWID suits.
CREATE TABLE IF NOT EXISTS snapshots (
    stream           TEXT    NOT NULL,  -- stream name, 1-200 characters
    snapshot_version INTEGER NOT NULL,  -- schema number of the state, chosen by the aggregate
    version          INTEGER NOT NULL,  -- last stream version folded into the state
    state            TEXT    NOT NULL,  -- JSON object
    recorded_at      INTEGER NOT NULL,  -- microseconds since 1970-01-01 UTC
    PRIMARY KEY (stream, snapshot_version, version)
);
