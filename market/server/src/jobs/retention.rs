//! A job's data after the job: its units' inputs and outputs and its log
//! lines are kept for [`JobsConfig::data_retention_ms`] after it ends, or
//! until its buyer deletes them, then collected. What money needs stays:
//! the job, its units and leases (digests, costs, signatures), its transfers.
//!
//! Data goes only once nothing can still need it: the job has ended, no
//! lease of it is running or waiting for its verdict, and every accepted
//! result is paid. Before that a deletion is refused (409) and a due
//! collection waits for a later sweep.
//!
//! Two steps, so no transaction is longer than a batch: the job is marked
//! (from then on nobody reads its data), then its log lines and blobs are
//! collected in batches of [`COLLECT_BATCH`], each its own transaction,
//! right after a buyer's deletion and by the sweep for any job marked but
//! not yet collected (after a crash too: a collection is idempotent).

use super::*;
use crate::blobs;

/// How long a job's data is kept after it ends, unless its buyer deletes
/// it sooner: a week to fetch outputs and read logs.
pub const DATA_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;
/// Jobs whose data a sweep marks, and jobs it collects.
const COLLECTIONS_PER_SWEEP: i64 = 20;
/// Batches a sweep spends collecting, all jobs together (and a buyer's
/// deletion before it answers): the sweep also expires holds and settles
/// jobs, so a huge deletion is spread over many sweeps.
pub const COLLECT_BATCHES_PER_SWEEP: u32 = 64;
/// Blobs looked at, or log lines deleted, per transaction of a collection:
/// short enough that a writer waiting on SQLite's lock barely notices.
pub const COLLECT_BATCH: i64 = 256;

/// The condition, on `jobs j`, that nothing can still need the job's data.
const DATA_DELETABLE: &str = "j.state <> 'running' AND j.data_deleted_at_ms IS NULL
    AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.job_id = j.id
                    AND (l.state IN ('active', 'verifying') OR (l.state IN ('accepted', 'billed') AND l.paid = 0)))";

impl Jobs {
    /// Delete the data of job `id` now (its buyer's or the operator's
    /// request; the route checks who asks). Deleting twice is not an error.
    pub async fn delete_data(&self, id: &str, now: i64) -> Result<i64, ApiError> {
        let mut tx = self.db.write().await?;
        let job = sqlx::query("SELECT state, data_deleted_at_ms FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no job `{id}`")))?;
        if let Some(at) = job.try_get::<Option<i64>, _>("data_deleted_at_ms")? {
            return Ok(at);
        }
        if !self.mark_deleted(&mut tx, id, now).await? {
            let state: String = job.try_get("state")?;
            let why = if state == "running" {
                "it is still running"
            } else {
                "results of it are still being checked or paid"
            };
            return Err(ApiError::NotYet(format!(
                "the data of job `{id}` cannot be deleted yet: {why}"
            )));
        }
        tx.commit().await?;
        // Nobody reads it any more; the sweep finishes what is left.
        if let Err(e) = self.collect_job(id, COLLECT_BATCHES_PER_SWEEP).await {
            tracing::warn!(
                job = id,
                "collecting a deleted job's data failed (the sweep will): {e}"
            );
        }
        Ok(now)
    }

    /// Collect the data of jobs that ended more than the retention period
    /// ago. Each job on its own: a failure is logged and counted.
    pub async fn collect_expired_data(&self, now: i64) -> Result<(u64, u64), ApiError> {
        let due: Vec<String> =
            sqlx::query_scalar(&format!("SELECT j.id FROM jobs j WHERE j.data_deleted_at_ms IS NULL AND j.finished_at_ms <= $1 AND {DATA_DELETABLE} LIMIT $2"))
                .bind(now - self.config.data_retention_ms)
                .bind(COLLECTIONS_PER_SWEEP)
                .fetch_all(&self.db.pool)
                .await?;
        let (mut collected, mut failures) = (0, 0);
        for id in due {
            let marked = async {
                let mut tx = self.db.write().await?;
                let marked = self.mark_deleted(&mut tx, &id, now).await?;
                tx.commit().await?;
                Ok::<_, ApiError>(marked)
            };
            if let Err(e) = marked.await {
                tracing::warn!(job = id, "marking an old job's data deleted failed: {e}");
                failures += 1;
            }
        }
        // Oldest first, each with a share of the sweep's batches: a job that
        // fails every time costs its share, and the others still get theirs.
        let marked: Vec<String> =
            sqlx::query_scalar("SELECT id FROM jobs WHERE data_collected = 0 AND data_deleted_at_ms IS NOT NULL ORDER BY data_deleted_at_ms LIMIT $1")
                .bind(COLLECTIONS_PER_SWEEP)
                .fetch_all(&self.db.pool)
                .await?;
        let mut budget = COLLECT_BATCHES_PER_SWEEP;
        for id in marked {
            if budget == 0 {
                break;
            }
            let share = (budget / 2).max(1);
            budget -= share;
            match self.collect_job(&id, share).await {
                Ok(done) => collected += u64::from(done),
                Err(e) => {
                    tracing::warn!(job = id, "collecting a deleted job's data failed: {e}");
                    failures += 1;
                }
            }
        }
        Ok((collected, failures))
    }

    /// Mark job `id`'s data deleted if nothing needs it: from then on no
    /// route serves it. False when it is still needed (or already gone).
    async fn mark_deleted(&self, tx: &mut Tx, id: &str, now: i64) -> Result<bool, ApiError> {
        let marked = sqlx::query(&format!(
            "UPDATE jobs SET data_deleted_at_ms = $2, data_collected = 0 WHERE id = $1 AND id IN (SELECT j.id FROM jobs j WHERE j.id = $1 AND {DATA_DELETABLE})"
        ))
        .bind(id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        Ok(marked.rows_affected() > 0)
    }

    /// Delete the log lines of marked job `id`, and every blob of it no
    /// kept job names, a batch per transaction, at most `batches` of them:
    /// where it stopped is kept in the job (`data_collect_after`, the last
    /// digest looked at), so the next call goes on from there. True once
    /// everything is collected.
    async fn collect_job(&self, id: &str, batches: u32) -> Result<bool, ApiError> {
        for _ in 0..batches {
            let mut tx = self.db.write().await?;
            let gone = sqlx::query("DELETE FROM unit_logs WHERE seq IN (SELECT seq FROM unit_logs WHERE job_id = $1 ORDER BY seq LIMIT $2)")
                .bind(id)
                .bind(COLLECT_BATCH)
                .execute(&mut *tx)
                .await?;
            if gone.rows_affected() > 0 {
                tx.commit().await?;
                continue;
            }
            // No lines left: the blobs, in digest order like submits, so two
            // collections never wait on each other's rows in a cycle.
            let after: String =
                sqlx::query_scalar("SELECT data_collect_after FROM jobs WHERE id = $1")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
            let digests: Vec<String> = sqlx::query_scalar(
                "SELECT digest FROM (SELECT input_digest AS digest FROM units WHERE job_id = $1
                                     UNION SELECT output_digest AS digest FROM units WHERE job_id = $1 AND output_digest IS NOT NULL
                                     UNION SELECT output_digest AS digest FROM leases WHERE job_id = $1 AND output_digest IS NOT NULL
                                     UNION SELECT digest FROM job_shared WHERE job_id = $1
                                     UNION SELECT lu.digest AS digest FROM lease_uploads lu JOIN leases l ON l.id = lu.lease_id WHERE l.job_id = $1) AS named
                 WHERE digest > $2 ORDER BY digest LIMIT $3",
            )
            .bind(id)
            .bind(&after)
            .bind(COLLECT_BATCH)
            .fetch_all(&mut *tx)
            .await?;
            let mut collected = Vec::new();
            for digest in &digests {
                collected.extend(blobs::collect(&mut tx, digest).await?);
            }
            let done = (digests.len() as i64) < COLLECT_BATCH;
            let after = digests.last().cloned().unwrap_or(after);
            // Collected once the blobs are done and no line is left (another
            // collector may still be deleting some).
            sqlx::query(
                "UPDATE jobs SET data_collect_after = $2,
                    data_collected = CASE WHEN $3 = 1 AND NOT EXISTS (SELECT 1 FROM unit_logs l WHERE l.job_id = $1) THEN 1 ELSE 0 END
                 WHERE id = $1",
            )
            .bind(id)
            .bind(&after)
            .bind(i64::from(done))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            // Their objects once their records are gone for good.
            blobs::remove_collected(&self.db, collected).await;
            if done {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
