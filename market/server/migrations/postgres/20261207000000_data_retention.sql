-- A job's data (its units' inputs and outputs, its log lines) is kept for a
-- retention period after the job ends, or until its buyer deletes it, then
-- collected (market/server/src/blobs.rs, jobs/retention.rs): marked deleted
-- at once, its blobs and lines collected in bounded batches after.
ALTER TABLE jobs ADD COLUMN data_deleted_at_ms BIGINT;
ALTER TABLE jobs ADD COLUMN data_collected BIGINT NOT NULL DEFAULT 1;
-- The last digest a collection looked at: the next one goes on after it.
ALTER TABLE jobs ADD COLUMN data_collect_after TEXT NOT NULL DEFAULT '';
CREATE INDEX jobs_data_kept ON jobs (data_deleted_at_ms, finished_at_ms);
CREATE INDEX jobs_data_to_collect ON jobs (data_deleted_at_ms) WHERE data_collected = 0;
-- What a collection looks up: who else still names a digest.
CREATE INDEX units_by_output ON units (output_digest);
CREATE INDEX leases_by_output ON leases (output_digest);
-- Pinned blobs are the registry's and the canaries' (components, browser
-- bundle files, known answers): never collected. Every blob stored before
-- this migration that no unit or lease names is pinned, and so is every
-- one the registry or a canary names.
ALTER TABLE blobs ADD COLUMN pinned BIGINT NOT NULL DEFAULT 0;
UPDATE blobs SET pinned = 1
 WHERE NOT EXISTS (SELECT 1 FROM units u WHERE u.input_digest = blobs.digest)
   AND NOT EXISTS (SELECT 1 FROM units u WHERE u.output_digest = blobs.digest)
   AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.output_digest = blobs.digest);
UPDATE blobs SET pinned = 1 WHERE digest IN (SELECT digest FROM versions)
   OR digest IN (SELECT input_digest FROM canaries) OR digest IN (SELECT output_digest FROM canaries)
;
UPDATE blobs SET pinned = 1 WHERE digest IN
    (SELECT f ->> 'digest' FROM browser_bundles b, jsonb_array_elements(b.manifest::jsonb -> 'files') f);
