-- The market's promises: jobs whose settlement failed are set aside with a
-- back-off instead of stopping the sweep.
ALTER TABLE jobs ADD COLUMN settle_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN settle_error TEXT;
ALTER TABLE jobs ADD COLUMN settle_after_ms BIGINT NOT NULL DEFAULT 0;

-- A lease ends at its grant plus the unit's timeout plus a grace
-- (deadline_ms), whatever the heartbeats; they renew it up to there.
ALTER TABLE leases ADD COLUMN deadline_ms BIGINT NOT NULL DEFAULT 0;
UPDATE leases SET deadline_ms = created_at_ms + 120000 + COALESCE((SELECT j.timeout_ms FROM jobs j WHERE j.id = leases.job_id), 0);
ALTER TABLE canary_runs ADD COLUMN deadline_ms BIGINT NOT NULL DEFAULT 0;
UPDATE canary_runs SET deadline_ms = expires_at_ms;

-- Wall-clock time is priced, and a lease keeps the prices in force when it
-- was granted.
ALTER TABLE providers ADD COLUMN ask_per_wall_second BIGINT NOT NULL DEFAULT 0;
ALTER TABLE leases ADD COLUMN ask_per_billion_fuel BIGINT NOT NULL DEFAULT 0;
ALTER TABLE leases ADD COLUMN ask_per_gpu_second BIGINT NOT NULL DEFAULT 0;
ALTER TABLE leases ADD COLUMN ask_per_wall_second BIGINT NOT NULL DEFAULT 0;
UPDATE leases SET ask_per_billion_fuel = COALESCE((SELECT p.ask_per_billion_fuel FROM providers p WHERE p.id = leases.provider), 0),
                  ask_per_gpu_second = COALESCE((SELECT p.ask_per_gpu_second FROM providers p WHERE p.id = leases.provider), 0);
-- The wall time the market measured (grant to result), what it paid for.
ALTER TABLE leases ADD COLUMN wall_ms BIGINT;
-- Whether the provider meters fuel (a browser tab cannot: it reports 0).
ALTER TABLE leases ADD COLUMN metered BIGINT NOT NULL DEFAULT 1;
-- Whether the provider was trusted when the lease was granted (a unit
-- fails for good only when a trusted provider's run failed it too), and
-- which limit a failed run hit, typed.
ALTER TABLE leases ADD COLUMN trusted BIGINT NOT NULL DEFAULT 0;
ALTER TABLE leases ADD COLUMN limit_kind TEXT;

-- Trust grows only from independent evidence: agreement with a provider
-- trusted at its grant, or a canary answered right (decayed like good/bad).
ALTER TABLE providers ADD COLUMN confirmed DOUBLE PRECISION NOT NULL DEFAULT 0;
-- Keys the operator vouches for (its own hosts), trusted until their record
-- says otherwise: how a new market gets its first trusted providers.
CREATE TABLE vouched (
    id TEXT PRIMARY KEY,
    at_ms BIGINT NOT NULL
);
