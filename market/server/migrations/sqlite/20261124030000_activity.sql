-- When a lease was answered: a provider's busy time, for its activity chart.
ALTER TABLE leases ADD COLUMN answered_at_ms BIGINT;
CREATE INDEX leases_by_provider_time ON leases (provider, created_at_ms);
