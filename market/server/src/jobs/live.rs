//! What running units report: progress and log lines per lease (capped
//! per lease), and a job's log for its buyer.

use super::*;

impl Jobs {
    /// Keep a lease's latest progress and its new log lines (up to
    /// [`MAX_LEASE_LOG_LINES`]). Leases of other providers are ignored.
    pub(super) async fn record_live(
        &self,
        provider: &KeyId,
        lease_id: &str,
        progress: Option<Progress>,
        logs: &[LogLine],
        now: i64,
    ) -> Result<(), ApiError> {
        if progress.is_none() && logs.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.write().await?;
        Self::record_live_in(&mut tx, provider, lease_id, progress, logs, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// [`Jobs::record_live`] in the caller's transaction.
    pub(super) async fn record_live_in(
        tx: &mut Tx,
        provider: &KeyId,
        lease_id: &str,
        progress: Option<Progress>,
        logs: &[LogLine],
        now: i64,
    ) -> Result<(), ApiError> {
        if progress.is_none() && logs.is_empty() {
            return Ok(());
        }
        let Some(lease) = sqlx::query(
            "SELECT job_id, idx, log_lines FROM leases WHERE id = $1 AND provider = $2",
        )
        .bind(lease_id)
        .bind(provider.as_str())
        .fetch_optional(&mut **tx)
        .await?
        else {
            return Ok(());
        };
        let (job_id, idx, kept): (String, i64, i64) = (
            lease.try_get("job_id")?,
            lease.try_get("idx")?,
            lease.try_get("log_lines")?,
        );
        let room = (MAX_LEASE_LOG_LINES - kept).max(0) as usize;
        let mut lines: Vec<(String, String)> = logs
            .iter()
            .take(room)
            .map(|l| {
                (
                    l.level.chars().take(16).collect(),
                    l.message.chars().take(MAX_LOG_LINE_CHARS).collect(),
                )
            })
            .collect();
        if logs.len() > room && room > 0 {
            lines.pop();
            lines.push(("warn".into(), format!("the market keeps {MAX_LEASE_LOG_LINES} log lines per lease; later lines are dropped")));
        }
        for (level, message) in &lines {
            sqlx::query("INSERT INTO unit_logs (job_id, idx, lease_id, provider, level, message, at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                .bind(&job_id)
                .bind(idx)
                .bind(lease_id)
                .bind(provider.as_str())
                .bind(level)
                .bind(message)
                .bind(now)
                .execute(&mut **tx)
                .await?;
        }
        let (done, total) = progress
            .map(|p| {
                (
                    Some(p.done.min(i64::MAX as u64) as i64),
                    Some(p.total.min(i64::MAX as u64) as i64),
                )
            })
            .unwrap_or((None, None));
        sqlx::query(
            "UPDATE leases SET log_lines = log_lines + $1, progress_done = COALESCE($2, progress_done), progress_total = COALESCE($3, progress_total) WHERE id = $4",
        )
        .bind(lines.len() as i64)
        .bind(done)
        .bind(total)
        .bind(lease_id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// A job's log lines after `after`, oldest first.
    /// The number of the job's newest log line (0: none).
    pub async fn last_log_seq(&self, job: &str) -> Result<i64, ApiError> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) AS seq FROM unit_logs WHERE job_id = $1",
        )
        .bind(job)
        .fetch_one(&self.db.pool)
        .await?;
        Ok(row.try_get("seq")?)
    }

    pub async fn logs(&self, job: &str, after: i64, limit: u32) -> Result<JobLogs, ApiError> {
        // A job whose data is deleted has no lines, collected yet or not.
        let rows = sqlx::query(
            "SELECT l.seq AS seq, l.idx AS idx, l.provider AS provider, l.level AS level, l.message AS message, l.at_ms AS at_ms
             FROM unit_logs l JOIN jobs j ON j.id = l.job_id AND j.data_deleted_at_ms IS NULL
             WHERE l.job_id = $1 AND l.seq > $2 ORDER BY l.seq LIMIT $3",
        )
            .bind(job)
            .bind(after)
            .bind(limit.clamp(1, 1000) as i64)
            .fetch_all(&self.db.pool)
            .await?;
        let lines = rows
            .iter()
            .map(|r| {
                Ok(JobLogLine {
                    seq: r.try_get("seq")?,
                    unit: r.try_get::<i64, _>("idx")? as u32,
                    provider: r.try_get("provider")?,
                    level: r.try_get("level")?,
                    message: r.try_get("message")?,
                    at_ms: r.try_get("at_ms")?,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let next = lines.last().map(|l| l.seq).unwrap_or(after);
        Ok(JobLogs { lines, next })
    }
}
