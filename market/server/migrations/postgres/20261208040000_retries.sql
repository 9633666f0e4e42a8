-- A buyer's retry policy: the failed runs a unit may have before only
-- vouched hosts run it (and the counted failures that fail it for good),
-- whether a unit failing on its own on a vouched host is retried at all,
-- and the wait after a failed run before the unit is leased again (when
-- it may be, in `units.retry_at_ms`).
ALTER TABLE jobs ADD COLUMN max_attempts BIGINT NOT NULL DEFAULT 3;
ALTER TABLE jobs ADD COLUMN retry_own_failures BIGINT NOT NULL DEFAULT 1;
ALTER TABLE jobs ADD COLUMN backoff_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE units ADD COLUMN retry_at_ms BIGINT NOT NULL DEFAULT 0;
