-- 1 on the lease of an untrusted provider that raised its unit to two
-- replicas (a confirming trusted replica for its result): when that run
-- fails or its lease lapses, the unit wants one result again, so a market
-- with a single trusted provider can still finish it.
ALTER TABLE leases ADD COLUMN raised_quorum BIGINT NOT NULL DEFAULT 0;
