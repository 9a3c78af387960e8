-- eskit event store schema for PostgreSQL, version 4: the log refuses changes.
--
-- Why: eskit never updates an event row and never deletes one; every reader (projections,
-- subscriptions, `eskit verify`) relies on that. So the database refuses it too, whoever
-- asks: a script, a migration gone wrong, an admin tool, SQL injected elsewhere in the app.
-- An UPDATE of eskit_events is always refused. A DELETE is refused unless the event's
-- removal was first recorded in eskit_removals: the one way a later, audited removal path
-- (scavenging of deleted or expired streams, erasure) may delete, leaving a record of what
-- went and why. TRUNCATE fires no DELETE trigger, so a statement-level trigger refuses it
-- outright (a truncate cannot be recorded event by event). The record is append-only too,
-- so a removal cannot be hidden afterwards.
--
-- Against whom: the triggers stop mistakes and any role without ownership. The table's
-- owner can disable triggers and a superuser can skip them (session_replication_role =
-- replica; tests/store/tamper.py plays that intruder); `eskit verify` with the audit key and
-- saved anchors finds what they did. So the application should not connect as the owner:
-- `eskit migrate --app-role NAME` grants a role what eskit needs and nothing more (no
-- UPDATE, DELETE or TRUNCATE on eskit_events, nothing on eskit_removals).
--
-- The triggers are ordinary (not ENABLE ALWAYS): a logical replica applies the origin's
-- changes in replica mode, including the origin's audited removals, and must not refuse them.
-- The functions name the tables through TG_TABLE_SCHEMA, not the search_path, so they work
-- from any session, whatever its search_path.

-- Events removed through the audited path, recorded before they are deleted.
CREATE TABLE eskit_removals (
    position   BIGINT PRIMARY KEY,                     -- the event's position
    stream     TEXT   NOT NULL,                        -- and its stream and version, which
    version    BIGINT NOT NULL,                        -- the DELETE must match
    reason     TEXT   NOT NULL CHECK (reason <> ''),   -- why it is removed
    removed_at BIGINT NOT NULL,                        -- microseconds since 1970-01-01 UTC
    removed_by TEXT   NOT NULL DEFAULT current_user CHECK (removed_by <> '')  -- who or what
);

CREATE FUNCTION eskit_refuse_event_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    recorded BOOLEAN;
BEGIN
    IF TG_OP = 'DELETE' THEN
        EXECUTE format(
            'SELECT EXISTS (SELECT 1 FROM %I.eskit_removals'
            ' WHERE position = $1 AND stream = $2 AND version = $3)', TG_TABLE_SCHEMA)
        INTO recorded USING OLD.position, OLD.stream, OLD.version;
        IF recorded THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'eskit: events are append-only, a DELETE of %.eskit_events is refused'
            ' unless the removal of that event is first recorded in eskit_removals', TG_TABLE_SCHEMA
            USING ERRCODE = 'restrict_violation',
                  DETAIL = format('event at position %s (stream %s, version %s)',
                                  OLD.position, OLD.stream, OLD.version);
    END IF;
    RAISE EXCEPTION 'eskit: events are append-only, % of %.eskit_events is refused', TG_OP,
        TG_TABLE_SCHEMA USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER eskit_events_refuse_update BEFORE UPDATE ON eskit_events
    FOR EACH ROW EXECUTE FUNCTION eskit_refuse_event_change();
CREATE TRIGGER eskit_events_refuse_delete BEFORE DELETE ON eskit_events
    FOR EACH ROW EXECUTE FUNCTION eskit_refuse_event_change();
CREATE TRIGGER eskit_events_refuse_truncate BEFORE TRUNCATE ON eskit_events
    FOR EACH STATEMENT EXECUTE FUNCTION eskit_refuse_event_change();

CREATE FUNCTION eskit_refuse_removal_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'eskit: removals are append-only, % of %.eskit_removals is refused', TG_OP,
        TG_TABLE_SCHEMA USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER eskit_removals_refuse_change BEFORE UPDATE OR DELETE ON eskit_removals
    FOR EACH ROW EXECUTE FUNCTION eskit_refuse_removal_change();
CREATE TRIGGER eskit_removals_refuse_truncate BEFORE TRUNCATE ON eskit_removals
    FOR EACH STATEMENT EXECUTE FUNCTION eskit_refuse_removal_change();
