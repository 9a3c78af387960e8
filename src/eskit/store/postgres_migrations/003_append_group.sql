-- eskit event store schema for PostgreSQL, version 3: a group commit in one statement.
--
-- eskit_append_group writes a group of appends that the writer already checked, in Python
-- (eskit/store/rules.py, the only place the rules live), against the stream heads it
-- *expects*: the heads it remembers from its own earlier groups. The function takes the
-- head row's lock, then checks that every stream of the group still stands as expected
-- (last version, state, last hash link) and that no caller-given id was written; only then
-- does it number the rows from the locked head, insert them, revive soft-deleted streams,
-- move the head and notify. If anything differs it writes nothing and returns NULL, and the
-- writer runs the group the long way (lock, read the heads, check, insert). Each statement
-- of a volatile PL/pgSQL function takes a new snapshot, so the checks see every commit made
-- before the lock was granted. Called in autocommit it is one round trip per group, where
-- the long way costs six.

CREATE FUNCTION eskit_append_group(
    p_expected    JSON,    -- [{stream, last, state, link}]: every stream the group touches and
                           -- what the writer expects of it: its last version (NULL: none),
                           -- state (0 live, 1 soft-deleted, 2 tombstoned), the hash link of
                           -- its last event (base64);
    p_given       JSON,    -- [id]: the ids callers gave, which must not be in the store yet;
    p_rows        JSON,    -- [{at, id, stream, category, version, type, data, metadata, hash}]:
                           -- the rows, at positions head + at (1, 2, ...), hash in base64;
    p_recorded_at BIGINT,
    p_revived     TEXT[],  -- soft-deleted streams the group appends to (live again)
    p_channel     TEXT     -- NOTIFY channel woken when rows were written
) RETURNS BIGINT           -- the head before the group, or NULL if nothing was written
LANGUAGE plpgsql AS $$
DECLARE
    start BIGINT;
    added BIGINT;
BEGIN
    SELECT position INTO start FROM eskit_head FOR UPDATE;
    IF EXISTS (
        SELECT 1
        FROM json_to_recordset(p_expected) AS x(stream TEXT, last BIGINT, state INTEGER,
                                                link TEXT)
        LEFT JOIN LATERAL (
            SELECT e.version, e.hash FROM eskit_events e
            WHERE e.stream = x.stream ORDER BY e.version DESC LIMIT 1
        ) AS e ON TRUE
        LEFT JOIN eskit_streams s ON s.stream = x.stream
        WHERE e.version IS DISTINCT FROM x.last
           OR coalesce(s.state, 0) <> x.state
           OR e.hash IS DISTINCT FROM decode(x.link, 'base64')
    ) THEN
        RETURN NULL;
    END IF;
    IF json_array_length(p_given) > 0 AND EXISTS (
        SELECT 1 FROM json_array_elements_text(p_given) AS g(id)
        JOIN eskit_events e ON e.id = g.id::uuid
    ) THEN
        RETURN NULL;
    END IF;
    INSERT INTO eskit_events (position, id, stream, category, version, type, data, metadata,
                              recorded_at, hash)
    SELECT start + r.at, r.id, r.stream, r.category, r.version, r.type, r.data, r.metadata,
           p_recorded_at, decode(r.hash, 'base64')
    FROM json_to_recordset(p_rows) AS r(at BIGINT, id UUID, stream TEXT, category TEXT,
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
