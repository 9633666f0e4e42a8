//! The sweeper: expires lost leases (their units go back to the queue and
//! their providers are marked) and settles the jobs that are due.
//!
//! Design choice: every item on its own. A job whose settlement fails is
//! logged, counted, and set aside with a growing back-off; a lease that
//! fails to expire is logged and counted; the sweep goes on.

use super::Jobs;
use crate::error::ApiError;
use sqlx::Row;

/// The first back-off of a job whose settlement failed; it doubles with
/// each failure up to [`MAX_SETTLE_BACKOFF_MS`].
pub const SETTLE_BACKOFF_MS: i64 = 60_000;
/// The longest a failing job waits between settlement attempts.
pub const MAX_SETTLE_BACKOFF_MS: i64 = 3_600_000;
/// Lost leases expired per sweep.
const LEASES_PER_SWEEP: i64 = 500;
/// Jobs settled per sweep.
const JOBS_PER_SWEEP: i64 = 200;

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub leases_expired: u64,
    pub jobs_settled: u64,
    /// Items that failed and were set aside.
    pub failures: u64,
}

impl Jobs {
    /// Expire lost leases (the unit becomes leasable again) and settle jobs
    /// that are due. A failing item is logged, counted and set aside; the
    /// sweep goes on.
    pub async fn sweep(&self, now: i64) -> Result<SweepReport, ApiError> {
        let mut report = SweepReport::default();
        for (table, key) in super::LEASE_TABLES {
            let lost = sqlx::query(&format!("SELECT {key} AS id, provider FROM {table} WHERE state = 'active' AND expires_at_ms <= $1 LIMIT $2"))
                .bind(now)
                .bind(LEASES_PER_SWEEP)
                .fetch_all(&self.db.pool)
                .await?;
            for lease in lost {
                let (id, provider): (String, String) =
                    (lease.try_get("id")?, lease.try_get("provider")?);
                let expired = match table {
                    "leases" => self.expire_buyers_lease(&id, now).await,
                    _ => self.expire_lease(table, key, &id, &provider, now).await,
                };
                match expired {
                    Ok(true) => report.leases_expired += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(lease = id, "expiring a lost lease failed: {e}");
                        report.failures += 1;
                    }
                }
            }
        }
        let due: Vec<String> = sqlx::query(
            "SELECT id FROM jobs WHERE state = 'running' AND settle_after_ms <= $1
                AND (expires_at_ms <= $1 OR NOT EXISTS (SELECT 1 FROM units u WHERE u.job_id = jobs.id AND u.state = 'queued')
                     OR EXISTS (SELECT 1 FROM leases l WHERE l.job_id = jobs.id AND l.state IN ('accepted', 'billed') AND l.paid = 0))
             UNION SELECT id FROM jobs WHERE state <> 'running' AND settle_after_ms <= $1
                AND EXISTS (SELECT 1 FROM leases l WHERE l.job_id = jobs.id AND l.state IN ('accepted', 'billed') AND l.paid = 0)
             LIMIT $2",
        )
        .bind(now)
        .bind(JOBS_PER_SWEEP)
        .fetch_all(&self.db.pool)
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()?;
        for job in due {
            match self.settle(&job, now).await {
                Ok(()) => report.jobs_settled += 1,
                Err(e) => {
                    report.failures += 1;
                    self.set_aside(&job, &e, now).await;
                }
            }
        }
        Ok(report)
    }

    /// Expire one lost lease of `table` (a canary's) and mark its provider.
    /// A heartbeat that renewed it since it was read keeps it.
    pub(super) async fn expire_lease(
        &self,
        table: &str,
        key: &str,
        id: &str,
        provider: &str,
        now: i64,
    ) -> Result<bool, ApiError> {
        let done = sqlx::query(&format!("UPDATE {table} SET state = 'expired' WHERE {key} = $1 AND state = 'active' AND expires_at_ms <= $2"))
            .bind(id)
            .bind(now)
            .execute(&self.db.pool)
            .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        self.mark(provider, super::Mark::LostLease).await?;
        Ok(true)
    }

    /// Expire one lost lease of a buyer's job, under the job's lock, in one
    /// transaction: the lease, its provider's mark, and the confirming
    /// replica it asked for given back (a trusted result already in is
    /// decided then, and paid by this sweep's settlement).
    async fn expire_buyers_lease(&self, id: &str, now: i64) -> Result<bool, ApiError> {
        let mut tx = self.db.write().await?;
        let Some(lease) = sqlx::query("SELECT job_id, idx, provider FROM leases WHERE id = $1 AND state = 'active' AND expires_at_ms <= $2")
            .bind(id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(false);
        };
        let (job, idx, provider): (String, i64, String) = (
            lease.try_get("job_id")?,
            lease.try_get("idx")?,
            lease.try_get("provider")?,
        );
        super::settle::lock_job(&mut tx, self.db.kind, &job).await?;
        let done = sqlx::query("UPDATE leases SET state = 'expired' WHERE id = $1 AND state = 'active' AND expires_at_ms <= $2")
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        let mut marks = self
            .release_confirming_replica(&mut tx, id, &job, idx)
            .await?;
        marks.push((provider, super::Mark::LostLease));
        Self::mark_all(&mut tx, marks).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Record a failed settlement on the job and keep it out of the next
    /// sweeps for a while (doubling, up to an hour).
    pub(super) async fn set_aside(&self, job: &str, error: &ApiError, now: i64) {
        let detail = match error {
            ApiError::Internal(detail) => detail.clone(),
            other => other.to_string(),
        };
        tracing::warn!(job, "settling failed, set aside: {detail}");
        let failures: i64 = sqlx::query("SELECT settle_failures FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_optional(&self.db.pool)
            .await
            .ok()
            .flatten()
            .and_then(|r| r.try_get("settle_failures").ok())
            .unwrap_or(0);
        let backoff = SETTLE_BACKOFF_MS
            .saturating_mul(1 << failures.clamp(0, 16))
            .min(MAX_SETTLE_BACKOFF_MS);
        let recorded = sqlx::query("UPDATE jobs SET settle_failures = settle_failures + 1, settle_error = $1, settle_after_ms = $2 WHERE id = $3")
            .bind(detail.chars().take(2000).collect::<String>())
            .bind(now + backoff)
            .bind(job)
            .execute(&self.db.pool)
            .await;
        if let Err(e) = recorded {
            tracing::warn!(job, "recording the failed settlement failed too: {e}");
        }
    }
}
