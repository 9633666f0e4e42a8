-- Who published each version: a key's versions and bytes per day are
-- bounded (registry::MAX_VERSIONS_PER_KEY_PER_DAY and
-- MAX_PUBLISH_BYTES_PER_KEY_PER_DAY), counted on this index.
ALTER TABLE versions ADD COLUMN publisher TEXT;
UPDATE versions SET publisher = (SELECT p.owner FROM packages p WHERE p.name = versions.name);
CREATE INDEX versions_by_publisher ON versions (publisher, published_at_ms);
