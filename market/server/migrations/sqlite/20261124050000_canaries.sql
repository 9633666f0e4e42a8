-- Canary units: known-answer work given to untrusted providers as if it
-- were a buyer's (market/server/src/jobs/canaries.rs).
CREATE TABLE canaries (
    id TEXT PRIMARY KEY,
    package TEXT NOT NULL,
    version TEXT NOT NULL,
    digest TEXT NOT NULL,
    input_digest TEXT NOT NULL,
    output_digest TEXT NOT NULL,
    fuel_limit BIGINT NOT NULL,
    memory_limit BIGINT NOT NULL,
    timeout_ms BIGINT NOT NULL,
    needs_gpu BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
-- One lease of a canary: its id looks like any lease's, its job id like
-- any job's, so the provider cannot tell.
CREATE TABLE canary_runs (
    lease_id TEXT PRIMARY KEY,
    canary_id TEXT NOT NULL REFERENCES canaries (id),
    job_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    state TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX canary_runs_by_provider ON canary_runs (provider, canary_id);
