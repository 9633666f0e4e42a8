//! The verification queue: results of jobs checked by the package's
//! `verify`, taken from the provider at once and verified afterwards by the
//! market's verifiers.
//!
//! Design choices:
//! - A result with an output is stored and its lease set `verifying` in the
//!   result's own transaction, with one row in `verifications`; the
//!   provider's request ends there. What `verify` says is applied later,
//!   in one transaction that also decides the unit, so no verdict is lost
//!   to a request timeout and no honest lease is stranded by a slow check.
//! - One verdict per lease: a verifier claims a row with a random token
//!   until the verification's deadline; only the holder of the current
//!   claim may apply a verdict (and deletes the row doing so). A claim left
//!   by a crashed verifier or replica lapses and the row is claimed again,
//!   up to [`VERIFY_ATTEMPTS`] times.
//! - Fair between buyers: the next row is the oldest of the buyer whose
//!   last verification started longest ago, so one buyer's thousand
//!   results do not hold up another's one.
//! - The market chooses the limits ([`VerifyLimits::for_run`]), and its
//!   reads of the component are not public downloads.
//! - A job that expires with results still waiting is settled once they
//!   are verified, or after [`VERIFY_WAIT_MS`] when the market could not
//!   verify them (those results are unpaid, and their providers unmarked).

use super::settle::{Settling, lock_job};
use super::{Jobs, Mark, decide_unit, random_id};
use crate::db::Tx;
use crate::error::ApiError;
use crate::verify::{
    ByName, MAX_VERIFY_TIMEOUT_MS, SharedInputs, VERIFY_ATTEMPTS, VerifyFailure, VerifyLimits,
};
use agora_wire::api::RunOutcome;
use sqlx::Row;

/// Time past a claim's timeout before the claim lapses: starting a worker,
/// reading the component and the blobs, writing the verdict.
pub const VERIFY_CLAIM_GRACE_MS: i64 = 60_000;
/// How long an expired job waits for its results' verifications before it
/// settles without them: every attempt, each to its deadline.
pub const VERIFY_WAIT_MS: i64 =
    VERIFY_ATTEMPTS * (MAX_VERIFY_TIMEOUT_MS as i64 + VERIFY_CLAIM_GRACE_MS);

/// A verification this verifier holds.
struct Claim {
    lease_id: String,
    job_id: String,
    token: String,
    attempts: i64,
}

/// What one verification did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verified {
    /// The lease's verdict was applied: `Some(passed)`, or `None` when the
    /// verification did not complete.
    Verdict {
        lease_id: String,
        passed: Option<bool>,
    },
    /// The verifier was lost; the lease waits for another try.
    Retry { lease_id: String },
    /// Another verifier applied its verdict first (this claim had lapsed).
    Superseded { lease_id: String },
}

impl Jobs {
    /// Queue the verification of `lease_id`, answered with an output, in
    /// the result's own transaction.
    pub(super) async fn queue_verification(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        lease_id: &str,
        job_id: &str,
        now: i64,
    ) -> Result<(), ApiError> {
        sqlx::query("INSERT INTO verifications (lease_id, job_id, buyer, queued_at_ms) SELECT $1, $2, buyer, $3 FROM jobs WHERE id = $2")
            .bind(lease_id)
            .bind(job_id)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Results waiting for (or in) verification.
    pub async fn verifications_pending(&self) -> Result<i64, ApiError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM verifications")
            .fetch_one(&self.db.pool)
            .await?
            .try_get("n")?)
    }

    /// Wait until a result may be waiting for verification (one arrived on
    /// this market) or `period` passed (one may have arrived on another
    /// replica, or a claim lapsed).
    pub async fn verification_wanted(&self, period: std::time::Duration) {
        let _ = tokio::time::timeout(period, self.verify_wake.notified()).await;
    }

    /// Verifications this market runs at once.
    pub fn verify_parallelism(&self) -> usize {
        self.verifier.as_ref().map_or(0, |v| v.parallelism().max(1))
    }

    /// Claim the next due verification and run it: `None` when nothing is
    /// due, or this market has no verifier. `now` reads the market's clock.
    pub async fn verify_next(&self, now: impl Fn() -> i64) -> Result<Option<Verified>, ApiError> {
        let Some(verifier) = self.verifier.clone() else {
            return Ok(None);
        };
        let Some(claim) = self.claim_verification(now()).await? else {
            return Ok(None);
        };
        if claim.attempts > VERIFY_ATTEMPTS {
            let lost = VerifyFailure {
                outcome: RunOutcome::WorkerLost,
                message: format!("the verifier was lost {VERIFY_ATTEMPTS} times"),
            };
            return self.apply_verdict(&claim, Err(lost), now()).await.map(Some);
        }
        let verdict = match self.verification_inputs(&claim.lease_id).await? {
            Some((component, input, output, by_name, limits)) => {
                tokio::task::spawn_blocking(move || {
                    verifier.verify_shared(&component, &input, &output, &by_name, &limits)
                })
                .await
                .unwrap_or_else(|e| {
                    Err(VerifyFailure {
                        outcome: RunOutcome::WorkerLost,
                        message: format!("the verifier task: {e}"),
                    })
                })
            }
            // The lease is no longer waiting (its job ended): drop the row.
            None => Ok(false),
        };
        tracing::info!(
            lease = claim.lease_id,
            ?verdict,
            "checked a result with the package's verify"
        );
        self.apply_verdict(&claim, verdict, now()).await.map(Some)
    }

    /// Claim the due row of the buyer served longest ago, for one
    /// verification's time.
    async fn claim_verification(&self, now: i64) -> Result<Option<Claim>, ApiError> {
        let mut tx = self.db.write().await?;
        let Some(row) = sqlx::query(
            "SELECT v.lease_id AS lease_id, v.job_id AS job_id, v.buyer AS buyer, v.attempts AS attempts, j.timeout_ms AS timeout_ms, j.fuel_limit AS fuel, j.memory_limit AS memory
             FROM verifications v JOIN jobs j ON j.id = v.job_id LEFT JOIN verify_turns t ON t.buyer = v.buyer
             WHERE v.claimed_until_ms <= $1 ORDER BY COALESCE(t.served_at_ms, 0), v.queued_at_ms, v.lease_id LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let lease_id: String = row.try_get("lease_id")?;
        let limits = limits_of(&row)?;
        let token = random_id('v', 12);
        let claimed = sqlx::query("UPDATE verifications SET claim = $1, claimed_until_ms = $2, attempts = attempts + 1 WHERE lease_id = $3 AND claimed_until_ms <= $4")
            .bind(&token)
            .bind(now + limits.timeout_ms as i64 + VERIFY_CLAIM_GRACE_MS)
            .bind(&lease_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if claimed.rows_affected() != 1 {
            return Ok(None); // another replica claimed it between the two statements: it is served
        }
        sqlx::query("INSERT INTO verify_turns (buyer, served_at_ms) VALUES ($1, $2) ON CONFLICT (buyer) DO UPDATE SET served_at_ms = $2")
            .bind(row.try_get::<String, _>("buyer")?)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(Claim {
            lease_id,
            job_id: row.try_get("job_id")?,
            token,
            attempts: row.try_get::<i64, _>("attempts")? + 1,
        }))
    }

    /// The component, input, output and limits of a waiting lease's
    /// verification; `None` when the lease is not waiting any more.
    async fn verification_inputs(
        &self,
        lease_id: &str,
    ) -> Result<Option<(Vec<u8>, Vec<u8>, Vec<u8>, ByName, VerifyLimits)>, ApiError> {
        let Some(row) = sqlx::query(
            "SELECT j.id AS job_id, j.package AS package, j.version AS version, j.fuel_limit AS fuel, j.memory_limit AS memory, j.timeout_ms AS timeout_ms,
                    u.input_digest AS input_digest, l.output_digest AS output_digest, l.outputs AS outputs
             FROM leases l JOIN jobs j ON j.id = l.job_id JOIN units u ON u.job_id = l.job_id AND u.idx = l.idx WHERE l.id = $1 AND l.state = 'verifying'",
        )
        .bind(lease_id)
        .fetch_optional(&self.db.pool)
        .await?
        else {
            return Ok(None);
        };
        let (_, component) = self
            .registry
            .component(
                &row.try_get::<String, _>("package")?,
                &row.try_get::<String, _>("version")?,
            )
            .await?;
        let input = self
            .blob(&row.try_get::<String, _>("input_digest")?)
            .await?;
        let output = self
            .blob(&row.try_get::<String, _>("output_digest")?)
            .await?;
        // Each digest read once, however many names share it (a job's shared
        // inputs are at most MAX_SHARED_INPUT_BYTES by name).
        let mut read = std::collections::HashMap::new();
        let shared_inputs = self.shared_of(&row.try_get::<String, _>("job_id")?).await?;
        let shared = self
            .read_by_name(
                shared_inputs.into_iter().map(|b| (b.name, b.digest)),
                &mut read,
            )
            .await?;
        let manifest: Option<String> = row.try_get("outputs")?;
        let named = super::outputs::read_manifest(manifest.as_deref());
        let outputs = self
            .read_by_name(named.into_iter().map(|o| (o.name, o.digest)), &mut read)
            .await?;
        let by_name = ByName { shared, outputs };
        Ok(Some((component, input, output, by_name, limits_of(&row)?)))
    }

    /// The blobs of `named` (name and digest) by name, each digest read
    /// once through `read`.
    async fn read_by_name(
        &self,
        named: impl Iterator<Item = (String, String)>,
        read: &mut std::collections::HashMap<String, std::sync::Arc<[u8]>>,
    ) -> Result<SharedInputs, ApiError> {
        let mut by_name = SharedInputs::new();
        for (name, digest) in named {
            if !read.contains_key(&digest) {
                read.insert(digest.clone(), self.blob(&digest).await?.into());
            }
            by_name.insert(name, read[&digest].clone());
        }
        Ok(by_name)
    }

    /// Apply a verdict under this verifier's claim, in one transaction with
    /// the unit's decision, the marks and the job's settlement. Should the
    /// settlement fail, the verdict is applied with less of it
    /// ([`Settling`]; the sweeper settles the rest).
    async fn apply_verdict(
        &self,
        claim: &Claim,
        verdict: Result<bool, VerifyFailure>,
        now: i64,
    ) -> Result<Verified, ApiError> {
        for scope in Settling::FALLBACKS {
            match self.apply_verdict_once(claim, &verdict, now, scope).await? {
                Ok(verified) => return Ok(verified),
                Err(e) => tracing::warn!(
                    lease = claim.lease_id,
                    ?scope,
                    "settling with this verdict failed; applying it with less: {e}"
                ),
            }
        }
        unreachable!("a verdict applied with nothing to settle cannot fail to settle")
    }

    /// [`Jobs::apply_verdict`]'s transaction, settling `scope` of the job
    /// in it. `Ok(Err(e))`: the settlement failed and nothing was
    /// committed.
    async fn apply_verdict_once(
        &self,
        claim: &Claim,
        verdict: &Result<bool, VerifyFailure>,
        now: i64,
        scope: Settling,
    ) -> Result<Result<Verified, ApiError>, ApiError> {
        let lease_id = claim.lease_id.clone();
        let mut tx = self.db.write().await?;
        if matches!(verdict, Err(f) if f.is_verifier_lost()) && claim.attempts < VERIFY_ATTEMPTS {
            let released = sqlx::query("UPDATE verifications SET claim = NULL, claimed_until_ms = 0 WHERE lease_id = $1 AND claim = $2")
                .bind(&lease_id)
                .bind(&claim.token)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(Ok(if released.rows_affected() == 1 {
                Verified::Retry { lease_id }
            } else {
                Verified::Superseded { lease_id }
            }));
        }
        lock_job(&mut tx, self.db.kind, &claim.job_id).await?;
        let ours = sqlx::query("DELETE FROM verifications WHERE lease_id = $1 AND claim = $2")
            .bind(&lease_id)
            .bind(&claim.token)
            .execute(&mut *tx)
            .await?;
        if ours.rows_affected() != 1 {
            return Ok(Ok(Verified::Superseded { lease_id }));
        }
        let Some(lease) = sqlx::query(
            "SELECT l.idx AS idx FROM leases l WHERE l.id = $1 AND l.state = 'verifying'",
        )
        .bind(&lease_id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            tx.commit().await?;
            return Ok(Ok(Verified::Verdict {
                lease_id,
                passed: None,
            }));
        };
        let (job_id, idx): (&str, i64) = (&claim.job_id, lease.try_get("idx")?);
        let (state, message) = match verdict {
            Ok(true) => ("submitted", None),
            Ok(false) => (
                "rejected",
                Some("the package's verify rejected the output".to_string()),
            ),
            // The market could not verify (its worker was lost each try).
            Err(f) if f.is_verifier_lost() => {
                ("failed", Some(format!("verify did not complete: {f}")))
            }
            // `verify` itself trapped or ran past the market's limits on this
            // output: the output is not accepted, as if rejected.
            Err(f) => (
                "rejected",
                Some(format!("the package's verify failed on the output: {f}")),
            ),
        };
        sqlx::query("UPDATE leases SET state = $1, message = COALESCE($2, message) WHERE id = $3 AND state = 'verifying'")
            .bind(state)
            .bind(message.clone())
            .bind(&lease_id)
            .execute(&mut *tx)
            .await?;
        let mut marks: Vec<(String, Mark)> = Vec::new();
        match (verdict, message) {
            (Ok(true), _) => marks.extend(
                decide_unit(
                    &mut tx,
                    job_id,
                    idx,
                    true,
                    self.db.kind,
                    self.config.spot_check_rate,
                )
                .await?,
            ),
            // Rejected: the provider is marked once another output passes
            // (`decide_unit`), since a verify that rejects everything
            // proves nothing about providers. It counts as a failed attempt:
            // rejected as often as a unit may fail, a trusted provider's
            // among them, the unit fails as the job's own doing and its runs
            // are billed (a buyer cannot have honest work done for free by a
            // verify that refuses it, nor hold a unit open for ever).
            (_, message) => {
                self.count_failure(
                    &mut tx,
                    (job_id, idx),
                    &lease_id,
                    &message.unwrap_or_default(),
                    now,
                )
                .await?
            }
        }
        if let Err(e) = self
            .settle_and_commit(tx, job_id, now, scope, marks)
            .await?
        {
            return Ok(Err(e));
        }
        Ok(Ok(Verified::Verdict {
            lease_id,
            passed: verdict.as_ref().ok().copied(),
        }))
    }

    /// Whether an expired job still waits for its results' verdicts; once
    /// it stops waiting, results the market never verified are failed
    /// (unpaid, nobody marked).
    pub(super) async fn awaits_verdicts(
        &self,
        tx: &mut Tx,
        job_id: &str,
        expired_at_ms: i64,
        now: i64,
    ) -> Result<bool, ApiError> {
        let waiting: i64 = sqlx::query("SELECT COUNT(*) AS n FROM verifications WHERE job_id = $1")
            .bind(job_id)
            .fetch_one(&mut **tx)
            .await?
            .try_get("n")?;
        if waiting == 0 {
            return Ok(false);
        }
        if now < expired_at_ms + VERIFY_WAIT_MS {
            return Ok(true);
        }
        tracing::warn!(
            job = job_id,
            waiting,
            "settling an expired job without the verdicts of results the market could not verify"
        );
        sqlx::query("UPDATE leases SET state = 'failed', message = 'the market could not verify this result' WHERE job_id = $1 AND state = 'verifying'")
            .bind(job_id)
            .execute(&mut **tx)
            .await?;
        sqlx::query("DELETE FROM verifications WHERE job_id = $1")
            .bind(job_id)
            .execute(&mut **tx)
            .await?;
        Ok(false)
    }

    /// The pairing of leases and the queue: every `verifying` lease has
    /// its row, and every row a `verifying` lease.
    pub async fn check_verifications(&self) -> Result<Vec<String>, ApiError> {
        let mut violations = Vec::new();
        for r in sqlx::query(
            "SELECT l.id AS id FROM leases l WHERE l.state = 'verifying' AND NOT EXISTS (SELECT 1 FROM verifications v WHERE v.lease_id = l.id)",
        )
        .fetch_all(&self.db.pool)
        .await?
        {
            violations.push(format!("lease {} waits for a verification nobody will run", r.try_get::<String, _>("id")?));
        }
        for r in sqlx::query(
            "SELECT v.lease_id AS id FROM verifications v WHERE NOT EXISTS (SELECT 1 FROM leases l WHERE l.id = v.lease_id AND l.state = 'verifying')",
        )
        .fetch_all(&self.db.pool)
        .await?
        {
            violations.push(format!("verification of lease {} has no lease waiting for it", r.try_get::<String, _>("id")?));
        }
        Ok(violations)
    }
}

fn limits_of(row: &sqlx::any::AnyRow) -> Result<VerifyLimits, ApiError> {
    let get = |c: &str| row.try_get::<i64, _>(c).map(|v| v.max(0) as u64);
    Ok(VerifyLimits::for_run(
        get("fuel")?,
        get("memory")?,
        get("timeout_ms")?,
    ))
}
