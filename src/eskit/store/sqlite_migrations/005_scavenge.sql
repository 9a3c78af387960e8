-- eskit event store schema for SQLite, version 5: what scavenging keeps of removed events.
--
-- `eskit scavenge` (eskit/store/scavenge.py) physically removes events that reads no longer
-- show (deleted and tombstoned streams, events past max_count, max_age or truncate_before).
-- It removes them through version 2's audited path: each removal is recorded in `removals`
-- in the very transaction that deletes the event, and the delete trigger admits only
-- recorded rows. This version makes the record complete enough for history to keep working:
--
-- - removals.id: the event's id, so an idempotent retry of a removed event is still
--   answered with its original result, and its id is never taken by another event;
-- - removals.link: the event's hash link, so `eskit verify` carries the stream's chain
--   across the gap and saved anchors still check;
-- - streams.last_version and streams.last_link: the stream's head when its last event was
--   removed (a deleted stream continues its version numbers; appends read the head here
--   when the stream has no event left).

ALTER TABLE removals ADD COLUMN id BLOB;    -- 16 bytes of the event's UUID (NULL: unknown)
ALTER TABLE removals ADD COLUMN link BLOB;  -- the event's hash link (NULL: it had none)

CREATE INDEX removals_by_id ON removals (id) WHERE id IS NOT NULL;

ALTER TABLE streams ADD COLUMN last_version INTEGER;  -- the highest version removed
ALTER TABLE streams ADD COLUMN last_link    BLOB;     -- and its link
