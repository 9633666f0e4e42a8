-- Providers, jobs, work units and leases.
CREATE TABLE providers (
    id TEXT PRIMARY KEY,
    capabilities TEXT NOT NULL,
    ask_per_billion_fuel BIGINT NOT NULL,
    ask_per_gpu_second BIGINT NOT NULL,
    max_concurrent BIGINT NOT NULL,
    has_gpu BIGINT NOT NULL,
    telemetry TEXT NOT NULL,
    last_heartbeat_ms BIGINT NOT NULL,
    -- Beta reputation: alpha - 1 and beta - 1, decayed on each update.
    good DOUBLE PRECISION NOT NULL DEFAULT 0,
    bad DOUBLE PRECISION NOT NULL DEFAULT 0,
    units_done BIGINT NOT NULL DEFAULT 0,
    registered_at_ms BIGINT NOT NULL
);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    buyer TEXT NOT NULL,
    package TEXT NOT NULL,
    version TEXT NOT NULL,
    digest TEXT NOT NULL,
    fuel_limit BIGINT NOT NULL,
    memory_limit BIGINT NOT NULL,
    timeout_ms BIGINT NOT NULL,
    needs_gpu BIGINT NOT NULL,
    max_price BIGINT NOT NULL,
    unit_cap BIGINT NOT NULL,
    replicas BIGINT NOT NULL,
    state TEXT NOT NULL,
    escrow_posted BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    finished_at_ms BIGINT
);
CREATE INDEX jobs_by_buyer ON jobs (buyer, created_at_ms);
CREATE INDEX jobs_by_state ON jobs (state, created_at_ms);

CREATE TABLE units (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    idx BIGINT NOT NULL,
    input_digest TEXT NOT NULL,
    state TEXT NOT NULL,
    -- Replicas to lease, and matching outputs needed to verify.
    wanted BIGINT NOT NULL,
    quorum BIGINT NOT NULL,
    failures BIGINT NOT NULL DEFAULT 0,
    output_digest TEXT,
    message TEXT,
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX units_open ON units (state, job_id);

CREATE TABLE leases (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    idx BIGINT NOT NULL,
    provider TEXT NOT NULL,
    state TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    outcome TEXT,
    message TEXT,
    output_digest TEXT,
    fuel_used BIGINT,
    gpu_time_us BIGINT,
    peak_memory_bytes BIGINT,
    signature TEXT,
    cost BIGINT,
    paid BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX leases_by_unit ON leases (job_id, idx);
CREATE INDEX leases_active ON leases (state, expires_at_ms);
CREATE INDEX leases_by_provider ON leases (provider, state);
