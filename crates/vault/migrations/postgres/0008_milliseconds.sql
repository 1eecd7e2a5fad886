-- One unit for every stored time, unix milliseconds (osprey_core::Timestamp): the columns that
-- held seconds are converted. uploaded_at, lost_at, outbox and heartbeat times were already ms.
UPDATE recordings SET recorded_at = recorded_at * 1000;
UPDATE recordings SET deleting_at = deleting_at * 1000 WHERE deleting_at IS NOT NULL;
UPDATE recordings SET forwarded_at = forwarded_at * 1000 WHERE forwarded_at IS NOT NULL;
UPDATE upload_claims SET claimed_at = claimed_at * 1000, lease_until = lease_until * 1000;
