-- Forwarding to a central vault: set once the central vault has the chunk.
ALTER TABLE recordings ADD COLUMN forwarded_at BIGINT;
CREATE INDEX recordings_to_forward ON recordings (uploaded_at, chunk_id) WHERE forwarded_at IS NULL;
