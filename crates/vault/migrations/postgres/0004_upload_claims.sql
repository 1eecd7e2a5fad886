-- Uploads being written, across every vault replica on this database: one writer per chunk. A
-- claim older than the vault's limit is a crashed replica's and may be taken over.
CREATE TABLE upload_claims (
    chunk_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    claimed_at BIGINT NOT NULL
);
