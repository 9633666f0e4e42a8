-- A measured speed per device (its host's fp32 matmul benchmark, in
-- GFLOPS, as the market honours it: within MAX_GPU_GFLOPS and the trusted
-- providers of the same class; 0 when none was reported), and a job's
-- minimum (0: none).
ALTER TABLE provider_gpus ADD COLUMN gflops BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN req_gflops BIGINT NOT NULL DEFAULT 0;
