-- Re-analysis jobs: an account's recordings of a range sent to one model group again. The
-- cursor (recorded_at, chunk_id) and the outbox rows of the recordings up to it are written in one
-- transaction, so a stopped vault resumes after the last recording it queued.
CREATE TABLE reanalyse_jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    account       TEXT    NOT NULL,
    model_group   TEXT    NOT NULL,
    device        TEXT,
    from_ms       BIGINT  NOT NULL,
    to_ms         BIGINT  NOT NULL,
    rate          REAL NOT NULL,   -- recordings queued per second
    total         BIGINT  NOT NULL,
    queued        BIGINT  NOT NULL DEFAULT 0,
    cursor_at     BIGINT,
    cursor_chunk  TEXT,
    state         TEXT    NOT NULL,  -- running, done
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);
CREATE INDEX reanalyse_running ON reanalyse_jobs (state);
