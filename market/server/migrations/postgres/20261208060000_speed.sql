-- A measured speed per device (its host's fp32 matmul benchmark, in
-- GFLOPS) as the market honours it: within MAX_GPU_GFLOPS and what the
-- trusted providers of the same class were rated; 0 when unrated. Only a
-- provider's first device is rated; its raw claim is kept on the provider
-- (speed_claim, 0 for none) and rated again every SPEED_RERATE_MS by its
-- heartbeats, since trust and a class's peers change. A job's minimum is
-- req_gflops (0: none).
ALTER TABLE provider_gpus ADD COLUMN gflops BIGINT NOT NULL DEFAULT 0;
ALTER TABLE providers ADD COLUMN speed_claim BIGINT NOT NULL DEFAULT 0;
ALTER TABLE providers ADD COLUMN speed_rated_at_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN req_gflops BIGINT NOT NULL DEFAULT 0;
