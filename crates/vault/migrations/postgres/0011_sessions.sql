-- Web app sessions (docs/vault.md, "The web app"): the SHA-256 of each session cookie, never the
-- cookie itself, with its account, its CSRF token and its expiry (unix ms).
CREATE TABLE sessions (
    token_sha256  TEXT    NOT NULL PRIMARY KEY,
    account       TEXT    NOT NULL,
    csrf_token    TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    expires_at    BIGINT  NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
