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
//!   provider's claim, believed for a trusted, metered result waiting for
//!   its unit's decision (as a trusted result alone is paid). A fresh key's
//!   stopped run is paid nothing: its work counts only when a trusted
//!   provider confirms it, so stalling a lease until the buyer gives up
//!   earns a key it could farm nothing. A provider that wants stopped runs
//!   paid asks per wall second.
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
    metered: i64,
    fuel_used: Option<i64>,
    gpu_time_us: Option<i64>,
    ask_per_billion_fuel: i64,
    ask_per_gpu_second: i64,
    ask_per_wall_second: i64,
}

/// What a stopped run is paid for, as [`stopped_run_cost`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoppedRun {
    /// The ask in force when its lease was granted.
    pub ask: Ask,
    /// From its grant to its answer, or to the cancel.
    pub ran_ms: i64,
    /// Whether its provider was trusted at its grant: an untrusted key's
    /// run is paid nothing (its work counts only when a trusted provider
    /// confirms it, and a stopped run is confirmed by nobody).
    pub trusted: bool,
    /// The fuel and GPU time a finished, metered run claims, believed for
    /// a trusted provider's result waiting for its unit's decision (as a
    /// trusted result alone is paid); none for a run still going or a
    /// result waiting for `verify`.
    pub claimed: Option<(u64, u64)>,
}

/// What the buyer pays for a stopped run: its time at the lease's wall
/// ask, plus, for a trusted finished run, its claimed fuel and GPU time at
/// the lease's other asks; each capped by the unit's limits, and the whole
/// by the unit's cap.
pub(super) fn stopped_run_cost(run: StoppedRun, terms: &UnitTerms) -> u64 {
    if !run.trusted {
        return 0;
    }
    let (fuel, gpu_time_us) = run.claimed.unwrap_or((0, 0));
    let usage = Usage {
        fuel: fuel.min(terms.fuel_limit),
        gpu_time_us: gpu_time_us.min(terms.timeout_ms.saturating_mul(1000)),
        wall_ms: (run.ran_ms.max(0) as u64).min(terms.timeout_ms),
    };
    price(run.ask, usage).min(terms.unit_cap)
}

impl StoppedRow {
    fn run(&self, now: i64) -> StoppedRun {
        let get = |v: i64| v.max(0) as u64;
        StoppedRun {
            ask: Ask {
                per_billion_fuel: get(self.ask_per_billion_fuel),
                per_gpu_second: get(self.ask_per_gpu_second),
                per_wall_second: get(self.ask_per_wall_second),
            },
            ran_ms: self.answered_at_ms.unwrap_or(now) - self.created_at_ms,
            trusted: self.trusted == 1,
            claimed: (self.state == "submitted" && self.metered == 1).then(|| {
                (
                    get(self.fuel_used.unwrap_or(0)),
                    get(self.gpu_time_us.unwrap_or(0)),
                )
            }),
        }
    }
}

impl Jobs {
    /// Cancel job `job_id` for `buyer`: the job's state after (cancelled,
    /// or still running while a settlement set aside waits for its turn,
    /// or done when its last unit was verified before the cancel).
    pub async fn cancel(
        &self,
        buyer: &KeyId,
        job_id: &str,
        now: i64,
    ) -> Result<JobState, ApiError> {
        for scope in Settling::FALLBACKS {
            let mut tx = self.db.write().await?;
            let job = lock_job(&mut tx, self.db.kind, job_id).await?;
            if job.buyer != buyer.as_str() {
                return Err(ApiError::NotFound(format!("no job `{job_id}`")));
            }
            match job.state.0 {
                JobState::Running => {}
                JobState::Cancelled => return Ok(JobState::Cancelled),
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
                Ok(()) => return self.state_of(job_id).await,
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
                    l.trusted AS trusted, l.metered AS metered, l.fuel_used AS fuel_used, l.gpu_time_us AS gpu_time_us,
                    l.ask_per_billion_fuel AS ask_per_billion_fuel, l.ask_per_gpu_second AS ask_per_gpu_second, l.ask_per_wall_second AS ask_per_wall_second
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

    async fn state_of(&self, job_id: &str) -> Result<JobState, ApiError> {
        let text: String = sqlx::query("SELECT state FROM jobs WHERE id = $1")
            .bind(job_id)
            .fetch_one(&self.db.pool)
            .await?
            .try_get("state")?;
        text.parse()
            .map_err(|e| ApiError::Internal(format!("a stored job's {e}")))
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

    fn run(per_wall_second: u64, ran_ms: i64, claimed: Option<(u64, u64)>) -> StoppedRun {
        StoppedRun {
            ask: Ask {
                per_billion_fuel: 100,
                per_gpu_second: 10,
                per_wall_second,
            },
            ran_ms,
            trusted: true,
            claimed,
        }
    }

    #[test]
    fn a_trusted_stopped_run_is_paid_its_time_and_a_finished_one_its_claim_up_to_the_cap() {
        assert_eq!(stopped_run_cost(run(10, 1_500, None), &TERMS), 15);
        assert_eq!(stopped_run_cost(run(10, 1, None), &TERMS), 1, "rounded up");
        assert_eq!(
            stopped_run_cost(run(10, -5, None), &TERMS),
            0,
            "a clock step back"
        );
        assert_eq!(
            stopped_run_cost(run(0, 60_000, None), &TERMS),
            0,
            "no wall ask"
        );
        assert_eq!(
            stopped_run_cost(run(1, 90_000, None), &TERMS),
            60,
            "time past the unit's timeout is not paid"
        );
        // 0.5 billion fuel at 100, 2 GPU seconds at 10, 1 s at 10.
        assert_eq!(
            stopped_run_cost(run(10, 1_000, Some((500_000_000, 2_000_000))), &TERMS),
            50 + 20 + 10
        );
        assert_eq!(
            stopped_run_cost(run(10, 1_000, Some((u64::MAX, 0))), &TERMS),
            110,
            "fuel past the unit's limit is not paid"
        );
        let mut untrusted = run(10, 1_000, Some((500_000_000, 0)));
        untrusted.trusted = false;
        assert_eq!(
            stopped_run_cost(untrusted, &TERMS),
            0,
            "a fresh key's stopped run"
        );
        let mut pricey = run(10, 1_000, None);
        pricey.ask.per_wall_second = 1_000_000;
        assert_eq!(
            stopped_run_cost(pricey, &TERMS),
            1_000,
            "never past the cap"
        );
    }
}
