-- Results of jobs checked by the package's `verify` wait here for the
-- market's verifier (a lease in state `verifying`): one row per lease,
-- claimed by one verifier at a time (`claim` until `claimed_until_ms`),
-- served fairly between buyers (`verify_turns`: when each buyer's last
-- verification started).
CREATE TABLE verifications (
    lease_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    buyer TEXT NOT NULL,
    queued_at_ms BIGINT NOT NULL,
    claim TEXT,
    claimed_until_ms BIGINT NOT NULL DEFAULT 0,
    attempts BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX verifications_due ON verifications (claimed_until_ms);
CREATE INDEX verifications_job ON verifications (job_id);
CREATE TABLE verify_turns (
    buyer TEXT PRIMARY KEY,
    served_at_ms BIGINT NOT NULL
);
