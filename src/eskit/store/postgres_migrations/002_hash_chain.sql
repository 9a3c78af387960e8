-- eskit event store schema for PostgreSQL, version 2: the hash chain.
--
-- Each event stores the link of its stream's hash chain (eskit/store/chain.py): a hash
-- over the previous event's link and the event as stored, keyed with ESKIT_AUDIT_KEY when
-- the writers have it. `eskit verify` recomputes them. Events written before this version
-- have no link (NULL) and are reported as unlinked, not as tampered with.

ALTER TABLE eskit_events ADD COLUMN hash BYTEA;
