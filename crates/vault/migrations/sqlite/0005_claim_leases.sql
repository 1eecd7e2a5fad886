-- A claim is held while its vault renews its lease; one whose lease has run out is a crashed
-- vault's and is taken over at once. The claim names the object it guards, so a reconciler that
-- finds a dead vault's claim knows which object may be an orphan. Claims from before leases read
-- as expired.
ALTER TABLE upload_claims ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;
ALTER TABLE upload_claims ADD COLUMN provider TEXT NOT NULL DEFAULT '';
ALTER TABLE upload_claims ADD COLUMN object_key TEXT NOT NULL DEFAULT '';
-- Set by reconciliation when a recording's object is missing from its provider (data loss).
ALTER TABLE recordings ADD COLUMN lost_at BIGINT;
