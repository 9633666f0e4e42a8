//! Settlement and the sweeper: paying accepted leases from the job's own
//! escrow, refunding what was not spent, expiring lost leases, and the
//! per-job escrow invariant.
//!
//! Design choices:
//! - Each job has its own escrow account ([`job_escrow`]). Its hold
//!   (`job:{id}:hold`, buyer -> `job:{id}`) is posted in full at the first
//!   accepted result; payments and the refund are debits of that account,
//!   and a debit never overdraws, so a job can never spend another's money.
//!   Only the market resolves the hold: its id is in the reserved namespace.
//! - A settlement is one transaction, and it runs inside the transaction
//!   that accepts the results it pays (a result's, a verdict's): a unit's
//!   result, decision, marks, payments and the job's end commit together
//!   or not at all. That transaction locks the job first, then provider
//!   rows, then accounts, each in one order, so replicas settling the same
//!   job wait for each other and no two transactions deadlock on the way.
//! - Every transfer id is deterministic (`lease:{id}:pay`, `job:{id}:refund`):
//!   a re-run, or a second replica, replays instead of paying twice.
//! - Assertions pair: the refund the market computes from its leases must
//!   equal what the ledger says the job's escrow still holds, or nothing is
//!   refunded and the job is set aside for the operator.
//! - The sweeper isolates every item: a job whose settlement fails is logged,
//!   counted, and set aside with a growing back-off; the sweep goes on.

use super::Jobs;
use crate::db::{Kind, Tx};
use crate::error::ApiError;
use crate::ledger::{FEES, Op, job_escrow};
use sqlx::Row;
use sqlx::any::AnyRow;

/// The first back-off of a job whose settlement failed; it doubles with
/// each failure up to [`MAX_SETTLE_BACKOFF_MS`].
pub const SETTLE_BACKOFF_MS: i64 = 60_000;
/// The longest a failing job waits between settlement attempts.
pub const MAX_SETTLE_BACKOFF_MS: i64 = 3_600_000;
/// Lost leases expired per sweep.
const LEASES_PER_SWEEP: i64 = 500;
/// Jobs settled per sweep.
const JOBS_PER_SWEEP: i64 = 200;

pub(super) fn hold_id(job: &str) -> String {
    format!("job:{job}:hold")
}

/// Lock job `job_id`'s row for the rest of `tx` and read it. Every
/// transaction that decides, pays or ends a job's units takes this lock
/// first (on SQLite the write transaction holds the whole database), so
/// they run one after another and lock the rest in one order.
pub(super) async fn lock_job(tx: &mut Tx, kind: Kind, job_id: &str) -> Result<AnyRow, ApiError> {
    let lock = if kind == Kind::Postgres { " FOR UPDATE" } else { "" };
    sqlx::query(&format!("SELECT * FROM jobs WHERE id = $1{lock}"))
        .bind(job_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job `{job_id}`")))
}

/// One accepted lease's payment: its provider's share and the market's fee.
struct Payment {
    lease: String,
    provider: String,
    to_provider: u64,
    fee: u64,
}

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub leases_expired: u64,
    pub jobs_settled: u64,
    /// Items that failed and were set aside.
    pub failures: u64,
}

impl Jobs {
    /// Pay accepted leases and finish the job when every unit is final, in
    /// one transaction. Safe to run again at any time: every transfer id is
    /// deterministic, and a failure leaves nothing half done.
    pub async fn settle(&self, job_id: &str, now: i64) -> Result<(), ApiError> {
        let mut tx = self.db.write().await?;
        self.settle_in(&mut tx, job_id, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// [`Jobs::settle`] inside the caller's transaction, which holds (or
    /// takes here) the job's lock: no lease of the job is accepted while it
    /// runs, so what it pays and refunds is final.
    pub(super) async fn settle_in(&self, tx: &mut Tx, job_id: &str, now: i64) -> Result<(), ApiError> {
        let job = lock_job(tx, self.db.kind, job_id).await?;
        let buyer: String = job.try_get("buyer")?;
        let max_price = job.try_get::<i64, _>("max_price")? as u64;
        let ending = job.try_get::<String, _>("state")? == "running" && self.ends_now(tx, job_id, job.try_get("expires_at_ms")?, now).await?;
        let payments = self.payments_due(tx, job_id).await?;
        if payments.is_empty() && !ending {
            return Ok(());
        }
        let escrow = self.escrow_of(tx, job_id).await?;
        let mut accounts = vec![escrow.as_str(), buyer.as_str()];
        accounts.extend(payments.iter().filter(|p| p.to_provider > 0).map(|p| p.provider.as_str()));
        if payments.iter().any(|p| p.fee > 0) {
            accounts.push(FEES);
        }
        self.ledger.lock_accounts(tx, &accounts, now).await?;
        let mut escrow_posted = job.try_get::<i64, _>("escrow_posted")? == 1;
        if !payments.is_empty() && !escrow_posted {
            self.post_escrow(tx, job_id, now).await?;
            escrow_posted = true;
        }
        self.pay(tx, &escrow, &payments, now).await?;
        if !ending {
            return Ok(());
        }
        let spent: i64 = sqlx::query("SELECT CAST(COALESCE(SUM(cost), 0) AS BIGINT) AS s FROM leases WHERE job_id = $1 AND paid = 1")
            .bind(job_id)
            .fetch_one(&mut **tx)
            .await?
            .try_get("s")?;
        if escrow_posted {
            self.refund(tx, job_id, &escrow, &buyer, max_price, spent as u64, now).await?;
        } else {
            match self.ledger.execute_in(tx, &format!("job:{job_id}:void"), &Op::Void { pending_id: hold_id(job_id) }, now).await {
                Ok(_) | Err(ApiError::NotPending(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.finish(tx, job_id, job.try_get::<i64, _>("expires_at_ms")? <= now, now).await
    }

    /// Whether running job `job_id` ends in this settlement: every unit is
    /// final, or the job expired (and waits for no verdict), in which case
    /// its open units fail and its active leases expire here.
    async fn ends_now(&self, tx: &mut Tx, job_id: &str, expires_at_ms: i64, now: i64) -> Result<bool, ApiError> {
        let open: i64 = sqlx::query("SELECT COUNT(*) AS n FROM units WHERE job_id = $1 AND state = 'queued'")
            .bind(job_id)
            .fetch_one(&mut **tx)
            .await?
            .try_get("n")?;
        if open == 0 {
            return Ok(true);
        }
        // Results taken before the job expired are judged before it ends:
        // an honest provider's is paid even when its check comes late.
        if expires_at_ms > now || self.awaits_verdicts(tx, job_id, expires_at_ms, now).await? {
            return Ok(false);
        }
        sqlx::query("UPDATE units SET state = 'failed', message = 'the job expired' WHERE job_id = $1 AND state = 'queued'")
            .bind(job_id)
            .execute(&mut **tx)
            .await?;
        sqlx::query("UPDATE leases SET state = 'expired' WHERE job_id = $1 AND state = 'active'").bind(job_id).execute(&mut **tx).await?;
        Ok(true)
    }

    /// The job's accepted (or billed) leases not paid yet, by provider: the
    /// order the payments lock their accounts in.
    async fn payments_due(&self, tx: &mut Tx, job_id: &str) -> Result<Vec<Payment>, ApiError> {
        let rows = sqlx::query("SELECT id, provider, cost FROM leases WHERE job_id = $1 AND state IN ('accepted', 'billed') AND paid = 0 ORDER BY provider, id")
            .bind(job_id)
            .fetch_all(&mut **tx)
            .await?;
        rows.iter()
            .map(|r| {
                let cost = r.try_get::<Option<i64>, _>("cost")?.unwrap_or(0).max(0) as u64;
                let fee = cost * self.config.fee_bps / 10_000;
                Ok(Payment { lease: r.try_get("id")?, provider: r.try_get("provider")?, to_provider: cost - fee, fee })
            })
            .collect()
    }

    /// Pay `payments` from `escrow` and mark their leases paid.
    async fn pay(&self, tx: &mut Tx, escrow: &str, payments: &[Payment], now: i64) -> Result<(), ApiError> {
        for p in payments {
            if p.to_provider > 0 {
                let op = Op::Single { debit: escrow.into(), credit: p.provider.clone(), amount: p.to_provider };
                self.ledger.execute_in(tx, &format!("lease:{}:pay", p.lease), &op, now).await?;
            }
        }
        for p in payments.iter().filter(|p| p.fee > 0) {
            let op = Op::Single { debit: escrow.into(), credit: FEES.into(), amount: p.fee };
            self.ledger.execute_in(tx, &format!("lease:{}:fee", p.lease), &op, now).await?;
        }
        for p in payments {
            sqlx::query("UPDATE leases SET paid = 1 WHERE id = $1").bind(&p.lease).execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Record how the job ended: done when every unit is verified.
    async fn finish(&self, tx: &mut Tx, job_id: &str, expired: bool, now: i64) -> Result<(), ApiError> {
        let counts = sqlx::query("SELECT COUNT(*) AS total, CAST(COALESCE(SUM(CASE WHEN state = 'verified' THEN 1 ELSE 0 END), 0) AS BIGINT) AS verified FROM units WHERE job_id = $1")
            .bind(job_id)
            .fetch_one(&mut **tx)
            .await?;
        let (total, verified): (i64, i64) = (counts.try_get("total")?, counts.try_get("verified")?);
        let state = if verified == total { "done" } else if expired { "expired" } else { "failed" };
        sqlx::query("UPDATE jobs SET state = $1, finished_at_ms = $2 WHERE id = $3 AND state = 'running'")
            .bind(state)
            .bind(now)
            .bind(job_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Return what the job did not spend, after checking that the ledger
    /// agrees: the escrow holds exactly the cap less the paid leases (or
    /// exactly nothing, when a replay finds the refund already made).
    #[allow(clippy::too_many_arguments)]
    async fn refund(&self, tx: &mut Tx, job_id: &str, escrow: &str, buyer: &str, max_price: u64, spent: u64, now: i64) -> Result<(), ApiError> {
        let refund = max_price.checked_sub(spent).ok_or_else(|| ApiError::Internal(format!("{job_id} spent {spent} of a {max_price} cap")))?;
        let id = format!("job:{job_id}:refund");
        let held = self.ledger.balance_in(tx, escrow).await?.map(|b| b.credits_posted - b.debits_posted).unwrap_or(0);
        let done = self.ledger.get_in(tx, &id).await?.is_some();
        // (A job of the shared escrow of earlier versions cannot be checked
        // this way: other jobs' funds sit beside its own.)
        let shared = escrow == crate::ledger::ESCROW;
        if !shared && held != if done { 0 } else { refund } {
            return Err(ApiError::Internal(format!("the escrow of {job_id} holds {held}, its leases leave {refund}")));
        }
        if refund > 0 {
            let op = Op::Single { debit: escrow.to_string(), credit: buyer.to_string(), amount: refund };
            self.ledger.execute_in(tx, &id, &op, now).await?;
        }
        Ok(())
    }

    /// The account the job's hold credits: its own escrow account, or for a
    /// job submitted before escrow was per job, the shared one.
    async fn escrow_of(&self, tx: &mut Tx, job_id: &str) -> Result<String, ApiError> {
        let hold = self.ledger.get_in(tx, &hold_id(job_id)).await?;
        Ok(hold.map(|h| h.credit).unwrap_or_else(|| job_escrow(job_id)))
    }

    /// Move the held cap into the job's escrow (once; a re-run finds it settled).
    async fn post_escrow(&self, tx: &mut Tx, job_id: &str, now: i64) -> Result<(), ApiError> {
        match self.ledger.execute_in(tx, &format!("job:{job_id}:escrow"), &Op::Post { pending_id: hold_id(job_id), amount: None }, now).await {
            Ok(_) => {}
            Err(ApiError::NotPending(_)) => {
                let hold = self.ledger.get_in(tx, &hold_id(job_id)).await?;
                if hold.map(|h| h.state) != Some(agora_wire::api::TransferState::Settled) {
                    return Err(ApiError::Internal(format!("the escrow hold of {job_id} is gone")));
                }
            }
            Err(e) => return Err(e),
        }
        sqlx::query("UPDATE jobs SET escrow_posted = 1 WHERE id = $1").bind(job_id).execute(&mut **tx).await?;
        Ok(())
    }

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
                let (id, provider): (String, String) = (lease.try_get("id")?, lease.try_get("provider")?);
                match self.expire_lease(table, key, &id, &provider).await {
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

    /// Expire one lost lease of `table` and mark its provider.
    async fn expire_lease(&self, table: &str, key: &str, id: &str, provider: &str) -> Result<bool, ApiError> {
        let done = sqlx::query(&format!("UPDATE {table} SET state = 'expired' WHERE {key} = $1 AND state = 'active'"))
            .bind(id)
            .execute(&self.db.pool)
            .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        self.mark(provider, super::Mark::LostLease).await?;
        Ok(true)
    }

    /// Record a failed settlement on the job and keep it out of the next
    /// sweeps for a while (doubling, up to an hour).
    async fn set_aside(&self, job: &str, error: &ApiError, now: i64) {
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
        let backoff = SETTLE_BACKOFF_MS.saturating_mul(1 << failures.clamp(0, 16)).min(MAX_SETTLE_BACKOFF_MS);
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

    /// The per-job escrow equation, for every job: its hold is the buyer's
    /// cap into the job's own account; held = paid + fees + refunded + still
    /// held; the escrow is never negative; a finished job holds nothing;
    /// every lease the market marks paid was paid by the ledger, and every
    /// payment the ledger made is to an accepted lease of this job; no
    /// market hold exists without its job.
    pub async fn check_escrows(&self) -> Result<Vec<String>, ApiError> {
        let mut violations = Vec::new();
        let jobs = sqlx::query(
            "SELECT j.id AS id, j.buyer AS buyer, j.state AS state, j.max_price AS max_price,
                    h.debit AS h_debit, h.credit AS h_credit, h.amount AS h_amount, h.state AS h_state, h.amount_posted AS h_posted,
                    CAST(COALESCE(a.credits_posted, 0) AS BIGINT) AS a_in, CAST(COALESCE(a.debits_posted, 0) AS BIGINT) AS a_out,
                    CAST(COALESCE(a.credits_pending, 0) AS BIGINT) AS a_pending,
                    (SELECT CAST(COALESCE(SUM(l.cost), 0) AS BIGINT) FROM leases l WHERE l.job_id = j.id AND l.paid = 1) AS leases_paid,
                    (SELECT CAST(COALESCE(SUM(t.amount), 0) AS BIGINT) FROM transfers t WHERE t.debit = 'job:' || j.id AND SUBSTR(t.id, 1, 6) = 'lease:') AS ledger_paid,
                    (SELECT CAST(COALESCE(SUM(t.amount), 0) AS BIGINT) FROM transfers t WHERE t.debit = 'job:' || j.id AND SUBSTR(t.id, 1, 6) <> 'lease:') AS refunded
             FROM jobs j LEFT JOIN transfers h ON h.id = 'job:' || j.id || ':hold' LEFT JOIN accounts a ON a.id = 'job:' || j.id",
        )
        .fetch_all(&self.db.pool)
        .await?;
        for r in &jobs {
            let id: String = r.try_get("id")?;
            let max_price: i64 = r.try_get("max_price")?;
            if r.try_get::<Option<String>, _>("h_credit")?.as_deref() == Some(crate::ledger::ESCROW) {
                continue; // submitted before escrow was per job: covered by the ledger's own checks
            }
            let hold_ok = r.try_get::<Option<String>, _>("h_debit")?.as_deref() == Some(r.try_get::<String, _>("buyer")?.as_str())
                && r.try_get::<Option<String>, _>("h_credit")? == Some(job_escrow(&id))
                && r.try_get::<Option<i64>, _>("h_amount")? == Some(max_price);
            if !hold_ok {
                violations.push(format!("job {id}: its hold is not the buyer's cap of {max_price} into its escrow"));
                continue;
            }
            let (a_in, a_out, a_pending): (i64, i64, i64) = (r.try_get("a_in")?, r.try_get("a_out")?, r.try_get("a_pending")?);
            let (leases_paid, ledger_paid, refunded): (i64, i64, i64) = (r.try_get("leases_paid")?, r.try_get("ledger_paid")?, r.try_get("refunded")?);
            let h_state: String = r.try_get("h_state")?;
            let released = match h_state.as_str() {
                "voided" | "expired" => max_price,
                "settled" => max_price - r.try_get::<Option<i64>, _>("h_posted")?.unwrap_or(0),
                _ => 0,
            };
            let still_held = a_in - a_out + a_pending;
            if a_in - a_out < 0 {
                violations.push(format!("job {id}: its escrow is negative ({})", a_in - a_out));
            }
            if max_price != ledger_paid + refunded + released + still_held {
                violations.push(format!(
                    "job {id}: held {max_price} != paid and fees {ledger_paid} + refunded {refunded} + released {released} + still held {still_held}"
                ));
            }
            // A lease marked paid was paid. (The ledger may be ahead: a crash
            // between a payment and its mark is repaired by the next settle,
            // which replays the payment's id.)
            if leases_paid > ledger_paid {
                violations.push(format!("job {id}: its leases record {leases_paid} paid, the ledger only {ledger_paid}"));
            }
            if r.try_get::<String, _>("state")? != "running" && (still_held != 0 || h_state == "pending") {
                violations.push(format!("job {id}: finished with {still_held} still held"));
            }
        }
        for r in sqlx::query(
            "SELECT t.id AS id FROM transfers t LEFT JOIN leases l ON l.id = SUBSTR(t.id, 7, LENGTH(t.id) - 10)
             WHERE SUBSTR(t.id, 1, 6) = 'lease:' AND LENGTH(t.id) > 10 AND (l.id IS NULL OR l.state NOT IN ('accepted', 'billed')
                   OR (t.debit <> ('job:' || l.job_id) AND t.debit <> 'escrow'))",
        )
        .fetch_all(&self.db.pool)
        .await?
        {
            violations.push(format!("transfer {} pays no accepted (or billed) lease of its job", r.try_get::<String, _>("id")?));
        }
        for r in sqlx::query(
            "SELECT t.id AS id FROM transfers t WHERE SUBSTR(t.id, 1, 4) = 'job:' AND t.kind = 'hold' AND t.state = 'pending'
             AND NOT EXISTS (SELECT 1 FROM jobs j WHERE t.id = 'job:' || j.id || ':hold')",
        )
        .fetch_all(&self.db.pool)
        .await?
        {
            violations.push(format!("pending hold {} escrows no job", r.try_get::<String, _>("id")?));
        }
        Ok(violations)
    }
}
