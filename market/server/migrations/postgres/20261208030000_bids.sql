-- A price-ordered market: a job's bid (percent of each provider's ask it
-- pays) and the priority its units queue at (the bid, or 0 when its cap
-- could not pay the going rate at that bid); the lease order serves the
-- highest priority first, then the oldest. A lease records the device
-- class it ran on, and recent accepted trades of providers trusted at
-- their grant are found by index (the going rate per class).
ALTER TABLE jobs ADD COLUMN bid_percent BIGINT NOT NULL DEFAULT 100;
ALTER TABLE jobs ADD COLUMN priority BIGINT NOT NULL DEFAULT 100;
ALTER TABLE units ADD COLUMN priority BIGINT NOT NULL DEFAULT 100;
ALTER TABLE leases ADD COLUMN device_class TEXT NOT NULL DEFAULT 'cpu';
DROP INDEX units_lease_order;
CREATE INDEX units_lease_order ON units (state, priority DESC, queued_at_ms, job_id, idx);
CREATE INDEX leases_trades ON leases (answered_at_ms) WHERE state = 'accepted' AND trusted = 1;
