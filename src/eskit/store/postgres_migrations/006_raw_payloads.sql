-- eskit event store schema for PostgreSQL, version 7: payloads kept as bytes; custom
-- stream metadata.
--
-- KurrentDB's clients send event data and metadata as bytes: JSON that is not an object,
-- text that is not JSON, binary. eskit keeps such a payload byte for byte (eskit.RawData):
-- `data` (or `metadata`) then holds '{}' and the bytes live in the columns below. Events
-- written before this version have them NULL, which means what it always meant: `data` and
-- `metadata` are the payloads. The hash link of an event with raw parts covers them
-- (eskit/store/chain.py). Adding NULL columns rewrites no row.
--
-- eskit_append_group (the one-statement path) does not take raw parts: a group holding
-- them is written the long way, by INSERTs in a transaction (eskit/store/postgres_writer.py).
--
-- Stream metadata gains the keys eskit does not interpret (StreamMetadata.custom), kept as
-- the JSON text of an object, exactly as set (TEXT, not JSONB, which reorders keys).

ALTER TABLE eskit_events
    ADD COLUMN content_type TEXT,   -- of raw_data; NULL: `data` is the data
    ADD COLUMN raw_data     BYTEA,  -- the data as given, when not a JSON object
    ADD COLUMN raw_metadata BYTEA;  -- the metadata as given, when not a JSON object

ALTER TABLE eskit_streams
    ADD COLUMN custom TEXT;         -- JSON object of custom metadata keys, or NULL
