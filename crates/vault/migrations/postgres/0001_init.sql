-- Accounts come from the vault config and are synchronised here at start-up.
CREATE TABLE accounts (
    name          TEXT    NOT NULL PRIMARY KEY,
    access_key    TEXT    NOT NULL UNIQUE,
    secret_sha256 TEXT    NOT NULL,
    updated_at    BIGINT  NOT NULL
);

-- One row per stored chunk. chunk_id is derived from (provider, object_key).
CREATE TABLE recordings (
    chunk_id     TEXT    NOT NULL PRIMARY KEY,
    account      TEXT    NOT NULL,
    provider     TEXT    NOT NULL,
    object_key   TEXT    NOT NULL,
    device       TEXT    NOT NULL,
    camera       TEXT    NOT NULL,
    capture      TEXT    NOT NULL,
    size         BIGINT  NOT NULL,
    sha256       TEXT    NOT NULL,
    recorded_at  BIGINT  NOT NULL,  -- unix seconds, from the agent
    uploaded_at  BIGINT  NOT NULL,  -- unix milliseconds, vault clock
    duration_ms  BIGINT,
    fps          DOUBLE PRECISION,
    region       TEXT    NOT NULL,
    changes      BIGINT,
    UNIQUE (provider, object_key)
);
CREATE INDEX recordings_by_account_time ON recordings (account, recorded_at DESC, chunk_id DESC);
CREATE INDEX recordings_by_device_time ON recordings (account, device, recorded_at DESC, chunk_id DESC);

-- Transactional outbox: written with the recording, published by the relay, then marked sent.
CREATE TABLE outbox (
    id          BIGSERIAL PRIMARY KEY,
    topic       TEXT    NOT NULL,
    msg_key     TEXT    NOT NULL,
    chunk_id    TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,  -- unix milliseconds
    sent_at     BIGINT
);
CREATE INDEX outbox_pending ON outbox (id) WHERE sent_at IS NULL;
