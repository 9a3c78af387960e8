-- eskit event store schema for PostgreSQL, version 5: links cover positions; the chain start.
--
-- From this version on, every event's hash link covers its global position too (the
-- "v2" links of eskit/store/chain.py), so swapping two events' positions breaks their
-- links. The writer must therefore know each event's position before it hashes it.
--
-- eskit_chain_start records the first position whose event must carry a v2 link: 1 in a
-- new store, the next position in a store upgraded from an earlier version (its older
-- events keep their older links, or none). eskit writes the record right after this file,
-- in the same transaction, with its hash keyed with ESKIT_AUDIT_KEY (eskit migrate must
-- run with the writers' key); `eskit verify` checks it, and reports a missing record.

CREATE TABLE eskit_chain_start (
    id       BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    position BIGINT  NOT NULL,  -- the first position whose event carries a v2 link
    hash     BYTEA   NOT NULL   -- chain_start_hash(position, audit key): keyed BLAKE2b-256
);

-- Written once: like the log (version 4), the table refuses changes, TRUNCATE included.
CREATE FUNCTION eskit_refuse_chain_start_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'eskit: the chain start is written once, % of %.eskit_chain_start is refused',
        TG_OP, TG_TABLE_SCHEMA USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER eskit_chain_start_refuse_change BEFORE UPDATE OR DELETE ON eskit_chain_start
    FOR EACH ROW EXECUTE FUNCTION eskit_refuse_chain_start_change();
CREATE TRIGGER eskit_chain_start_refuse_truncate BEFORE TRUNCATE ON eskit_chain_start
    FOR EACH STATEMENT EXECUTE FUNCTION eskit_refuse_chain_start_change();

-- eskit_append_group (version 3) numbered the rows from the head it locked. The writer now
-- hashes each row with its position, so it sends the positions, from the head it expects
-- (the head after its own last commit): the function writes only if the head is still
-- there, and otherwise returns NULL like for any other difference (the writer then takes
-- the long way: lock the head, read it, hash, insert).
DROP FUNCTION eskit_append_group(JSON, JSON, JSON, BIGINT, TEXT[], TEXT);

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
