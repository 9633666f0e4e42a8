-- Each provider's machine readings over time, from its heartbeats: at
-- most one sample a minute (TELEMETRY_SAMPLE_MS; at_ms is the minute's
-- start, so the key holds it to one however heartbeats race), kept a day
-- (TELEMETRY_KEPT_MS), for its dashboard's plots. A sample sums up its
-- GPUs: the mean busy share, the hottest, the power and memory of all.
CREATE TABLE provider_samples (
    provider TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    free_cpu_cores DOUBLE PRECISION NOT NULL,
    gpu_utilization DOUBLE PRECISION,
    gpu_celsius DOUBLE PRECISION,
    gpu_watts DOUBLE PRECISION,
    gpu_memory_used BIGINT,
    PRIMARY KEY (provider, at_ms)
);
-- The hygiene sweep forgets the samples of providers that went quiet.
CREATE INDEX provider_samples_by_age ON provider_samples (at_ms);
