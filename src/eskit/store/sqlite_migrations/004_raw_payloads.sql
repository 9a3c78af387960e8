-- eskit event store schema for SQLite, version 4: payloads kept as bytes; custom metadata.
--
-- KurrentDB's clients send event data and metadata as bytes: JSON that is not an object,
-- text that is not JSON, binary. eskit keeps such a payload byte for byte (eskit.RawData):
-- `data` (or `metadata`) then holds '{}' and the bytes live in the columns below. Events
-- written before this version have them NULL, which means what it always meant: `data` and
-- `metadata` are the payloads. The hash link of an event with raw parts covers them
-- (eskit/store/chain.py).
--
-- Stream metadata gains the keys eskit does not interpret (StreamMetadata.custom), kept as
-- the JSON text of an object, exactly as set.

ALTER TABLE events ADD COLUMN content_type TEXT;  -- of raw_data; NULL: `data` is the data
ALTER TABLE events ADD COLUMN raw_data BLOB;      -- the data as given, when not a JSON object
ALTER TABLE events ADD COLUMN raw_metadata BLOB;  -- the metadata as given, when not a JSON object

ALTER TABLE streams ADD COLUMN custom TEXT;       -- JSON object of custom metadata keys, or NULL
