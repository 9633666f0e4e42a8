//! Leasing a unit to a provider: which unit it may take (its GPU, its
//! ask against the unit's cap, never two replicas of a unit, an untrusted
//! key only as a unit's first replica), re-counted under the unit's lock,
//! with the ask in force and the provider's trust recorded on the lease.

use super::requirements::{ALLOW_LISTED_FIRST_ONLY_SQL, LEASE_FILTER_SQL, accepted_by_sql};
use super::*;
use agora_wire::limits::MAX_BROWSER_SHARED_BYTES;

/// The next unit a provider may lease: binds `now`, has-GPU (0/1), the
/// provider's fuel and GPU asks, its id, browser (0/1), its wall ask,
/// untrusted (0/1) and vouched (0/1): the most the unit can cost at those asks fits the
/// unit's cap, a browser tab takes only jobs with a browser bundle and at
/// most [`MAX_BROWSER_SHARED_BYTES`] of shared inputs (it holds them in
/// memory), and an untrusted provider is only ever a unit's first
/// replica: it never joins a unit another provider holds or has answered,
/// so every confirming, tie-breaking and spot-checking replica is a
/// trusted provider's (two fresh keys cannot collect both replicas, nor
/// ride along with a colluding trusted key's check), and never takes a
/// unit that has failed once (a job that computes its answer, logs it and
/// fails gets at most one unpaid fresh-key run of a unit, not one per
/// key); a unit waits out its buyer's backoff after a failed run
/// (`retry_at_ms`); and a unit that failed its job's `max_attempts` times
/// ([`MAX_UNIT_FAILURES`] unless the buyer said) goes to the operator's
/// vouched hosts only (binds vouched (0/1) last), so a job that
/// keeps failing in ways that count for nothing (crashing workers) gets a
/// bounded number of unpaid runs, not one per trusted provider. On
/// PostgreSQL the row is locked, and rows other replicas hold are skipped.
/// Only ungated units are walked: a gated job's are found job by job
/// ([`gated_jobs_sql`]).
pub fn lease_candidate_sql(kind: Kind) -> String {
    candidate_sql(
        kind,
        "FROM units u JOIN jobs j ON j.id = u.job_id WHERE u.gated = 0 AND",
        "u.priority DESC, u.queued_at_ms, u.job_id, u.idx",
    )
}

/// [`lease_candidate_sql`] within one job (binds the job's id, `$10`),
/// at a priority at least `$11` (the queue's best unit's for this
/// provider: locality never jumps a better bid), its units read in index
/// order (the units' primary key), gated or not: for a job sharing an
/// input the provider keeps ([`LOCAL_JOBS_SQL`]).
pub fn local_candidate_sql(kind: Kind) -> String {
    candidate_sql(
        kind,
        "FROM units u JOIN jobs j ON j.id = u.job_id WHERE u.job_id = $10 AND u.priority >= $11 AND",
        "u.idx",
    )
}

/// Running jobs sharing an input provider `$1` keeps (it said so in its
/// heartbeat: `provider_blobs`), the highest priority then the oldest first, at most [`LOCAL_JOBS_TRIED`]:
/// found from those few digests, never by walking the queue.
const LOCAL_JOBS_SQL: &str = "SELECT s.job_id FROM provider_blobs pb JOIN job_shared s ON s.digest = pb.digest JOIN jobs r ON r.id = s.job_id
     WHERE pb.provider = $1 AND r.state = 'running' GROUP BY s.job_id, r.priority, r.created_at_ms ORDER BY r.priority DESC, r.created_at_ms, s.job_id LIMIT $2";
/// Gated jobs with a unit for it a lease on PostgreSQL tries beside the
/// queue's walk (another replica may hold that unit).
const GATED_JOBS_TRIED: i64 = 4;
/// Jobs sharing a kept input a lease tries before the queue's oldest.
const LOCAL_JOBS_TRIED: i64 = 4;

/// The percent of the ask a job's runs are paid: the bid in force (its
/// priority: the highest bid up to the buyer's that its cap paid when it
/// was submitted), at least the ask itself. [`paid_percent`] in Rust.
const PAID_PERCENT_SQL: &str = "(CASE WHEN j.priority < 100 THEN 100 ELSE j.priority END)";
const _: () = assert!(
    agora_wire::limits::MIN_BID_PERCENT == 100,
    "PAID_PERCENT_SQL's floor"
);

/// [`PAID_PERCENT_SQL`] of a job whose priority is `priority`.
fn paid_percent(priority: i64) -> u64 {
    priority.max(agora_wire::limits::MIN_BID_PERCENT as i64) as u64
}

/// The unit the queue serves first of `a` and `b`: the higher priority,
/// then the older (`a` on a tie).
fn better(a: Option<AnyRow>, b: Option<AnyRow>) -> Result<Option<AnyRow>, ApiError> {
    let key = |u: &AnyRow| -> Result<(i64, i64), sqlx::Error> {
        Ok((
            -u.try_get::<i64, _>("priority")?,
            u.try_get("queued_at_ms")?,
        ))
    };
    Ok(match (a, b) {
        (Some(a), Some(b)) if key(&b)? < key(&a)? => Some(b),
        (Some(a), _) => Some(a),
        (None, b) => b,
    })
}

/// The provider a lease looks for a unit for, as the candidate queries
/// bind it.
struct Seeker<'a> {
    provider: &'a KeyId,
    has_gpu: bool,
    /// A browser tab runs only packages with a browser bundle.
    browser: bool,
    ask: Ask,
    untrusted: bool,
    vouched: bool,
}

impl Seeker<'_> {
    /// Bind what the candidate queries ask of the seeker, `$1` (now) to
    /// `$9`.
    fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
        now: i64,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        query
            .bind(now)
            .bind(self.has_gpu as i64)
            .bind(self.ask.per_billion_fuel as i64)
            .bind(self.ask.per_gpu_second as i64)
            .bind(self.provider.as_str())
            .bind(self.browser as i64)
            .bind(self.ask.per_wall_second as i64)
            .bind(self.untrusted as i64)
            .bind(self.vouched as i64)
    }
}

/// The conditions on job `j` for the provider the binds describe (`$1`
/// now, `$2` has-GPU, `$3`, `$4` and `$7` its asks, `$5` its id, `$6`
/// browser): running, unexpired, its GPU, its cap against the asks, a
/// browser's bundle, the job's requirements and filters, and the
/// provider's own filter.
fn job_conditions_sql() -> String {
    let accepted = accepted_by_sql("j", "$5");
    format!(
        "j.state = 'running' AND j.expires_at_ms > $1 AND (j.needs_gpu = 0 OR $2 = 1)
           AND (($3 * j.fuel_limit) / 1000000000 + ($4 * j.timeout_ms) / 1000 + ($7 * j.timeout_ms) / 1000) * {PAID_PERCENT_SQL} <= j.unit_cap * 100
           AND ($6 = 0 OR (EXISTS (SELECT 1 FROM browser_bundles b WHERE b.component_digest = j.digest)
                           AND (SELECT COALESCE(SUM(js.size), 0) FROM job_shared js WHERE js.job_id = j.id) <= {MAX_BROWSER_SHARED_BYTES})){LEASE_FILTER_SQL}{accepted}"
    )
}

/// The conditions on unit `u` (of job `j`) for the provider the binds
/// describe (`$1` now, `$5` its id, `$8` untrusted, `$9` vouched): queued,
/// a replica still wanted, none of it this provider's, an untrusted key
/// only as a first replica of a unit that never failed, its failures
/// within the job's attempts (but for vouched hosts), its backoff waited
/// out, an allow-listed provider only as a first replica.
const UNIT_CONDITIONS_SQL: &str = "u.state = 'queued' AND u.retry_at_ms <= $1
           AND ($9 = 1 OR u.failures < j.max_attempts) AND ($8 = 0 OR u.failures = 0)
           AND (SELECT COUNT(*) FROM leases l WHERE l.job_id = u.job_id AND l.idx = u.idx AND l.state IN ('active', 'submitted', 'verifying', 'accepted')) < u.wanted
           AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.job_id = u.job_id AND l.idx = u.idx AND l.provider = $5)
           AND ($8 = 0 OR j.checked_by_verify = 1 OR NOT EXISTS (SELECT 1 FROM leases l WHERE l.job_id = u.job_id AND l.idx = u.idx AND l.state IN ('active', 'submitted', 'verifying')))";

fn candidate_sql(kind: Kind, from: &str, order: &str) -> String {
    let lock = if kind == Kind::Postgres {
        "FOR UPDATE OF u SKIP LOCKED"
    } else {
        ""
    };
    let job = job_conditions_sql();
    format!(
        "SELECT u.job_id AS job_id, u.idx AS idx, u.wanted AS wanted, u.input_digest AS input_digest, u.priority AS priority, u.queued_at_ms AS queued_at_ms, j.checked_by_verify AS checked {from}
         {UNIT_CONDITIONS_SQL} AND {job}{ALLOW_LISTED_FIRST_ONLY_SQL}
         ORDER BY {order} LIMIT 1 {lock}"
    )
}

/// The gated jobs (those that narrow who may run them: `jobs.gated`) with
/// a unit the provider may take now, and each one's first such unit
/// (`first`), the highest priority then the oldest first, at a priority at
/// least `$10` (the queue's best unit's for it), at most `tried`: found by
/// walking jobs (`jobs_gated`), each job's conditions read once, and its
/// units only through its own rows. Binds as [`lease_candidate_sql`], then
/// the floor.
fn gated_jobs_sql(tried: i64) -> String {
    let job = job_conditions_sql();
    format!(
        "SELECT g.id AS id, g.first AS first FROM (
           SELECT j.id AS id, j.priority AS priority, j.created_at_ms AS created_at_ms,
                  (SELECT MIN(u.idx) FROM units u WHERE u.job_id = j.id AND {UNIT_CONDITIONS_SQL}{ALLOW_LISTED_FIRST_ONLY_SQL}) AS first
           FROM jobs j WHERE j.gated = 1 AND j.priority >= $10 AND {job}) AS g
         WHERE g.first IS NOT NULL
         ORDER BY g.priority DESC, g.created_at_ms, g.id LIMIT {tried}"
    )
}

/// [`local_candidate_sql`] from unit `$12` on: a gated job's first unit
/// the provider may take, as [`gated_jobs_sql`] found it (on PostgreSQL
/// another replica may hold it: the next one then).
fn gated_candidate_sql(kind: Kind) -> String {
    candidate_sql(
        kind,
        "FROM units u JOIN jobs j ON j.id = u.job_id WHERE u.job_id = $10 AND u.priority >= $11 AND u.idx >= $12 AND",
        "u.idx",
    )
}

impl Jobs {
    /// The first unit `query` ([`lease_candidate_sql`], or
    /// [`local_candidate_sql`] with its job and priority floor) finds for
    /// `seeker`.
    async fn candidate(
        &self,
        tx: &mut Tx,
        query: &str,
        now: i64,
        seeker: &Seeker<'_>,
        local: Option<(&String, i64)>,
    ) -> Result<Option<AnyRow>, ApiError> {
        let query = seeker.bind(sqlx::query(query), now);
        Ok(match local {
            Some((job, floor)) => {
                query
                    .bind(job)
                    .bind(floor)
                    .fetch_optional(&mut **tx)
                    .await?
            }
            None => query.fetch_optional(&mut **tx).await?,
        })
    }

    /// The best unit of the gated jobs `seeker` may take at a priority at
    /// least `floor` ([`gated_jobs_sql`]), each job read from its first
    /// unit the provider may take. SQLite serializes leases, so that unit
    /// is there: one job is tried; on PostgreSQL, where other replicas may
    /// hold it (`SKIP LOCKED`), [`GATED_JOBS_TRIED`].
    async fn gated_candidate(
        &self,
        tx: &mut Tx,
        now: i64,
        seeker: &Seeker<'_>,
        floor: i64,
    ) -> Result<Option<AnyRow>, ApiError> {
        let tried = if self.db.kind == Kind::Postgres {
            GATED_JOBS_TRIED
        } else {
            1
        };
        let sql = gated_jobs_sql(tried);
        let jobs = seeker
            .bind(sqlx::query(&sql), now)
            .bind(floor)
            .fetch_all(&mut **tx)
            .await?;
        let within = gated_candidate_sql(self.db.kind);
        for row in &jobs {
            let (job, first): (String, i64) = (row.try_get("id")?, row.try_get("first")?);
            let unit = seeker
                .bind(sqlx::query(&within), now)
                .bind(&job)
                .bind(floor)
                .bind(first)
                .fetch_optional(&mut **tx)
                .await?;
            if unit.is_some() {
                return Ok(unit);
            }
        }
        Ok(None)
    }

    /// Lease one unit this provider can run, if any.
    pub async fn lease(&self, provider: &KeyId, now: i64) -> Result<Option<LeaseGrant>, ApiError> {
        let p = sqlx::query("SELECT p.*, (SELECT COUNT(*) FROM vouched v WHERE v.id = p.id) AS vouched FROM providers p WHERE p.id = $1")
            .bind(provider.as_str())
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or_else(|| ApiError::NotFound("register this provider first".into()))?;
        let info = self.provider_from(&p, now)?;
        if !info.online {
            return Err(ApiError::Invalid(
                "this provider's heartbeat is stale: send one first".into(),
            ));
        }
        let mut tx = self.db.write().await?;
        let running: i64 = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM leases WHERE provider = $1 AND state = 'active')
                  + (SELECT COUNT(*) FROM canary_runs WHERE provider = $1 AND state = 'active' AND expires_at_ms > $2) AS n",
        )
        .bind(provider.as_str())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        // A key trusted through confirmations (not the operator's own host)
        // holds no more units at once than it has confirmations: a key that
        // earned trust cheaply cannot cash it in on a burst of lone results
        // before a spot check catches it.
        let record = Record::of(&p)?;
        let cap = if record.trusted() && !record.vouched {
            (record.confirmed as i64).clamp(1, info.max_concurrent as i64)
        } else {
            info.max_concurrent as i64
        };
        if running >= cap {
            return Ok(None);
        }
        let seeker = Seeker {
            provider,
            has_gpu: !info.capabilities.gpus.is_empty(),
            browser: info.capabilities.kind == "browser",
            ask: info.ask,
            untrusted: !record.trusted(),
            vouched: record.vouched,
        };
        let (has_gpu, browser, untrusted) = (seeker.has_gpu, seeker.browser, seeker.untrusted);
        // The queue's best unit for this provider (highest bid, then
        // oldest); a unit of a job sharing an input it keeps comes first
        // when it pays as well (it crosses the network no more).
        let general = self
            .candidate(
                &mut tx,
                &lease_candidate_sql(self.db.kind),
                now,
                &seeker,
                None,
            )
            .await?;
        let floor: i64 = match &general {
            Some(unit) => unit.try_get("priority")?,
            None => 0,
        };
        let gated = self.gated_candidate(&mut tx, now, &seeker, floor).await?;
        let general = better(general, gated)?;
        let floor: i64 = match &general {
            Some(unit) => unit.try_get("priority")?,
            None => 0,
        };
        let local_jobs: Vec<String> = sqlx::query_scalar(LOCAL_JOBS_SQL)
            .bind(provider.as_str())
            .bind(LOCAL_JOBS_TRIED)
            .fetch_all(&mut *tx)
            .await?;
        let mut candidate = None;
        let local = local_candidate_sql(self.db.kind);
        for job in &local_jobs {
            candidate = self
                .candidate(&mut tx, &local, now, &seeker, Some((job, floor)))
                .await?;
            if candidate.is_some() {
                break;
            }
        }
        let candidate = candidate.or(general);
        // An untrusted provider's canaries come at random among its leases
        // (or when no buyer's unit fits it), not always first.
        if untrusted
            && (candidate.is_none() || rand_unit() < self.config.canary_chance)
            && let Some(grant) = self
                .lease_canary(&mut tx, provider, has_gpu, browser, now)
                .await?
        {
            tx.commit().await?;
            return Ok(Some(grant));
        }
        let Some(unit) = candidate else {
            return Ok(None);
        };
        let (job_id, idx): (String, i64) = (unit.try_get("job_id")?, unit.try_get("idx")?);
        // The unit row is locked now; recount under the lock with a fresh
        // statement (PostgreSQL re-checks a locked row's own columns but not
        // the subqueries of the statement that locked it).
        let fresh = sqlx::query(
            "SELECT u.wanted AS wanted,
               (SELECT COUNT(*) FROM leases l WHERE l.job_id = u.job_id AND l.idx = u.idx AND l.state IN ('active', 'submitted', 'verifying', 'accepted')) AS taken,
               (SELECT COUNT(*) FROM leases l WHERE l.job_id = u.job_id AND l.idx = u.idx AND l.provider = $3) AS mine,
               (SELECT COUNT(*) FROM leases l WHERE l.job_id = u.job_id AND l.idx = u.idx AND l.state IN ('active', 'submitted', 'verifying')) AS in_flight
             FROM units u WHERE u.job_id = $1 AND u.idx = $2",
        )
        .bind(&job_id)
        .bind(idx)
        .bind(provider.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let checked = unit.try_get::<i64, _>("checked")? == 1;
        // Only a first replica for an untrusted key, and (as the query
        // says: `ALLOW_LISTED_FIRST_ONLY_SQL`) for an allow-listed one,
        // looked up only when the unit has a run in flight.
        let first_only = fresh.try_get::<i64, _>("in_flight")? > 0
            && ((untrusted && !checked)
                || (!record.vouched
                    && sqlx::query(
                        "SELECT 1 AS one FROM provider_accepts WHERE provider = $1 AND allow = 1",
                    )
                    .bind(provider.as_str())
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some()));
        if fresh.try_get::<i64, _>("taken")? >= fresh.try_get::<i64, _>("wanted")?
            || fresh.try_get::<i64, _>("mine")? > 0
            || first_only
        {
            return Ok(None);
        }
        // A provider not yet trusted is confirmed by another replica (unless
        // the market checks each result with the package's `verify`); the
        // lease records that it asked, so its failure or lapse gives the
        // replica back (`release_confirming_replica`).
        let raises_quorum = untrusted && !checked && fresh.try_get::<i64, _>("wanted")? < 2;
        if raises_quorum {
            sqlx::query("UPDATE units SET wanted = 2, quorum = 2 WHERE job_id = $1 AND idx = $2")
                .bind(&job_id)
                .bind(idx)
                .execute(&mut *tx)
                .await?;
        }
        let job = sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(&job_id)
            .fetch_one(&mut *tx)
            .await?;
        // The run is paid the provider's ask times the bid in force.
        let bid = paid_percent(job.try_get::<i64, _>("priority")?);
        // Rounded up: a bid above 100 never pays the bare ask.
        let rate = |ask: u64| (ask * bid).div_ceil(100) as i64;
        let lease_id = random_id('l', 12);
        let deadline = now + job.try_get::<i64, _>("timeout_ms")? + LEASE_GRACE_MS;
        let expires = (now + self.config.lease_ttl_ms).min(deadline);
        sqlx::query(
            "INSERT INTO leases (id, job_id, idx, provider, state, expires_at_ms, created_at_ms, deadline_ms, ask_per_billion_fuel, ask_per_gpu_second, ask_per_wall_second, metered, trusted, raised_quorum, device_class)
             VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&lease_id)
        .bind(&job_id)
        .bind(idx)
        .bind(provider.as_str())
        .bind(expires)
        .bind(now)
        .bind(deadline)
        .bind(rate(info.ask.per_billion_fuel))
        .bind(rate(info.ask.per_gpu_second))
        .bind(rate(info.ask.per_wall_second))
        .bind(!browser as i64)
        .bind(!untrusted as i64)
        .bind(raises_quorum as i64)
        .bind(&info.device_class)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let shared = self.shared_of(&job_id).await?;
        Ok(Some(LeaseGrant {
            lease_id,
            job_id,
            unit: idx as u32,
            package: job.try_get("package")?,
            version: job.try_get("version")?,
            digest: job.try_get("digest")?,
            input_digest: unit.try_get("input_digest")?,
            limits: unit_limits_of(&job)?,
            expires_at_ms: expires,
            shared,
        }))
    }
}
