-- The time indexes that pruning old nonces, stored idempotent responses
-- and audit records runs on (see `hygiene::forget_old_records`).
CREATE INDEX nonces_by_age ON nonces (seen_at_ms);
CREATE INDEX idempotency_by_age ON idempotency (created_at_ms);
CREATE INDEX audit_by_age ON audit (at_ms);
