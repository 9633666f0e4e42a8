-- Jobs that narrow who may run them (a GPU, GPU requirements, an allow or
-- deny list, a minimum reputation) are gated, and so are their units:
-- leasing finds gated work job by job (jobs_gated: a job's conditions
-- read once for a provider they shut out), and walks only ungated units in
-- units_lease_order, so a buyer's units that one provider in a thousand
-- may take slow no other provider's lease.
ALTER TABLE jobs ADD COLUMN gated BIGINT NOT NULL DEFAULT 0;
ALTER TABLE units ADD COLUMN gated BIGINT NOT NULL DEFAULT 0;
UPDATE jobs SET gated = 1 WHERE needs_gpu = 1 OR has_requirements = 1 OR allow_listed = 1 OR min_reputation > 0
    OR EXISTS (SELECT 1 FROM job_providers f WHERE f.job_id = jobs.id AND f.allow = 0);
UPDATE units SET gated = 1 WHERE job_id IN (SELECT id FROM jobs WHERE gated = 1);
DROP INDEX units_lease_order;
CREATE INDEX units_lease_order ON units (state, gated, priority DESC, queued_at_ms, job_id, idx);
CREATE INDEX jobs_gated ON jobs (state, gated, priority DESC, created_at_ms, id);
