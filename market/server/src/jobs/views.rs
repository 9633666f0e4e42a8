//! What buyers read: a job with its units and cost, a buyer's jobs, and
//! verified outputs.

use super::*;
use agora_wire::api::{JobSummary, Page};

/// Most jobs in one page of a buyer's list.
pub const MAX_JOBS_PER_PAGE: u32 = 100;

impl Jobs {
    pub async fn info(&self, id: &str) -> Result<JobInfo, ApiError> {
        let job = sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no job `{id}`")))?;
        let units = sqlx::query(
            "SELECT u.*, CAST(LENGTH(b.bytes) AS BIGINT) AS output_bytes FROM units u LEFT JOIN blobs b ON b.digest = u.output_digest WHERE u.job_id = $1 ORDER BY u.idx",
        )
        .bind(id)
        .fetch_all(&self.db.pool)
        .await?;
        let leases = sqlx::query("SELECT idx, state, cost, paid, output_digest, progress_done, progress_total FROM leases WHERE job_id = $1")
            .bind(id)
            .fetch_all(&self.db.pool)
            .await?;
        let max_price = job.try_get::<i64, _>("max_price")? as u64;
        let state = match job.try_get::<String, _>("state")?.as_str() {
            "done" => JobState::Done,
            "failed" => JobState::Failed,
            "expired" => JobState::Expired,
            _ => JobState::Running,
        };
        let deleted_at: Option<i64> = job.try_get("data_deleted_at_ms")?;
        let deleted = deleted_at.is_some();
        let fee_bps = self.config.fee_bps;
        let mut cost = CostBreakdown::default();
        let mut spent = 0u64;
        for l in &leases {
            if l.try_get::<i64, _>("paid")? == 1 {
                let c = l.try_get::<Option<i64>, _>("cost")?.unwrap_or(0) as u64;
                let fee = c * fee_bps / 10_000;
                cost.fees += fee;
                cost.paid_to_providers += c - fee;
                spent += c;
            }
        }
        if state == JobState::Running {
            cost.held = max_price - spent;
        } else {
            cost.refunded = max_price - spent;
        }
        // Each unit's leases, found in one pass: O(units + leases).
        let mut by_unit: std::collections::HashMap<i64, Vec<&AnyRow>> = std::collections::HashMap::new();
        for l in &leases {
            by_unit.entry(l.try_get("idx")?).or_default().push(l);
        }
        let mut unit_infos = Vec::new();
        for u in &units {
            let idx: i64 = u.try_get("idx")?;
            let mine = by_unit.remove(&idx).unwrap_or_default();
            let stored: String = u.try_get("state")?;
            let in_state = |l: &&AnyRow, state: &str| l.try_get::<String, _>("state").ok().as_deref() == Some(state);
            let running: Vec<&&AnyRow> = mine.iter().filter(|l| in_state(l, "active")).collect();
            let unit_state = match stored.parse::<UnitState>().map_err(|e| ApiError::Internal(e.to_string()))? {
                UnitState::Queued if !running.is_empty() => UnitState::Running,
                UnitState::Queued if mine.iter().any(|l| in_state(l, "verifying")) => UnitState::Verifying,
                other => other,
            };
            // The furthest running replica.
            let progress = running
                .iter()
                .filter_map(|l| {
                    let done = l.try_get::<Option<i64>, _>("progress_done").ok().flatten()?;
                    let total = l.try_get::<Option<i64>, _>("progress_total").ok().flatten()?;
                    Some(Progress { done: done as u64, total: total as u64 })
                })
                .max_by_key(|p| (p.done as u128 * 1_000_000).checked_div(p.total as u128).unwrap_or(0));
            let output_digest: Option<String> = u.try_get("output_digest")?;
            // Once the data is deleted, whether someone else still holds
            // the same bytes is nobody's business here.
            let output_bytes = match deleted {
                true => None,
                false => u.try_get::<Option<i64>, _>("output_bytes")?.map(|n| n as u64),
            };
            let unit_cost: u64 = mine
                .iter()
                .filter(|l| l.try_get::<i64, _>("paid").ok() == Some(1))
                .map(|l| l.try_get::<Option<i64>, _>("cost").ok().flatten().unwrap_or(0) as u64)
                .sum();
            unit_infos.push(UnitInfo {
                index: idx as u32,
                state: unit_state,
                attempts: mine.len() as u32,
                output_digest,
                output_bytes,
                cost: (unit_cost > 0).then_some(unit_cost),
                message: u.try_get("message")?,
                progress,
            });
        }
        Ok(JobInfo {
            id: id.into(),
            buyer: job.try_get("buyer")?,
            package: job.try_get("package")?,
            version: job.try_get("version")?,
            digest: job.try_get("digest")?,
            state,
            replicas: job.try_get::<i64, _>("replicas")? as u32,
            max_price,
            units: unit_infos,
            cost,
            created_at_ms: job.try_get("created_at_ms")?,
            data_deleted_at_ms: deleted_at,
            data_kept_until_ms: match (state, deleted_at) {
                (JobState::Running, _) | (_, Some(_)) => None,
                _ => job.try_get::<Option<i64>, _>("finished_at_ms")?.map(|at| at.saturating_add(self.config.data_retention_ms)),
            },
        })
    }

    /// A buyer's jobs, newest first, a page of at most [`MAX_JOBS_PER_PAGE`].
    pub async fn jobs_of(&self, buyer: &str, page: u32, per_page: u32) -> Result<Page<JobSummary>, ApiError> {
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
                    state: r.try_get::<String, _>("state")?.parse().map_err(|e| ApiError::Internal(format!("a stored job's {e}")))?,
                    units: r.try_get::<i64, _>("units")? as u32,
                    units_verified: r.try_get::<i64, _>("verified")? as u32,
                    max_price: r.try_get::<i64, _>("max_price")? as u64,
                    created_at_ms: r.try_get("created_at_ms")?,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let total: i64 = sqlx::query("SELECT COUNT(*) AS n FROM jobs WHERE buyer = $1").bind(buyer).fetch_one(&self.db.pool).await?.try_get("n")?;
        Ok(Page { items, page, per_page, total: total as u64 })
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
    /// job with a unit of that input, or a provider holding a live lease (a
    /// buyer's or a canary's) on such a unit. Anyone else meets the same "not
    /// found" as for a digest nobody has, so a probe learns nothing; a
    /// canary's expected output is readable by no one here.
    pub async fn may_read_input(&self, caller: &KeyId, digest: &str, now: i64) -> Result<(), ApiError> {
        let readable = sqlx::query(
            "SELECT 1 FROM units u JOIN jobs j ON j.id = u.job_id WHERE u.input_digest = $2 AND j.buyer = $1 AND j.data_deleted_at_ms IS NULL
             UNION ALL
             SELECT 1 FROM leases l JOIN units u ON u.job_id = l.job_id AND u.idx = l.idx
              WHERE l.provider = $1 AND l.state = 'active' AND l.expires_at_ms > $3 AND u.input_digest = $2
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

    pub async fn blob(&self, digest: &str) -> Result<Vec<u8>, ApiError> {
        crate::blobs::read(&self.db.pool, digest).await
    }

    /// The digest of the verified output of unit `idx`: gone once the
    /// job's data is deleted.
    pub async fn output_digest(&self, job: &str, idx: u32) -> Result<String, ApiError> {
        let row = sqlx::query(
            "SELECT u.output_digest AS output_digest, j.data_deleted_at_ms AS deleted FROM units u JOIN jobs j ON j.id = u.job_id
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
        Ok(row.try_get::<String, _>("output_digest")?)
    }
}
