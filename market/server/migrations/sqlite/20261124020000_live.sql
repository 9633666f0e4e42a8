-- What running units say: progress per lease, and log lines per unit.
ALTER TABLE leases ADD COLUMN progress_done BIGINT;
ALTER TABLE leases ADD COLUMN progress_total BIGINT;
ALTER TABLE leases ADD COLUMN log_lines BIGINT NOT NULL DEFAULT 0;

CREATE TABLE unit_logs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    idx BIGINT NOT NULL,
    lease_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX unit_logs_by_job ON unit_logs (job_id, seq);

-- Jobs whose package exports `verify`: each result is checked by the
-- market's verifier instead of by comparing replicas' digests.
ALTER TABLE jobs ADD COLUMN checked_by_verify BIGINT NOT NULL DEFAULT 0;

-- Leasing walks queued units oldest job first, in index order, and stops
-- at the first one the provider may take (no sort of the whole queue).
ALTER TABLE units ADD COLUMN queued_at_ms BIGINT NOT NULL DEFAULT 0;
CREATE INDEX units_lease_order ON units (state, queued_at_ms, job_id, idx);
