-- eskit event store schema for PostgreSQL, version 8: what scavenging keeps of removed events.
--
-- `eskit scavenge` (eskit/store/scavenge.py) physically removes events that reads no longer
-- show (deleted and tombstoned streams, events past max_count, max_age or truncate_before).
-- It removes them through version 4's audited path, with the owner's rights: each removal
-- is recorded in eskit_removals in the very transaction that deletes the event, and the
-- delete trigger admits only recorded rows; the application role may read the record (its
-- appends look removed ids up there) but neither write it nor delete events. This version
-- makes the record complete enough for history to keep working:
--
-- - eskit_removals.id: the event's id, so an idempotent retry of a removed event is still
--   answered with its original result, and its id is never taken by another event;
-- - eskit_removals.link: the event's hash link, so `eskit verify` carries the stream's
--   chain across the gap and saved anchors still check;
-- - eskit_streams.last_version and last_link: the stream's head when its last event was
--   removed (a deleted stream continues its version numbers).
--
-- eskit_append_group (version 5) is redefined to read that head and to refuse (NULL: the
-- writer takes the long way) a given id that was removed; nothing else in it changes.

ALTER TABLE eskit_removals ADD COLUMN id UUID;     -- the event's id (NULL: unknown)
ALTER TABLE eskit_removals ADD COLUMN link BYTEA;  -- its hash link (NULL: it had none)

CREATE INDEX eskit_removals_by_id ON eskit_removals (id) WHERE id IS NOT NULL;

ALTER TABLE eskit_streams ADD COLUMN last_version BIGINT;  -- the highest version removed
ALTER TABLE eskit_streams ADD COLUMN last_link    BYTEA;   -- and its link

DROP FUNCTION eskit_append_group(BIGINT, JSON, JSON, JSON, BIGINT, TEXT[], TEXT);

CREATE FUNCTION eskit_append_group(
    p_head        BIGINT,  -- the head the writer expects: its rows are at p_head + 1, ...
    p_expected    JSON,    -- [{stream, last, state, link}]: every stream the group touches and
                           -- what the writer expects of it: its last version (NULL: none),
                           -- state (0 live, 1 soft-deleted, 2 tombstoned), the hash link of
                           -- its last event (base64);
    p_given       JSON,    -- [id]: the ids callers gave, which must not be in the store yet;
    p_rows        JSON,    -- [{position, id, stream, category, version, type, data, metadata,
                           --   hash}]: the rows, at p_head + 1, p_head + 2, ...; hash in base64
    p_recorded_at BIGINT,
    p_revived     TEXT[],  -- soft-deleted streams the group appends to (live again)
    p_channel     TEXT     -- NOTIFY channel woken when rows were written
) RETURNS BIGINT           -- p_head, or NULL if nothing was written
LANGUAGE plpgsql AS $$
DECLARE
    start BIGINT;
    added BIGINT;
BEGIN
    SELECT position INTO start FROM eskit_head FOR UPDATE;
    IF start <> p_head THEN
        RETURN NULL;
    END IF;
    IF EXISTS (
        SELECT 1
        FROM json_to_recordset(p_expected) AS x(stream TEXT, last BIGINT, state INTEGER,
                                                link TEXT)
        LEFT JOIN LATERAL (
            SELECT e.version, e.hash FROM eskit_events e
            WHERE e.stream = x.stream ORDER BY e.version DESC LIMIT 1
        ) AS e ON TRUE
        LEFT JOIN eskit_streams s ON s.stream = x.stream
        -- a stream whose events were all scavenged has its head in eskit_streams
        WHERE coalesce(e.version, s.last_version) IS DISTINCT FROM x.last
           OR coalesce(s.state, 0) <> x.state
           OR (CASE WHEN e.version IS NULL THEN s.last_link ELSE e.hash END)
              IS DISTINCT FROM decode(x.link, 'base64')
    ) THEN
        RETURN NULL;
    END IF;
    IF json_array_length(p_given) > 0 AND EXISTS (
        SELECT 1 FROM json_array_elements_text(p_given) AS g(id)
        JOIN eskit_events e ON e.id = g.id::uuid
    ) OR json_array_length(p_given) > 0 AND EXISTS (
        SELECT 1 FROM json_array_elements_text(p_given) AS g(id)
        JOIN eskit_removals r ON r.id = g.id::uuid
    ) THEN
        RETURN NULL;
    END IF;
    INSERT INTO eskit_events (position, id, stream, category, version, type, data, metadata,
                              recorded_at, hash)
    SELECT r.position, r.id, r.stream, r.category, r.version, r.type, r.data, r.metadata,
           p_recorded_at, decode(r.hash, 'base64')
    FROM json_to_recordset(p_rows) AS r(position BIGINT, id UUID, stream TEXT, category TEXT,
                                        version BIGINT, type TEXT, data TEXT, metadata TEXT,
                                        hash TEXT);
    GET DIAGNOSTICS added = ROW_COUNT;
    IF added > 0 THEN
        UPDATE eskit_head SET position = start + added;
        PERFORM pg_notify(p_channel, '');
    END IF;
    IF cardinality(p_revived) > 0 THEN
        UPDATE eskit_streams SET state = 0 WHERE stream = ANY(p_revived);
    END IF;
    RETURN start;
END
$$;
