-- The work a provider takes (its registration's `accepts`): the longest
-- and largest units (0: any), CPU or GPU units only, and its allow and
-- deny lists of packages and publishers.
ALTER TABLE providers ADD COLUMN accept_max_timeout_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE providers ADD COLUMN accept_max_memory_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE providers ADD COLUMN accept_units TEXT NOT NULL DEFAULT 'any';
CREATE TABLE provider_accepts (
    provider TEXT NOT NULL,
    -- `package` or `publisher`.
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    allow BIGINT NOT NULL,
    PRIMARY KEY (provider, kind, name)
);
