-- A session is bound to the keys it was made with (issue 26): a keyed fingerprint of them
-- (HMAC-SHA256 with the vault's signing key), never the secret. A session whose account's keys
-- no longer match is over. Sessions from before have none and end.
ALTER TABLE sessions ADD COLUMN keys_fingerprint TEXT NOT NULL DEFAULT '';
