-- eskit event store schema for PostgreSQL, version 1.
--
-- Positions: "no skipped events" (DESIGN.md) needs positions that become visible in the
-- order they were given. A sequence does not do that: a transaction that took position 1
-- may commit after one that took 2, and a reader that passed 2 never sees 1. eskit gives
-- positions under a row lock instead: every appending transaction first locks the single
-- row of eskit_head (SELECT ... FOR UPDATE), numbers its events from there, moves the head
-- and commits; the next one waits for the lock, which PostgreSQL releases only after the
-- commit is visible. Commit order is therefore position order, and readers only read up
-- to the committed head. The price is that appending transactions across all processes
-- run one after another; group commit makes that cheap (one transaction, one lock and one
-- WAL flush for every append waiting in a process). The alternative, commit-time ordering
-- by transaction-id horizon (pg_snapshot_xmin) with one sequencer, lets writers overlap
-- but makes every reader wait for the oldest running writer and needs a background
-- process to assign positions: more moving parts for a gain only under many processes
-- writing at once. Measure before changing it (benchmarks/).

CREATE TABLE eskit_head (
    id       BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    position BIGINT  NOT NULL
);
INSERT INTO eskit_head (position) VALUES (0);

CREATE TABLE eskit_events (
    position    BIGINT PRIMARY KEY,          -- global, 1, 2, 3, ... given under eskit_head's lock
    id          UUID   NOT NULL UNIQUE,      -- event id; unique in the store
    stream      TEXT   NOT NULL,             -- 1-200 characters
    category    TEXT   NOT NULL,             -- part of the stream name before the first '-'
    version     BIGINT NOT NULL,             -- zero-based, contiguous within the stream
    type        TEXT   NOT NULL,
    data        TEXT   NOT NULL,             -- JSON object, as eskit encoded it
    metadata    TEXT   NOT NULL,             -- JSON object ('{}' when none)
    recorded_at BIGINT NOT NULL,             -- microseconds since 1970-01-01 UTC
    UNIQUE (stream, version)                 -- optimistic concurrency's last line of defence
);
CREATE INDEX eskit_events_by_category ON eskit_events (category, position);
CREATE INDEX eskit_events_by_type ON eskit_events (type, position);

-- Per-stream state, only for streams that were deleted or given read rules.
CREATE TABLE eskit_streams (
    stream          TEXT PRIMARY KEY,
    state           INTEGER NOT NULL DEFAULT 0,  -- 0 live, 1 soft-deleted, 2 tombstoned
    truncate_before BIGINT,
    max_count       BIGINT,
    max_age         DOUBLE PRECISION
);

-- Snapshots; the newest few per (stream, snapshot_version) are kept.
CREATE TABLE eskit_snapshots (
    stream           TEXT    NOT NULL,
    snapshot_version INTEGER NOT NULL,
    version          BIGINT  NOT NULL,
    state            TEXT    NOT NULL,
    recorded_at      BIGINT  NOT NULL,
    PRIMARY KEY (stream, snapshot_version, version)
);
