//! Settlement: paying accepted leases from the job's own escrow,
//! refunding what was not spent, and the per-job escrow invariant.
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
//!   or not at all. That transaction locks the job's row first, then its
//!   leases and units, then accounts (in id order, as every ledger write
//!   does), then the hold's row, then provider rows (in id order); the
//!   job's other rows it writes later are covered by the job's lock.
//!   Replicas settling the same job wait for each other; heartbeats renew
//!   lease by lease on PostgreSQL, so they hold no set of leases a
//!   settlement could wait on in a cycle.
//! - Failure degrades, never loses: a settlement whose end fails is rolled
//!   back and its payments made alone ([`Settling`]); a result whose job
//!   cannot be settled is taken alone, for the sweeper.
//! - Every transfer id is deterministic (`lease:{id}:pay`, `job:{id}:refund`):
//!   a re-run, or a second replica, replays instead of paying twice.
//! - Assertions pair: the refund the market computes from its leases must
//!   equal what the ledger says the job's escrow still holds, or nothing is
//!   refunded and the job is set aside for the operator.

use super::{Jobs, decide, failures};
use crate::db::{Kind, Text, Tx};
use crate::error::ApiError;
use crate::ledger::{FEES, Op, job_escrow};
use agora_wire::api::{JobState, TransferState};
use sqlx::Row;

pub(super) fn hold_id(job: &str) -> String {
    format!("job:{job}:hold")
}

/// What settlement reads of a job.
#[derive(sqlx::FromRow)]
pub(super) struct JobRow {
    pub buyer: String,
    pub max_price: i64,
    pub state: Text<JobState>,
    pub expires_at_ms: i64,
    /// 1 once the hold is posted into the job's escrow.
    pub escrow_posted: i64,
    /// Set aside after failed settlements until then.
    pub settle_after_ms: i64,
}

/// What a transaction settles of its job, from the most to nothing: each
/// caller tries the next when the one before fails, so a job whose end
/// cannot be settled still pays its providers, and a result whose job
/// cannot be settled at all is still taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Settling {
    /// Pay accepted leases, and end the job when it is over.
    Everything,
    /// Pay accepted leases only.
    Payments,
    Nothing,
}

impl Settling {
    pub(super) const FALLBACKS: [Settling; 3] =
        [Settling::Everything, Settling::Payments, Settling::Nothing];
}

/// Lock job `job_id`'s row for the rest of `tx` and read it. Every
/// transaction that decides, pays or ends a job's units takes this lock
/// first (on SQLite the write transaction holds the whole database), so
/// they run one after another and lock the rest in one order.
pub(super) async fn lock_job(tx: &mut Tx, kind: Kind, job_id: &str) -> Result<JobRow, ApiError> {
    let lock = if kind == Kind::Postgres {
        " FOR UPDATE"
    } else {
        ""
    };
    sqlx::query_as::<_, JobRow>(&format!("SELECT buyer, max_price, state, expires_at_ms, escrow_posted, settle_after_ms FROM jobs WHERE id = $1{lock}"))
        .bind(job_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job `{job_id}`")))
}

/// A lease due to be paid, as stored.
#[derive(sqlx::FromRow)]
struct DueLease {
    id: String,
    provider: String,
    cost: Option<i64>,
}

/// One job's line of the escrow equation, as [`Jobs::check_escrows`]
/// reads it: the job, its hold, its escrow account, and what its leases
/// and the ledger say it paid and refunded.
#[derive(sqlx::FromRow)]
struct EscrowLine {
    id: String,
    buyer: String,
    state: String,
    max_price: i64,
    h_debit: Option<String>,
    h_credit: Option<String>,
    h_amount: Option<i64>,
    h_state: Option<String>,
    h_posted: Option<i64>,
    a_in: i64,
    a_out: i64,
    a_pending: i64,
    leases_paid: i64,
    ledger_paid: i64,
    refunded: i64,
}

impl EscrowLine {
    /// What is wrong with this job's escrow (nothing, for a job of the
    /// shared escrow of earlier versions: the ledger's own checks cover it).
    fn violations(&self) -> Vec<String> {
        let (id, max_price) = (&self.id, self.max_price);
        if self.h_credit.as_deref() == Some(crate::ledger::ESCROW) {
            return Vec::new();
        }
        let hold_ok = self.h_debit.as_deref() == Some(self.buyer.as_str())
            && self.h_credit.as_deref() == Some(job_escrow(id).as_str())
            && self.h_amount == Some(max_price);
        if !hold_ok {
            return vec![format!(
                "job {id}: its hold is not the buyer's cap of {max_price} into its escrow"
            )];
        }
        let hold_state = match self.h_state.as_deref().map(str::parse::<TransferState>) {
            Some(Ok(state)) => Some(state),
            Some(Err(e)) => return vec![format!("job {id}: its hold's {e}")],
            None => None,
        };
        let released = match hold_state {
            Some(TransferState::Voided | TransferState::Expired) => max_price,
            Some(TransferState::Settled) => max_price - self.h_posted.unwrap_or(0),
            _ => 0,
        };
        let mut violations = Vec::new();
        let still_held = self.a_in - self.a_out + self.a_pending;
        if self.a_in - self.a_out < 0 {
            violations.push(format!(
                "job {id}: its escrow is negative ({})",
                self.a_in - self.a_out
            ));
        }
        if max_price != self.ledger_paid + self.refunded + released + still_held {
            violations.push(format!(
                "job {id}: held {max_price} != paid and fees {} + refunded {} + released {released} + still held {still_held}",
                self.ledger_paid, self.refunded
            ));
        }
        // Paired: a lease is marked paid in the transaction that pays it,
        // so the leases and the ledger agree to the credit.
        if self.leases_paid != self.ledger_paid {
            violations.push(format!(
                "job {id}: its leases record {} paid, the ledger {}",
                self.leases_paid, self.ledger_paid
            ));
        }
        let Ok(state) = self.state.parse::<JobState>() else {
            violations.push(format!(
                "job {id}: its state `{}` is no job state",
                self.state
            ));
            return violations;
        };
        if state != JobState::Running
            && (still_held != 0 || hold_state == Some(TransferState::Pending))
        {
            violations.push(format!("job {id}: finished with {still_held} still held"));
        }
        violations
    }
}

/// One accepted lease's payment: its provider's share and the market's fee.
struct Payment {
    lease: String,
    provider: String,
    to_provider: u64,
    fee: u64,
}

impl Jobs {
    /// Pay accepted leases and finish the job when every unit is final, in
    /// one transaction. Safe to run again at any time: every transfer id is
    /// deterministic, and a failure leaves nothing half done.
    /// Should the job's end fail (a refund the ledger contradicts, a hold
    /// gone), its providers are paid all the same and the error returned,
    /// for the sweeper to set the job aside.
    pub async fn settle(&self, job_id: &str, now: i64) -> Result<(), ApiError> {
        let ended = self.settle_once(job_id, now, Settling::Everything).await;
        if let Err(e) = &ended {
            tracing::warn!(
                job = job_id,
                "ending the job failed; paying its accepted leases alone: {e}"
            );
            if let Err(paying) = self.settle_once(job_id, now, Settling::Payments).await {
                tracing::warn!(
                    job = job_id,
                    "paying the job's accepted leases failed too: {paying}"
                );
            }
        }
        ended
    }

    async fn settle_once(&self, job_id: &str, now: i64, scope: Settling) -> Result<(), ApiError> {
        let mut tx = self.db.write().await?;
        if let Err(e) = self.settle_in(&mut tx, job_id, now, scope).await {
            tx.rollback().await?;
            return Err(e);
        }
        tx.commit().await?;
        Ok(())
    }

    /// End a transaction that took results of job `job_id` (a result's, a
    /// verdict's): settle `scope` of the job in it, apply `marks` (provider
    /// rows last, as every such transaction locks them) and commit.
    /// `Ok(Err(e))`: the settlement failed and the transaction was rolled
    /// back, for the caller to try again with less.
    pub(super) async fn settle_and_commit(
        &self,
        mut tx: Tx,
        job_id: &str,
        now: i64,
        scope: Settling,
        marks: Vec<(String, super::Mark)>,
    ) -> Result<Result<(), ApiError>, ApiError> {
        if let Err(e) = self.settle_in(&mut tx, job_id, now, scope).await {
            tx.rollback().await?;
            return Ok(Err(e));
        }
        Self::mark_all(&mut tx, marks).await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// [`Jobs::settle`] inside the caller's transaction, which holds (or
    /// takes here) the job's lock: no lease of the job is accepted while it
    /// runs, so what it pays and refunds is final. `scope` says whether it
    /// may end the job; a job set aside after failed settlements ends only
    /// when the sweeper's back-off is over.
    pub(super) async fn settle_in(
        &self,
        tx: &mut Tx,
        job_id: &str,
        now: i64,
        scope: Settling,
    ) -> Result<(), ApiError> {
        if scope == Settling::Nothing {
            return Ok(());
        }
        let JobRow {
            buyer,
            max_price,
            state: Text(state),
            expires_at_ms,
            escrow_posted,
            settle_after_ms,
        } = lock_job(tx, self.db.kind, job_id).await?;
        let max_price = max_price as u64;
        let may_end =
            scope == Settling::Everything && state == JobState::Running && settle_after_ms <= now;
        let ending = may_end && self.ends_now(tx, job_id, expires_at_ms, now).await?;
        let payments = self.payments_due(tx, job_id).await?;
        if payments.is_empty() && !ending {
            return Ok(());
        }
        let escrow = self.escrow_of(tx, job_id).await?;
        let mut accounts = vec![escrow.as_str(), buyer.as_str()];
        accounts.extend(
            payments
                .iter()
                .filter(|p| p.to_provider > 0)
                .map(|p| p.provider.as_str()),
        );
        if payments.iter().any(|p| p.fee > 0) {
            accounts.push(FEES);
        }
        self.ledger.lock_accounts(tx, &accounts, now).await?;
        let mut escrow_posted = escrow_posted == 1;
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
            self.refund(tx, job_id, &escrow, &buyer, max_price, spent as u64, now)
                .await?;
        } else {
            match self
                .ledger
                .execute_in(
                    tx,
                    &format!("job:{job_id}:void"),
                    &Op::Void {
                        pending_id: hold_id(job_id),
                    },
                    now,
                )
                .await
            {
                Ok(_) | Err(ApiError::NotPending(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.finish(tx, job_id, expires_at_ms <= now, now).await
    }

    /// Whether running job `job_id` ends in this settlement: every unit is
    /// final, or the job expired (and waits for no verdict), in which case
    /// its open units fail and its active leases expire here.
    async fn ends_now(
        &self,
        tx: &mut Tx,
        job_id: &str,
        expires_at_ms: i64,
        now: i64,
    ) -> Result<bool, ApiError> {
        let open: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM units WHERE job_id = $1 AND state = 'queued'")
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
        self.bill_open_units_at_expiry(tx, job_id).await?;
        sqlx::query("UPDATE units SET state = 'failed', message = 'the job expired' WHERE job_id = $1 AND state = 'queued'")
            .bind(job_id)
            .execute(&mut **tx)
            .await?;
        sqlx::query("UPDATE leases SET state = 'expired' WHERE job_id = $1 AND state = 'active'")
            .bind(job_id)
            .execute(&mut **tx)
            .await?;
        Ok(true)
    }

    /// Bill the missed runs of the job's units still open at its expiry
    /// that a vouched host failed (what it and other trusted providers did
    /// is work, whether or not their failures matched; see
    /// `failures::billable_at_expiry`). An output still waiting for its
    /// quorum does not stop it: the operator's own host failed the unit,
    /// and an unconfirmed output (a farmed key's, say) must not hold that
    /// work unpaid.
    pub(super) async fn bill_open_units_at_expiry(
        &self,
        tx: &mut Tx,
        job_id: &str,
    ) -> Result<(), ApiError> {
        let open: Vec<i64> = sqlx::query(
            "SELECT u.idx AS idx FROM units u WHERE u.job_id = $1 AND u.state = 'queued'
               AND EXISTS (SELECT 1 FROM leases l JOIN vouched v ON v.id = l.provider WHERE l.job_id = u.job_id AND l.idx = u.idx
                           AND l.trusted = 1 AND l.state IN ('failed', 'rejected'))",
        )
        .bind(job_id)
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| r.try_get("idx"))
        .collect::<Result<_, _>>()?;
        if open.is_empty() {
            return Ok(());
        }
        let terms = decide::unit_terms(tx, job_id).await?;
        for idx in open {
            let runs = decide::missed_runs(tx, job_id, idx).await?;
            if failures::billable_at_expiry(&runs, terms.timeout_ms) {
                decide::bill_missed_runs(tx, &runs, terms).await?;
            }
        }
        Ok(())
    }

    /// The job's accepted (or billed) leases not paid yet, by provider (the
    /// order their payments run in; their accounts are locked together, in
    /// id order, before any).
    async fn payments_due(&self, tx: &mut Tx, job_id: &str) -> Result<Vec<Payment>, ApiError> {
        let due = sqlx::query_as::<_, DueLease>(
            "SELECT id, provider, cost FROM leases WHERE job_id = $1 AND state IN ('accepted', 'billed') AND paid = 0 ORDER BY provider, id",
        )
        .bind(job_id)
        .fetch_all(&mut **tx)
        .await?;
        Ok(due
            .into_iter()
            .map(|l| {
                let cost = l.cost.unwrap_or(0).max(0) as u64;
                let fee = self.config.fee_of(cost);
                Payment {
                    lease: l.id,
                    provider: l.provider,
                    to_provider: cost - fee,
                    fee,
                }
            })
            .collect())
    }

    /// Pay `payments` from `escrow` and mark their leases paid.
    async fn pay(
        &self,
        tx: &mut Tx,
        escrow: &str,
        payments: &[Payment],
        now: i64,
    ) -> Result<(), ApiError> {
        for p in payments {
            if p.to_provider > 0 {
                let op = Op::Single {
                    debit: escrow.into(),
                    credit: p.provider.clone(),
                    amount: p.to_provider,
                };
                self.ledger
                    .execute_in(tx, &format!("lease:{}:pay", p.lease), &op, now)
                    .await?;
            }
        }
        for p in payments.iter().filter(|p| p.fee > 0) {
            let op = Op::Single {
                debit: escrow.into(),
                credit: FEES.into(),
                amount: p.fee,
            };
            self.ledger
                .execute_in(tx, &format!("lease:{}:fee", p.lease), &op, now)
                .await?;
        }
        for p in payments {
            sqlx::query("UPDATE leases SET paid = 1 WHERE id = $1")
                .bind(&p.lease)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Record how the job ended: done when every unit is verified, else
    /// cancelled when its buyer cancelled it.
    async fn finish(
        &self,
        tx: &mut Tx,
        job_id: &str,
        expired: bool,
        now: i64,
    ) -> Result<(), ApiError> {
        let counts = sqlx::query("SELECT COUNT(*) AS total, CAST(COALESCE(SUM(CASE WHEN state = 'verified' THEN 1 ELSE 0 END), 0) AS BIGINT) AS verified FROM units WHERE job_id = $1")
            .bind(job_id)
            .fetch_one(&mut **tx)
            .await?;
        let (total, verified): (i64, i64) = (counts.try_get("total")?, counts.try_get("verified")?);
        let cancelled: Option<i64> = sqlx::query("SELECT cancelled_at_ms FROM jobs WHERE id = $1")
            .bind(job_id)
            .fetch_one(&mut **tx)
            .await?
            .try_get("cancelled_at_ms")?;
        let state = if verified == total {
            "done"
        } else if cancelled.is_some() {
            "cancelled"
        } else if expired {
            "expired"
        } else {
            "failed"
        };
        sqlx::query(
            "UPDATE jobs SET state = $1, finished_at_ms = $2 WHERE id = $3 AND state = 'running'",
        )
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
    async fn refund(
        &self,
        tx: &mut Tx,
        job_id: &str,
        escrow: &str,
        buyer: &str,
        max_price: u64,
        spent: u64,
        now: i64,
    ) -> Result<(), ApiError> {
        let refund = max_price.checked_sub(spent).ok_or_else(|| {
            ApiError::Internal(format!("{job_id} spent {spent} of a {max_price} cap"))
        })?;
        let id = format!("job:{job_id}:refund");
        let held = self
            .ledger
            .balance_in(tx, escrow)
            .await?
            .map(|b| b.credits_posted - b.debits_posted)
            .unwrap_or(0);
        let done = self.ledger.get_in(tx, &id).await?.is_some();
        // (A job of the shared escrow of earlier versions cannot be checked
        // this way: other jobs' funds sit beside its own.)
        let shared = escrow == crate::ledger::ESCROW;
        if !shared && held != if done { 0 } else { refund } {
            return Err(ApiError::Internal(format!(
                "the escrow of {job_id} holds {held}, its leases leave {refund}"
            )));
        }
        if refund > 0 {
            let op = Op::Single {
                debit: escrow.to_string(),
                credit: buyer.to_string(),
                amount: refund,
            };
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
        match self
            .ledger
            .execute_in(
                tx,
                &format!("job:{job_id}:escrow"),
                &Op::Post {
                    pending_id: hold_id(job_id),
                    amount: None,
                },
                now,
            )
            .await
        {
            Ok(_) => {}
            Err(ApiError::NotPending(_)) => {
                let hold = self.ledger.get_in(tx, &hold_id(job_id)).await?;
                if hold.map(|h| h.state) != Some(agora_wire::api::TransferState::Settled) {
                    return Err(ApiError::Internal(format!(
                        "the escrow hold of {job_id} is gone"
                    )));
                }
            }
            Err(e) => return Err(e),
        }
        sqlx::query("UPDATE jobs SET escrow_posted = 1 WHERE id = $1")
            .bind(job_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The per-job escrow equation, for every job: its hold is the buyer's
    /// cap into the job's own account; held = paid + fees + refunded + still
    /// held; the escrow is never negative; a finished job holds nothing;
    /// every lease the market marks paid was paid by the ledger, and every
    /// payment the ledger made is to an accepted lease of this job; no
    /// market hold exists without its job.
    pub async fn check_escrows(&self) -> Result<Vec<String>, ApiError> {
        let mut violations = Vec::new();
        let jobs = sqlx::query_as::<_, EscrowLine>(
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
        for line in &jobs {
            violations.extend(line.violations());
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
