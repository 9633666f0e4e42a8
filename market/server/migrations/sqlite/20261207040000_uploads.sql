-- Uploads by content (market/server/src/uploads.rs): a blob arrives in
-- chunks, each checked on arrival against the chunk value its uploader
-- declared (the values make the blob's digest: agora_wire::chunks).
-- `uploads` is an upload under way: the object key its blob will have and
-- the store's handle for its parts; `upload_chunks` each chunk's declared
-- value and, once stored, the store's id of its part. An account holds
-- (`holdings`) each blob it uploaded, until it lets it go; what it holds
-- and is uploading counts against its quota (`storage_usage`, changed only
-- by conditional updates). A job's shared inputs (`job_shared`) are blobs
-- its buyer held when it was submitted; a provider says in its heartbeats
-- which shared inputs it keeps (`provider_blobs`), and leasing prefers
-- units whose job shares one.
CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    chunk_bytes BIGINT NOT NULL,
    object TEXT NOT NULL,
    parts TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    touched_at_ms BIGINT NOT NULL,
    UNIQUE (account, digest)
);
CREATE INDEX uploads_by_touch ON uploads (touched_at_ms);
CREATE TABLE upload_chunks (
    upload_id TEXT NOT NULL,
    idx BIGINT NOT NULL,
    value TEXT NOT NULL,
    part TEXT,
    PRIMARY KEY (upload_id, idx)
);
CREATE TABLE holdings (
    account TEXT NOT NULL,
    digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (account, digest)
);
CREATE INDEX holdings_by_digest ON holdings (digest);
CREATE TABLE storage_usage (
    account TEXT PRIMARY KEY,
    bytes BIGINT NOT NULL
);
CREATE TABLE job_shared (
    job_id TEXT NOT NULL,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (job_id, name)
);
CREATE INDEX job_shared_by_digest ON job_shared (digest, job_id);
CREATE TABLE provider_blobs (
    provider TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (provider, digest)
);
