-- eskit event store schema for SQLite, version 2: the log refuses changes.
--
-- Why: eskit never updates an event row and never deletes one; every reader (projections,
-- subscriptions, `eskit verify`) relies on that. So the file refuses it too, whoever asks:
-- a script, a migration gone wrong, an admin tool, SQL injected elsewhere in the app. An
-- UPDATE of `events` is always refused. A DELETE is refused unless the event's removal was
-- first recorded in `removals`: the one way a later, audited removal path (scavenging of
-- deleted or expired streams, erasure) may delete, leaving a record of what went and why.
-- The record is append-only too, so a removal cannot be hidden afterwards.
--
-- Against whom: mistakes and code that reaches the database through SQL. Someone who can
-- write the file can drop these triggers (tests/store/tamper.py does, to play the
-- intruder); `eskit verify` with the audit key and saved anchors is what finds that.
--
-- Not covered: `INSERT OR REPLACE` deletes the event it replaces without firing DELETE
-- triggers (SQLite fires them for REPLACE only with recursive_triggers on). A BEFORE INSERT
-- trigger probing position, id, and stream and version would catch it, but it doubles the
-- index lookups of every append (measured: batched appends about a quarter slower), so it is
-- left to `eskit verify`, which finds the replaced event by its link.

-- Events removed through the audited path, recorded before they are deleted.
CREATE TABLE removals (
    position   INTEGER PRIMARY KEY,               -- the event's position
    stream     TEXT    NOT NULL,                  -- and its stream and version, which the
    version    INTEGER NOT NULL,                  -- DELETE must match
    reason     TEXT    NOT NULL CHECK (reason <> ''),  -- why it is removed
    removed_at INTEGER NOT NULL,                  -- microseconds since 1970-01-01 UTC
    removed_by TEXT    NOT NULL CHECK (removed_by <> '')  -- who or what removed it
);

CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'eskit: events are append-only, an UPDATE of events is refused');
END;

CREATE TRIGGER events_refuse_delete BEFORE DELETE ON events
WHEN NOT EXISTS (
    SELECT 1 FROM removals
    WHERE position = OLD.position AND stream = OLD.stream AND version = OLD.version
)
BEGIN
    -- (RAISE takes one literal: the long lines are the message)
    SELECT RAISE(ABORT, 'eskit: events are append-only, a DELETE of events is refused unless the removal of that event is first recorded in removals');
END;

CREATE TRIGGER removals_refuse_update BEFORE UPDATE ON removals
BEGIN
    SELECT RAISE(ABORT, 'eskit: removals are append-only, an UPDATE of removals is refused');
END;

CREATE TRIGGER removals_refuse_delete BEFORE DELETE ON removals
BEGIN
    SELECT RAISE(ABORT, 'eskit: removals are append-only, a DELETE of removals is refused');
END;
