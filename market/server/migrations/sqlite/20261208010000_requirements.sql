-- What a job's units need of a provider's GPU (has_requirements = 0: any
-- GPU, or none), and which providers it accepts.
ALTER TABLE jobs ADD COLUMN has_requirements BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN req_gpu_memory BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN req_backend TEXT;
ALTER TABLE jobs ADD COLUMN req_device_type TEXT;
-- A CUDA compute capability major.minor as major * 100 + minor.
ALTER TABLE jobs ADD COLUMN req_compute BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN min_reputation DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN allow_listed BIGINT NOT NULL DEFAULT 0;
-- A job's allow (allow = 1) and deny (allow = 0) lists.
CREATE TABLE job_providers (
    job_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    allow BIGINT NOT NULL,
    PRIMARY KEY (job_id, provider)
);
-- The devices each provider registered (replaced at each registration).
CREATE TABLE provider_gpus (
    provider TEXT NOT NULL,
    idx BIGINT NOT NULL,
    backend TEXT NOT NULL,
    device_type TEXT NOT NULL,
    memory_bytes BIGINT NOT NULL,
    compute BIGINT NOT NULL,
    PRIMARY KEY (provider, idx)
);
