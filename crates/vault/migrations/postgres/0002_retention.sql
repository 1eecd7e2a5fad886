-- Retention marks a recording before deleting its object, then deletes the row: a crash in
-- between leaves a marked row that the next run finishes, never a row without its object
-- visible to the API.
ALTER TABLE recordings ADD COLUMN deleting_at BIGINT;
CREATE INDEX recordings_by_time ON recordings (recorded_at, chunk_id);
