-- eskit event store schema for PostgreSQL, version 10: what a removed event's command id was
-- used for.
--
-- The command bus records, in the metadata of the events a command sent with a command id
-- appends, the command's type, a digest of its arguments and (when it wrote only to other
-- streams) its aggregate's stream (eskit/application/idempotency.py). A reused command id is
-- judged by them: the same command replays, any other raises IdempotencyConflict. A scavenge
-- (or an archive) removes the event and its metadata; this column keeps those three keys,
-- recorded in the same transaction as the removal, so a reused id is judged alike before and
-- after. Nothing else of the metadata is kept (a sealed digest stays sealed).

ALTER TABLE eskit_removals ADD COLUMN used_for TEXT;  -- JSON object of those keys (NULL: none)
