//! What buyers read: a job with its units and cost, a buyer's jobs, and
//! verified outputs.

use super::*;
use crate::db::Text;
use agora_wire::api::{JobSummary, Page, SharedBlob, UnitCounts, UnitsQuery};

/// Most jobs in one page of a buyer's list.
pub const MAX_JOBS_PER_PAGE: u32 = 100;

/// How a reader sees a unit's state: a queued unit that a provider runs is
/// running, one whose result waits for the market's verifiers is verifying.
/// One expression for the counts and the pages, so they never disagree.
const SHOWN_STATE: &str = "CASE
    WHEN u.state = 'queued' AND EXISTS (SELECT 1 FROM leases l WHERE l.job_id = u.job_id AND l.idx = u.idx AND l.state = 'active') THEN 'running'
    WHEN u.state = 'queued' AND EXISTS (SELECT 1 FROM leases l WHERE l.job_id = u.job_id AND l.idx = u.idx AND l.state = 'verifying') THEN 'verifying'
    ELSE u.state END";

#[derive(sqlx::FromRow)]
struct JobRow {
    buyer: String,
    package: String,
    version: String,
    digest: String,
    state: Text<JobState>,
    replicas: i64,
    max_price: i64,
    created_at_ms: i64,
    expires_at_ms: i64,
    finished_at_ms: Option<i64>,
    data_deleted_at_ms: Option<i64>,
    bid_percent: i64,
    priority: i64,
    max_attempts: i64,
    retry_own_failures: i64,
    backoff_ms: i64,
}

#[derive(sqlx::FromRow)]
struct UnitRow {
    idx: i64,
    shown: Text<UnitState>,
    output_digest: Option<String>,
    output_bytes: Option<i64>,
    outputs: Option<String>,
    message: Option<String>,
}

#[derive(sqlx::FromRow)]
struct LeaseRow {
    idx: i64,
    state: String,
    cost: Option<i64>,
    paid: i64,
    progress_done: Option<i64>,
    progress_total: Option<i64>,
}

impl Jobs {
    /// A job with the first page of its units.
    pub async fn info(&self, id: &str) -> Result<JobInfo, ApiError> {
        self.info_page(id, UnitsQuery::default()).await
    }

    /// A job with one page of its units: the job, its unit counts and its
    /// cost are read by aggregates (a scan of the job's units and leases in
    /// the database, at most `MAX_UNITS` of them), the page's units and
    /// their leases by index range, so no answer grows past a page.
    pub async fn info_page(&self, id: &str, page: UnitsQuery) -> Result<JobInfo, ApiError> {
        let job = sqlx::query_as::<_, JobRow>(
            "SELECT buyer, package, version, digest, state, replicas, max_price, created_at_ms, expires_at_ms, finished_at_ms, data_deleted_at_ms, bid_percent, priority, max_attempts, retry_own_failures, backoff_ms FROM jobs WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job `{id}`")))?;
        let state = job.state.0;
        let counts = self.unit_counts(id).await?;
        let (from, limit) = (page.units_from, page.limit());
        let units = self
            .units_page(id, from, limit, job.data_deleted_at_ms.is_some())
            .await?;
        let next = from.checked_add(limit).filter(|next| *next < counts.total);
        let max_price = job.max_price as u64;
        let (spent, fees) = self.spent_on(id).await?;
        let broken = || {
            ApiError::Internal(format!(
                "job {id} paid {spent} ({fees} in fees) of a cap of {max_price}"
            ))
        };
        let left = max_price.checked_sub(spent).ok_or_else(broken)?;
        let mut cost = CostBreakdown {
            fees,
            paid_to_providers: spent.checked_sub(fees).ok_or_else(broken)?,
            ..CostBreakdown::default()
        };
        match state {
            JobState::Running => cost.held = left,
            _ => cost.refunded = left,
        }
        Ok(JobInfo {
            id: id.into(),
            buyer: job.buyer,
            package: job.package,
            version: job.version,
            digest: job.digest,
            state,
            replicas: job.replicas as u32,
            max_price,
            units,
            unit_counts: counts,
            units_next: next,
            cost,
            created_at_ms: job.created_at_ms,
            expires_at_ms: job.expires_at_ms,
            bid_percent: job.bid_percent.clamp(0, u32::MAX as i64) as u32,
            priority: job.priority.clamp(0, u32::MAX as i64) as u32,
            retry: agora_wire::api::RetryPolicy {
                max_attempts: Some(job.max_attempts.clamp(0, u32::MAX as i64) as u32),
                retry_own_failures: Some(job.retry_own_failures == 1),
                backoff_ms: Some(job.backoff_ms.max(0) as u64),
            },
            data_deleted_at_ms: job.data_deleted_at_ms,
            data_kept_until_ms: match (state, job.data_deleted_at_ms) {
                (JobState::Running, _) | (_, Some(_)) => None,
                _ => job
                    .finished_at_ms
                    .map(|at| at.saturating_add(self.config.data_retention_ms)),
            },
            shared: self.shared_of(id).await?,
        })
    }

    /// How many of the job's units are in each state.
    async fn unit_counts(&self, id: &str) -> Result<UnitCounts, ApiError> {
        let rows: Vec<(Text<UnitState>, i64)> = sqlx::query_as(&format!(
            "SELECT shown, COUNT(*) AS n FROM (SELECT {SHOWN_STATE} AS shown FROM units u WHERE u.job_id = $1) AS s GROUP BY shown"
        ))
        .bind(id)
        .fetch_all(&self.db.pool)
        .await?;
        let mut counts = UnitCounts::default();
        for (shown, n) in rows {
            counts.count(shown.0, n as u32);
        }
        Ok(counts)
    }

    /// What the job's paid leases cost together, and the market's fees in
    /// it (each lease's fee as [`JobsConfig::fee_of`] takes it).
    async fn spent_on(&self, id: &str) -> Result<(u64, u64), ApiError> {
        let (spent, fees): (i64, i64) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(cost), 0) AS BIGINT), CAST(COALESCE(SUM(cost * $2 / 10000), 0) AS BIGINT) FROM leases WHERE job_id = $1 AND paid = 1",
        )
        .bind(id)
        .bind(self.config.fee_bps as i64)
        .fetch_one(&self.db.pool)
        .await?;
        Ok((spent as u64, fees as u64))
    }

    /// Units `from..from + limit` with what their leases say: attempts, the
    /// paid cost and the furthest running replica's progress.
    async fn units_page(
        &self,
        id: &str,
        from: u32,
        limit: u32,
        deleted: bool,
    ) -> Result<Vec<UnitInfo>, ApiError> {
        let end = from as i64 + limit as i64;
        let units = sqlx::query_as::<_, UnitRow>(&format!(
            "SELECT u.idx, {SHOWN_STATE} AS shown, u.output_digest, u.outputs, u.message, b.size AS output_bytes
             FROM units u LEFT JOIN blobs b ON b.digest = u.output_digest
             WHERE u.job_id = $1 AND u.idx >= $2 AND u.idx < $3 ORDER BY u.idx"
        ))
        .bind(id)
        .bind(from as i64)
        .bind(end)
        .fetch_all(&self.db.pool)
        .await?;
        let leases = sqlx::query_as::<_, LeaseRow>(
            "SELECT idx, state, cost, paid, progress_done, progress_total FROM leases WHERE job_id = $1 AND idx >= $2 AND idx < $3",
        )
        .bind(id)
        .bind(from as i64)
        .bind(end)
        .fetch_all(&self.db.pool)
        .await?;
        let mut by_unit: std::collections::HashMap<i64, Vec<LeaseRow>> =
            std::collections::HashMap::new();
        for l in leases {
            by_unit.entry(l.idx).or_default().push(l);
        }
        units
            .into_iter()
            .map(|u| {
                let mine = by_unit.remove(&u.idx).unwrap_or_default();
                let cost: i64 = mine
                    .iter()
                    .filter(|l| l.paid == 1)
                    .filter_map(|l| l.cost)
                    .sum();
                Ok(UnitInfo {
                    index: u.idx as u32,
                    state: u.shown.0,
                    attempts: mine.len() as u32,
                    progress: furthest_running(&mine),
                    output_digest: u.output_digest,
                    // Once the data is deleted, whether someone else still
                    // holds the same bytes is nobody's business here.
                    output_bytes: u.output_bytes.filter(|_| !deleted).map(|n| n as u64),
                    outputs: super::outputs::read_manifest(u.outputs.as_deref()),
                    cost: (cost > 0).then_some(cost as u64),
                    message: u.message,
                })
            })
            .collect()
    }

    /// A buyer's jobs, newest first, a page of at most [`MAX_JOBS_PER_PAGE`].
    pub async fn jobs_of(
        &self,
        buyer: &str,
        page: u32,
        per_page: u32,
    ) -> Result<Page<JobSummary>, ApiError> {
        let per_page = per_page.clamp(1, MAX_JOBS_PER_PAGE);
        let rows = sqlx::query(
            // The page's jobs first (on the buyer's index), then their units
            // counted: never for the rows a deep page skips.
            "SELECT j.id AS id, j.package AS package, j.version AS version, j.state AS state, j.max_price AS max_price, j.created_at_ms AS created_at_ms,
                (SELECT COUNT(*) FROM units u WHERE u.job_id = j.id) AS units,
                (SELECT COUNT(*) FROM units u WHERE u.job_id = j.id AND u.state = 'verified') AS verified
             FROM (SELECT * FROM jobs WHERE buyer = $1 ORDER BY created_at_ms DESC LIMIT $2 OFFSET $3) AS j
             ORDER BY j.created_at_ms DESC",
        )
        .bind(buyer)
        .bind(per_page as i64)
        .bind(page as i64 * per_page as i64)
        .fetch_all(&self.db.pool)
        .await?;
        let items = rows
            .iter()
            .map(|r| {
                Ok(JobSummary {
                    id: r.try_get("id")?,
                    package: r.try_get("package")?,
                    version: r.try_get("version")?,
                    state: r
                        .try_get::<String, _>("state")?
                        .parse()
                        .map_err(|e| ApiError::Internal(format!("a stored job's {e}")))?,
                    units: r.try_get::<i64, _>("units")? as u32,
                    units_verified: r.try_get::<i64, _>("verified")? as u32,
                    max_price: r.try_get::<i64, _>("max_price")? as u64,
                    created_at_ms: r.try_get("created_at_ms")?,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let total: i64 = sqlx::query("SELECT COUNT(*) AS n FROM jobs WHERE buyer = $1")
            .bind(buyer)
            .fetch_one(&self.db.pool)
            .await?
            .try_get("n")?;
        Ok(Page {
            items,
            page,
            per_page,
            total: total as u64,
        })
    }

    pub async fn buyer_of(&self, job: &str) -> Result<String, ApiError> {
        sqlx::query("SELECT buyer FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_optional(&self.db.pool)
            .await?
            .map(|r| r.try_get("buyer"))
            .transpose()?
            .ok_or_else(|| ApiError::NotFound(format!("no job `{job}`")))
    }

    /// Whether `caller` may read unit input `digest`: the buyer of a
    /// job with a unit or shared input of that digest, an account holding it
    /// (it uploaded it), or a provider holding a live lease (a buyer's or a
    /// canary's) on a unit with that input or of a job sharing it. Anyone else meets the same "not
    /// found" as for a digest nobody has, so a probe learns nothing; a
    /// canary's expected output is readable by no one here.
    pub async fn may_read_input(
        &self,
        caller: &KeyId,
        digest: &str,
        now: i64,
    ) -> Result<(), ApiError> {
        let readable = sqlx::query(
            "SELECT 1 FROM units u JOIN jobs j ON j.id = u.job_id WHERE u.input_digest = $2 AND j.buyer = $1 AND j.data_deleted_at_ms IS NULL
             UNION ALL
             SELECT 1 FROM leases l JOIN units u ON u.job_id = l.job_id AND u.idx = l.idx
              WHERE l.provider = $1 AND l.state = 'active' AND l.expires_at_ms > $3 AND u.input_digest = $2
             UNION ALL
             SELECT 1 FROM holdings h WHERE h.account = $1 AND h.digest = $2
             UNION ALL
             SELECT 1 FROM job_shared s JOIN jobs j ON j.id = s.job_id WHERE s.digest = $2 AND j.buyer = $1 AND j.data_deleted_at_ms IS NULL
             UNION ALL
             SELECT 1 FROM leases l JOIN job_shared s ON s.job_id = l.job_id
              WHERE l.provider = $1 AND l.state = 'active' AND l.expires_at_ms > $3 AND s.digest = $2
             UNION ALL
             SELECT 1 FROM canary_runs r JOIN canaries c ON c.id = r.canary_id
              WHERE r.provider = $1 AND r.state = 'active' AND r.expires_at_ms > $3 AND c.input_digest = $2
             LIMIT 1",
        )
        .bind(caller.as_str())
        .bind(digest)
        .bind(now)
        .fetch_optional(&self.db.pool)
        .await?;
        match readable {
            Some(_) => Ok(()),
            None => Err(ApiError::NotFound(format!("no blob {digest}"))),
        }
    }

    /// The shared inputs of job `job`, by name.
    pub async fn shared_of(&self, job: &str) -> Result<Vec<SharedBlob>, ApiError> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT name, digest, size FROM job_shared WHERE job_id = $1 ORDER BY name",
        )
        .bind(job)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, digest, size)| SharedBlob {
                name,
                digest,
                size: size as u64,
            })
            .collect())
    }

    pub async fn blob(&self, digest: &str) -> Result<Vec<u8>, ApiError> {
        crate::blobs::read(&self.db, digest).await
    }

    /// The digest of the verified output of unit `idx`, the one `run`
    /// returned or the one named `name`: gone once the job's data is
    /// deleted.
    pub async fn output_digest(
        &self,
        job: &str,
        idx: u32,
        name: Option<&str>,
    ) -> Result<String, ApiError> {
        let row = sqlx::query(
            "SELECT u.output_digest AS output_digest, u.outputs AS outputs, j.data_deleted_at_ms AS deleted FROM units u JOIN jobs j ON j.id = u.job_id
             WHERE u.job_id = $1 AND u.idx = $2 AND u.state = 'verified'",
        )
        .bind(job)
        .bind(idx as i64)
        .fetch_optional(&self.db.pool)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("unit {idx} of {job} has no verified output")))?;
        if row.try_get::<Option<i64>, _>("deleted")?.is_some() {
            return Err(ApiError::Gone(format!("the data of job {job} was deleted")));
        }
        let Some(name) = name else {
            return Ok(row.try_get::<String, _>("output_digest")?);
        };
        super::outputs::read_manifest(row.try_get::<Option<String>, _>("outputs")?.as_deref())
            .into_iter()
            .find(|o| o.name == name)
            .map(|o| o.digest)
            .ok_or_else(|| {
                ApiError::NotFound(format!("unit {idx} of {job} has no output named `{name}`"))
            })
    }
}

/// The progress of the furthest running replica among a unit's leases.
fn furthest_running(leases: &[LeaseRow]) -> Option<Progress> {
    leases
        .iter()
        .filter(|l| l.state == "active")
        .filter_map(|l| {
            Some(Progress {
                done: l.progress_done? as u64,
                total: l.progress_total? as u64,
            })
        })
        .max_by_key(|p| {
            (p.done as u128 * 1_000_000)
                .checked_div(p.total as u128)
                .unwrap_or(0)
        })
}
