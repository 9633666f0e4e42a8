-- Outputs as blobs (market/server/src/jobs/outputs.rs): a provider uploads
-- each output of a lease it runs (`lease_uploads`, bounded per lease by
-- MAX_UNIT_BYTES and MAX_LEASE_UPLOADS), then its signed result names them
-- by digest. A result's named outputs (`outputs`, canonical JSON of
-- name, digest and size in name order, NULL when none) are compared with
-- its main output when replicas are decided, and the decided unit keeps
-- the winning lease's. A canary's outputs are counted, never stored (its
-- answer is judged by digest). A version records whether its component
-- imports `data.output` (`adds_outputs`): only its results may carry named
-- outputs.
CREATE TABLE lease_uploads (
    lease_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (lease_id, digest)
);
CREATE INDEX lease_uploads_by_digest ON lease_uploads (digest);
ALTER TABLE leases ADD COLUMN outputs TEXT;
ALTER TABLE units ADD COLUMN outputs TEXT;
ALTER TABLE versions ADD COLUMN adds_outputs BIGINT NOT NULL DEFAULT 0;
