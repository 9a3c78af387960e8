-- eskit event store schema for SQLite, version 3: links cover positions; the chain start.
--
-- From this version on, every event's hash link covers its global position too (the "v2"
-- links of eskit/store/chain.py), so swapping two events' positions breaks their links. The
-- writer numbers each group's events itself, from the head it reads under the write lock
-- (eskit/store/sqlite_chain.py), and inserts the positions explicitly.
--
-- chain_start records the first position whose event must carry a v2 link: 1 in a new
-- file, the next position in a file upgraded from an earlier version (its older events keep
-- their older links, or none). eskit writes the record right after this file, in the same
-- transaction, with its hash keyed with ESKIT_AUDIT_KEY; `eskit verify` checks it and
-- reports a record that is missing or does not match. Like the log, it refuses changes.

CREATE TABLE chain_start (
    id       INTEGER PRIMARY KEY CHECK (id = 1),  -- one row
    position INTEGER NOT NULL,  -- the first position whose event carries a v2 link
    hash     BLOB    NOT NULL   -- chain_start_hash(position, audit key): keyed BLAKE2b-256
);

CREATE TRIGGER chain_start_refuse_change BEFORE UPDATE ON chain_start
BEGIN
    SELECT RAISE(ABORT, 'eskit: the chain start is written once, an UPDATE is refused');
END;

CREATE TRIGGER chain_start_refuse_delete BEFORE DELETE ON chain_start
BEGIN
    SELECT RAISE(ABORT, 'eskit: the chain start is written once, a DELETE is refused');
END;
