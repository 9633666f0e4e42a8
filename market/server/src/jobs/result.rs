//! Taking a provider's signed result: checked against the lease, stored,
//! queued for `verify` or decided with the unit, failures counted, marks,
//! log lines and the job's settlement applied, all in one transaction.

use super::failures;
use super::outputs;
use super::settle::Settling;
use super::*;
use crate::db::Text;
use agora_wire::api::LeaseState;

/// What taking a result reads of its lease.
#[derive(sqlx::FromRow)]
struct AnsweredLease {
    provider: String,
    state: Text<LeaseState>,
    expires_at_ms: i64,
    job_id: String,
    idx: i64,
    /// 1 when the job is checked by the package's `verify`.
    checked: i64,
}

impl Jobs {
    /// Take a provider's signed result for a lease it holds, decide the
    /// unit when enough replicas agree, and settle: one commit. Should the
    /// settlement fail, the result is taken with less of it ([`Settling`]:
    /// the payments alone, or nothing; the sweeper settles the rest,
    /// setting the job aside while it keeps failing).
    pub async fn submit_result(
        &self,
        provider: &KeyId,
        lease_id: &str,
        report: ResultReport,
        now: i64,
    ) -> Result<(), ApiError> {
        let signed = ResultReport::signed_bytes(
            lease_id,
            report.outcome,
            report.output_digest.as_deref(),
            &report.outputs,
            report.fuel_used,
            report.gpu_time_us,
        );
        provider
            .verify(&signed, &report.signature)
            .map_err(|e| ApiError::Unauthenticated(format!("result signature: {e}")))?;
        let output = match (report.outcome, &report.output_base64) {
            (RunOutcome::Ok, Some(text)) => {
                let bytes = b64(text, "output")?;
                check_unit_bytes("the output", bytes.len())?;
                let digest = agora_wire::digest_hex(&bytes);
                if report.output_digest.as_deref() != Some(&digest) {
                    return Err(ApiError::Invalid(
                        "the output does not match its signed digest".into(),
                    ));
                }
                Some((digest, bytes))
            }
            // Uploaded under the lease, named by its digest (checked below).
            (RunOutcome::Ok, None) if report.output_digest.is_some() => None,
            (RunOutcome::Ok, None) => {
                return Err(ApiError::Invalid(
                    "an ok result names its output's digest".into(),
                ));
            }
            _ => None,
        };
        let manifest = outputs::manifest(&report.outputs)?;
        if report.outcome != RunOutcome::Ok && manifest.is_some() {
            return Err(ApiError::Invalid("only an ok result has outputs".into()));
        }
        if report.outcome == RunOutcome::Ok {
            let uploaded = output
                .is_none()
                .then_some(report.output_digest.as_deref())
                .flatten();
            let inline = output.as_ref().map_or(0, |(_, b)| b.len() as u64);
            self.check_uploaded(provider, lease_id, uploaded, inline, &report.outputs, now)
                .await?;
        }
        // A canary's lease is judged against its known answer, and that is all.
        let digest = match report.outcome {
            RunOutcome::Ok => report.output_digest.clone(),
            _ => None,
        };
        if self
            .answer_canary(provider, lease_id, &report, digest.as_deref(), now)
            .await?
            .is_some()
        {
            return Ok(());
        }
        // The output's bytes go to the object store before the transaction,
        // and only for the provider that runs the lease now: anyone else's
        // result is refused by the transaction with nothing written.
        let output = match output.is_some()
            && Self::runs_lease(&self.db.pool, provider, lease_id, now).await?
        {
            true => output.map(|(d, b)| (d, axum::body::Bytes::from(b))),
            false => None,
        };
        let mut staged = crate::blobs::Staged::write(&self.db, output).await?;
        for scope in Settling::FALLBACKS {
            match self
                .take_result(
                    provider,
                    lease_id,
                    &report,
                    digest.as_deref(),
                    manifest.as_deref(),
                    &mut staged,
                    now,
                    scope,
                )
                .await?
            {
                Ok(()) => {
                    staged.settle().await;
                    return Ok(());
                }
                Err(e) => tracing::warn!(
                    lease = lease_id,
                    ?scope,
                    "settling with this result failed; taking it with less: {e}"
                ),
            }
        }
        unreachable!("a result taken with nothing to settle cannot fail to settle")
    }

    /// Whether `provider` runs lease `lease_id` now.
    pub(super) async fn runs_lease<'e>(
        db: impl sqlx::Executor<'e, Database = sqlx::Any>,
        provider: &KeyId,
        lease_id: &str,
        now: i64,
    ) -> Result<bool, ApiError> {
        let running: Option<i64> = sqlx::query_scalar("SELECT 1 FROM leases WHERE id = $1 AND provider = $2 AND state = 'active' AND expires_at_ms > $3")
            .bind(lease_id)
            .bind(provider.as_str())
            .bind(now)
            .fetch_optional(db)
            .await?;
        Ok(running.is_some())
    }

    /// [`Jobs::submit_result`]'s transaction, settling `scope` of the job
    /// in it. `Ok(Err(e))`: the settlement failed and nothing was
    /// committed; `Err(e)`: the result is not taken (refused, or the
    /// database failed).
    pub(super) async fn take_result(
        &self,
        provider: &KeyId,
        lease_id: &str,
        report: &ResultReport,
        output: Option<&str>,
        manifest: Option<&str>,
        staged: &mut crate::blobs::Staged,
        now: i64,
        scope: Settling,
    ) -> Result<Result<(), ApiError>, ApiError> {
        let mut tx = self.db.write().await?;
        let lease = sqlx::query_as::<_, AnsweredLease>(
            "SELECT l.provider AS provider, l.state AS state, l.expires_at_ms AS expires_at_ms, l.job_id AS job_id, l.idx AS idx, j.checked_by_verify AS checked
             FROM leases l JOIN jobs j ON j.id = l.job_id WHERE l.id = $1",
        )
        .bind(lease_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no lease `{lease_id}`")))?;
        if lease.provider != provider.as_str() {
            return Err(ApiError::Forbidden(
                "this lease belongs to another provider".into(),
            ));
        }
        if lease.state.0 != LeaseState::Active || lease.expires_at_ms <= now {
            return Err(ApiError::NotPending(format!(
                "lease {lease_id} (expired or already answered)"
            )));
        }
        let (job_id, idx, checked) = (lease.job_id, lease.idx, lease.checked == 1);
        settle::lock_job(&mut tx, self.db.kind, &job_id).await?;
        // What the lease costs is decided with its unit, from the usage
        // the accepted replicas agree on (see `agreed_usage`), not here.
        // What became of this result: the lease's state, and why a unit
        // attempt failed. An output of a job checked by `verify` waits for
        // the market's verifiers (`verifying`), after this request.
        let (state, failure) = match output {
            None => (
                "failed",
                Some(format!(
                    "{}: {}",
                    report.outcome,
                    report.message.clone().unwrap_or_default()
                )),
            ),
            Some(digest) => {
                // An inline output is staged only while the lease ran; it
                // still does here. An uploaded one is recorded already.
                if report.output_base64.is_some() {
                    if !staged.has(digest) {
                        return Err(ApiError::NotPending(format!(
                            "lease {lease_id} (expired or already answered)"
                        )));
                    }
                    staged.record(&mut tx, crate::blobs::Pin::Job).await?;
                }
                (if checked { "verifying" } else { "submitted" }, None)
            }
        };
        let answered = sqlx::query(
            "UPDATE leases SET state = $1, outcome = $2, message = $3, output_digest = $4, fuel_used = $5, gpu_time_us = $6, peak_memory_bytes = $7, signature = $8,
                answered_at_ms = $10, wall_ms = $10 - created_at_ms, limit_kind = $11, outputs = $12 WHERE id = $9 AND state = 'active' AND expires_at_ms > $10",
        )
        .bind(state)
        .bind(report.outcome.as_str())
        .bind(failure.clone().or(report.message.clone()).map(|m| m.chars().take(2000).collect::<String>()))
        .bind(output)
        .bind(report.fuel_used.min(i64::MAX as u64) as i64)
        .bind(report.gpu_time_us.min(i64::MAX as u64) as i64)
        .bind(report.peak_memory_bytes.min(i64::MAX as u64) as i64)
        .bind(&report.signature)
        .bind(lease_id)
        .bind(now)
        .bind(report.limit.map(limit_text))
        .bind(manifest)
        .execute(&mut *tx)
        .await?;
        // Swept, cancelled or answered by a concurrent duplicate since it was read.
        if answered.rows_affected() != 1 {
            return Err(ApiError::NotPending(format!(
                "lease {lease_id} (expired or already answered)"
            )));
        }
        let mut marks = Vec::new();
        match failure {
            Some(message) => {
                self.count_failure(&mut tx, (&job_id, idx), lease_id, &message, now)
                    .await?;
                marks.extend(
                    self.release_confirming_replica(&mut tx, lease_id, &job_id, idx)
                        .await?,
                );
            }
            None if checked => Self::queue_verification(&mut tx, lease_id, &job_id, now).await?,
            None => marks.extend(
                decide_unit(
                    &mut tx,
                    &job_id,
                    idx,
                    checked,
                    self.db.kind,
                    self.config.spot_check_rate,
                )
                .await?,
            ),
        }
        Self::record_live_in(&mut tx, provider, lease_id, None, &report.logs, now).await?;
        if let Err(e) = self
            .settle_and_commit(tx, &job_id, now, scope, marks)
            .await?
        {
            return Ok(Err(e));
        }
        if checked && output.is_some() {
            self.verify_wake.notify_one();
        }
        Ok(Ok(()))
    }

    /// A failed attempt of unit (`job`, `idx`), or an output its package's
    /// `verify` rejected: counted on the unit, which fails for good when
    /// the failure rules say it is the job's own doing (`failures`), and
    /// never while a result of the unit waits for its verdict, or one
    /// passed `verify`, or a vouched host's output stands. Nobody is marked here: a later
    /// success elsewhere decides whether the failure was a provider's (see
    /// `decide_unit`). When the unit fails for good, its replicas still
    /// running are cancelled and its failed runs billed like any work.
    pub(super) async fn count_failure(
        &self,
        tx: &mut Tx,
        (job, idx): (&str, i64),
        lease_id: &str,
        message: &str,
        now: i64,
    ) -> Result<(), ApiError> {
        let policy = sqlx::query(
            "SELECT max_attempts, retry_own_failures, backoff_ms FROM jobs WHERE id = $1",
        )
        .bind(job)
        .fetch_one(&mut **tx)
        .await?;
        let retry = failures::RetryTerms {
            max_attempts: policy.try_get::<i64, _>("max_attempts")?.max(1) as usize,
            retry_own_failures: policy.try_get::<i64, _>("retry_own_failures")? == 1,
        };
        let terms = decide::unit_terms(tx, job).await?;
        let runs = decide::missed_runs(tx, job, idx).await?;
        // Only a counted failure (a run trusted at its grant, believable)
        // starts the buyer's backoff, doubled per counted failure before
        // it: a fresh key's word stalls nothing.
        let counted: Vec<&failures::MissedRun> = runs
            .iter()
            .filter(|r| failures::counted(r, terms.timeout_ms))
            .collect();
        let retry_at = if counted.iter().any(|r| r.run.lease == lease_id) {
            now.saturating_add(backoff_after(
                policy.try_get::<i64, _>("backoff_ms")?.max(0) as u64,
                counted.len().saturating_sub(1) as u32,
            ) as i64)
        } else {
            0
        };
        sqlx::query(
            "UPDATE units SET failures = failures + 1, message = $1,
               retry_at_ms = CASE WHEN $4 > retry_at_ms THEN $4 ELSE retry_at_ms END
             WHERE job_id = $2 AND idx = $3",
        )
        .bind(message.chars().take(2000).collect::<String>())
        .bind(job)
        .bind(idx)
        .bind(retry_at)
        .execute(&mut **tx)
        .await?;
        // A result waiting for its verdict, one `verify` passed, or a vouched
        // host's output waiting for its quorum: the unit may yet succeed.
        // (A farmed key's unconfirmed output shields nothing: it could
        // hold every honest failure unbilled until the job expires.)
        let standing: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM leases l JOIN jobs j ON j.id = l.job_id WHERE l.job_id = $1 AND l.idx = $2
               AND (l.state = 'verifying' OR (l.state = 'submitted' AND (j.checked_by_verify = 1
                    OR EXISTS (SELECT 1 FROM vouched v WHERE v.id = l.provider))))",
        )
        .bind(job)
        .bind(idx)
        .fetch_one(&mut **tx)
        .await?
        .try_get("n")?;
        if standing > 0 {
            return Ok(());
        }
        if !failures::fails_for_good(&runs, terms.timeout_ms, retry) {
            return Ok(());
        }
        let failed = sqlx::query(
            "UPDATE units SET state = 'failed' WHERE job_id = $1 AND idx = $2 AND state = 'queued'",
        )
        .bind(job)
        .bind(idx)
        .execute(&mut **tx)
        .await?;
        if failed.rows_affected() == 1 {
            // Replicas still running are not needed any more.
            sqlx::query("UPDATE leases SET state = 'cancelled' WHERE job_id = $1 AND idx = $2 AND state = 'active'").bind(job).bind(idx).execute(&mut **tx).await?;
            decide::bill_missed_runs(tx, &runs, terms).await?;
        }
        Ok(())
    }

    /// Lease `lease_id` of unit (`job`, `idx`) ended without a result
    /// (failed, or lapsed). If it was an untrusted key's that raised the
    /// unit to two replicas (a confirming trusted one for its result),
    /// the unit wants one result again, and a trusted result already in is
    /// decided: a market with one trusted provider still finishes it.
    /// Returns the decision's marks.
    pub(super) async fn release_confirming_replica(
        &self,
        tx: &mut Tx,
        lease_id: &str,
        job: &str,
        idx: i64,
    ) -> Result<Vec<(String, Mark)>, ApiError> {
        let released = sqlx::query(
            "UPDATE units SET wanted = 1, quorum = 1 WHERE job_id = $1 AND idx = $2 AND state = 'queued' AND wanted = 2 AND quorum = 2
               AND EXISTS (SELECT 1 FROM leases l WHERE l.id = $3 AND l.raised_quorum = 1 AND l.state IN ('failed', 'expired'))",
        )
        .bind(job)
        .bind(idx)
        .bind(lease_id)
        .execute(&mut **tx)
        .await?;
        if released.rows_affected() != 1 {
            return Ok(Vec::new());
        }
        decide_unit(
            tx,
            job,
            idx,
            false,
            self.db.kind,
            self.config.spot_check_rate,
        )
        .await
    }
}

/// How long a unit waits after its failure number `earlier + 1`: the
/// buyer's `backoff_ms`, doubled per earlier failure, at most
/// `MAX_RETRY_BACKOFF_MS`.
fn backoff_after(backoff_ms: u64, earlier: u32) -> u64 {
    use agora_wire::limits::MAX_RETRY_BACKOFF_MS;
    backoff_ms
        .saturating_mul(1u64.checked_shl(earlier.min(32)).unwrap_or(u64::MAX))
        .min(MAX_RETRY_BACKOFF_MS)
}

#[cfg(test)]
mod backoff_tests {
    use super::backoff_after;

    #[test]
    fn backoff_doubles_per_failure_up_to_its_bound() {
        assert_eq!(backoff_after(0, 5), 0);
        assert_eq!(backoff_after(1000, 0), 1000);
        assert_eq!(backoff_after(1000, 2), 4000);
        assert_eq!(
            backoff_after(1000, 40),
            agora_wire::limits::MAX_RETRY_BACKOFF_MS
        );
        assert_eq!(
            backoff_after(u64::MAX, 1),
            agora_wire::limits::MAX_RETRY_BACKOFF_MS
        );
    }
}
