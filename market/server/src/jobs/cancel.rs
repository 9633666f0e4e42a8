//! Cancelling a job: its buyer stops it. In one transaction under the job's
//! lock, its queued units are withdrawn, its runs under way are stopped and
//! paid the time they ran, and the job is settled: results accepted before
//! stay paid, and the rest of the escrow goes back to the buyer at once.
//!
//! Design choices:
//! - A stopped run of a provider trusted at its grant is paid its
//!   wall-clock time, from its grant to the cancel (or to its answer, for a
//!   result the cancel leaves undecided), at its lease's per-wall-second
//!   ask, capped at the unit's cap ([`stopped_run_cost`]). Time is the one
//!   part of a run the market measures itself; fuel and GPU time are the
//!   provider's claim, believed only with a result the market decides (a
//!   farmed trusted key's wrong output claiming all the fuel would be
//!   outvoted, and a cancel must not pay it instead). A fresh key's stopped
//!   run is paid nothing: its work counts only when a trusted provider
//!   confirms it, so stalling a lease until the buyer gives up earns it
//!   nothing. A provider that wants stopped runs paid asks per wall
//!   second.
//! - A cancel never bills less than the job's expiry would: the runs a
//!   vouched host failed are billed as they would be then, and each unit's
//!   payments stay within its paid slots.
//! - The provider hears it in its next heartbeat's reply (`stop`) and
//!   kills the worker; a result it sends anyway is refused (its lease is
//!   not active any more), so nothing is paid twice.
//! - Only the buyer cancels (another key is told there is no such job, as
//!   for every buyer's route); cancelling a cancelled job answers again;
//!   a job that ended otherwise cannot be cancelled.
//! - A settlement that fails degrades as a result's does ([`Settling`]):
//!   the cancel is still recorded, and the sweeper ends the job later.

use super::failures::UnitTerms;
use super::settle::{Settling, lock_job};
use super::*;

/// A run the cancel stops: an active lease, or a result not decided yet.
#[derive(sqlx::FromRow)]
struct StoppedRow {
    id: String,
    idx: i64,
    state: String,
    created_at_ms: i64,
    answered_at_ms: Option<i64>,
    trusted: i64,
    ask_per_wall_second: i64,
}

/// What a stopped run is paid for, as [`stopped_run_cost`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoppedRun {
    /// The wall ask in force when its lease was granted.
    pub per_wall_second: u64,
    /// From its grant to its answer, or to the cancel.
    pub ran_ms: i64,
    /// Whether its provider was trusted at its grant: an untrusted key's
    /// run is paid nothing (its work counts only when a trusted provider
    /// confirms it, and a stopped run is confirmed by nobody).
    pub trusted: bool,
}

/// What the buyer pays for a stopped run: for a trusted provider's, its
/// time (at most the unit's timeout) at the lease's wall ask, never past
/// the unit's cap; for an untrusted one's, nothing.
pub(super) fn stopped_run_cost(run: StoppedRun, terms: &UnitTerms) -> u64 {
    if !run.trusted {
        return 0;
    }
    let ask = Ask {
        per_billion_fuel: 0,
        per_gpu_second: 0,
        per_wall_second: run.per_wall_second,
    };
    let usage = Usage {
        wall_ms: (run.ran_ms.max(0) as u64).min(terms.timeout_ms),
        ..Usage::default()
    };
    price(ask, usage).min(terms.unit_cap)
}

impl StoppedRow {
    fn run(&self, now: i64) -> StoppedRun {
        StoppedRun {
            per_wall_second: self.ask_per_wall_second.max(0) as u64,
            ran_ms: self.answered_at_ms.unwrap_or(now) - self.created_at_ms,
            trusted: self.trusted == 1,
        }
    }
}

impl Jobs {
    /// Cancel job `job_id` for `buyer`. After it the job is cancelled, or
    /// still running while a settlement set aside waits for its turn, or
    /// done when its last unit was verified before the cancel.
    pub async fn cancel(&self, buyer: &KeyId, job_id: &str, now: i64) -> Result<(), ApiError> {
        for scope in Settling::FALLBACKS {
            let mut tx = self.db.write().await?;
            let job = lock_job(&mut tx, self.db.kind, job_id).await?;
            if job.buyer != buyer.as_str() {
                return Err(ApiError::NotFound(format!("no job `{job_id}`")));
            }
            match job.state.0 {
                JobState::Running => {}
                JobState::Cancelled => return Ok(()),
                ended => {
                    return Err(ApiError::JobEnded {
                        job: job_id.into(),
                        state: ended,
                    });
                }
            }
            self.stop_units(&mut tx, job_id, now).await?;
            match self
                .settle_and_commit(tx, job_id, now, scope, Vec::new())
                .await?
            {
                Ok(()) => return Ok(()),
                Err(e) => tracing::warn!(
                    job = job_id,
                    ?scope,
                    "settling a cancelled job failed; trying with less: {e}"
                ),
            }
        }
        unreachable!("Settling::Nothing commits or returns the database's error")
    }

    /// Withdraw the job's queued units, stop its runs (each paid its time),
    /// and record the cancel, in `tx` (which holds the job's lock).
    async fn stop_units(&self, tx: &mut Tx, job_id: &str, now: i64) -> Result<(), ApiError> {
        // The open units locked first (PostgreSQL): a lease being granted
        // on one now commits before its leases are read below, and none is
        // granted after.
        let lock = if self.db.kind == Kind::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        sqlx::query(&format!(
            "SELECT idx FROM units WHERE job_id = $1 AND state = 'queued' ORDER BY idx{lock}"
        ))
        .bind(job_id)
        .fetch_all(&mut **tx)
        .await?;
        // What an expiry would bill (runs a vouched host failed, counted
        // as the job's doing), a cancel bills too: a job cannot log its
        // answer, fail, and be cancelled for free.
        self.bill_open_units_at_expiry(tx, job_id).await?;
        let terms = decide::unit_terms(tx, job_id).await?;
        let runs = sqlx::query_as::<_, StoppedRow>(
            "SELECT l.id AS id, l.idx AS idx, l.state AS state, l.created_at_ms AS created_at_ms, l.answered_at_ms AS answered_at_ms,
                    l.trusted AS trusted, l.ask_per_wall_second AS ask_per_wall_second
             FROM leases l JOIN units u ON u.job_id = l.job_id AND u.idx = l.idx
             WHERE l.job_id = $1 AND u.state = 'queued'
               AND (l.state IN ('submitted', 'verifying') OR (l.state = 'active' AND l.expires_at_ms > $2))
             ORDER BY l.idx, l.trusted DESC, l.created_at_ms, l.id",
        )
        .bind(job_id)
        .bind(now)
        .fetch_all(&mut **tx)
        .await?;
        for row in runs {
            let run = row.run(now);
            // A unit's payments stay within its paid slots (what the
            // escrow holds for it), billed failures and accepted results
            // counted first.
            let paid: i64 = sqlx::query("SELECT COUNT(*) AS n FROM leases WHERE job_id = $1 AND idx = $2 AND state IN ('accepted', 'billed')")
                .bind(job_id)
                .bind(row.idx)
                .fetch_one(&mut **tx)
                .await?
                .try_get("n")?;
            let cost = if paid as usize >= terms.paid_slots {
                0
            } else {
                stopped_run_cost(run, &terms)
            };
            let state = if cost > 0 { "billed" } else { "cancelled" };
            sqlx::query(
                "UPDATE leases SET state = $1, cost = $2, wall_ms = $3, answered_at_ms = COALESCE(answered_at_ms, $6),
                        message = 'stopped: the buyer cancelled the job'
                 WHERE id = $4 AND state = $5",
            )
            .bind(state)
            .bind(cost as i64)
            .bind(run.ran_ms.max(0))
            .bind(&row.id)
            .bind(&row.state)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        // No result of the job waits for a verdict any more: a verifier
        // running one finds its lease stopped and drops the verdict.
        sqlx::query("DELETE FROM verifications WHERE job_id = $1")
            .bind(job_id)
            .execute(&mut **tx)
            .await?;
        sqlx::query("UPDATE units SET state = 'failed', message = 'the buyer cancelled the job' WHERE job_id = $1 AND state = 'queued'")
            .bind(job_id)
            .execute(&mut **tx)
            .await?;
        sqlx::query(
            "UPDATE jobs SET cancelled_at_ms = $1 WHERE id = $2 AND cancelled_at_ms IS NULL",
        )
        .bind(now)
        .bind(job_id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TERMS: UnitTerms = UnitTerms {
        paid_slots: 3,
        fuel_limit: 1_000_000_000,
        timeout_ms: 60_000,
        unit_cap: 1_000,
    };

    fn run(per_wall_second: u64, ran_ms: i64) -> StoppedRun {
        StoppedRun {
            per_wall_second,
            ran_ms,
            trusted: true,
        }
    }

    #[test]
    fn a_trusted_stopped_run_is_paid_its_time_up_to_the_cap() {
        assert_eq!(stopped_run_cost(run(10, 1_500), &TERMS), 15);
        assert_eq!(stopped_run_cost(run(10, 1), &TERMS), 1, "rounded up");
        assert_eq!(
            stopped_run_cost(run(10, -5), &TERMS),
            0,
            "a clock step back"
        );
        assert_eq!(stopped_run_cost(run(0, 60_000), &TERMS), 0, "no wall ask");
        assert_eq!(
            stopped_run_cost(run(1, 90_000), &TERMS),
            60,
            "time past the unit's timeout is not paid"
        );
        assert_eq!(
            stopped_run_cost(run(1_000_000, 1_000), &TERMS),
            1_000,
            "never past the cap"
        );
        let untrusted = StoppedRun {
            trusted: false,
            ..run(10, 1_000)
        };
        assert_eq!(
            stopped_run_cost(untrusted, &TERMS),
            0,
            "a fresh key's stopped run"
        );
    }
}
