//! Reputation: the marks an outcome earns a provider, the Beta record
//! with decay they move, and when a record makes a provider trusted.

use super::*;

/// How much an outcome weighs for or against a provider.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mark {
    Success,
    /// A success with independent evidence: a provider trusted at its
    /// grant agreed, or a canary's known answer. Only these build trust.
    Confirmed,
    /// The unit ran past its deadline on this provider.
    Timeout,
    /// The provider's worker died (a crash, or killed for a hung device).
    Crash,
    /// The provider stopped heartbeating while it held a lease.
    LostLease,
    /// The provider's output lost a quorum or failed the package's verify.
    Mismatch,
}

impl Mark {
    fn weights(self) -> (f64, f64) {
        match self {
            Mark::Success | Mark::Confirmed => (1.0, 0.0),
            Mark::Timeout => (0.0, 1.0),
            Mark::Crash => (0.0, 1.5),
            Mark::LostLease => (0.0, 2.0),
            Mark::Mismatch => (0.0, 3.0),
        }
    }

    /// The mark of a failed run that other evidence contradicts: the unit
    /// succeeded on another provider, or it is a canary known to succeed.
    /// (A failure that happens the same way on independent providers is
    /// the job's doing and marks nobody: it is never passed here.) Running
    /// out of time is slowness; a lost worker a crash; an error, a trap, a
    /// refusal or a fuel or memory limit is deterministic, so contradicted
    /// it is a false report. The limit kind is the provider's own word: a
    /// timeout claimed sooner than the unit's timeout by the market's clock
    /// (grant to result) is a false report too.
    pub fn of_contradicted_failure(
        outcome: RunOutcome,
        limit: Option<LimitKind>,
        ran_ms: i64,
        timeout_ms: i64,
    ) -> Mark {
        match (outcome, limit) {
            (RunOutcome::LimitExceeded, Some(LimitKind::Timeout)) if ran_ms < timeout_ms => {
                Mark::Mismatch
            }
            (RunOutcome::LimitExceeded, Some(LimitKind::CompileTime))
                if ran_ms < COMPILE_TIME_MS =>
            {
                Mark::Mismatch
            }
            (RunOutcome::LimitExceeded, Some(LimitKind::Timeout | LimitKind::CompileTime)) => {
                Mark::Timeout
            }
            (RunOutcome::WorkerLost, _) => Mark::Crash,
            _ => Mark::Mismatch,
        }
    }
}

pub(super) fn reputation_mean(good: f64, bad: f64) -> f64 {
    (good + 1.0) / (good + bad + 2.0)
}

/// A provider's record, as trust reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Record {
    pub good: f64,
    pub bad: f64,
    pub confirmed: f64,
    /// The operator vouches for this key (its own host).
    pub vouched: bool,
}

impl Record {
    pub(super) fn of(row: &AnyRow) -> Result<Record, sqlx::Error> {
        Ok(Record {
            good: row.try_get("good")?,
            bad: row.try_get("bad")?,
            confirmed: row.try_get("confirmed")?,
            vouched: row.try_get::<i64, _>("vouched")? > 0,
        })
    }

    /// Whether this provider's results count alone; otherwise they need a
    /// trusted provider's agreement, the package's `verify`, or a canary.
    pub fn trusted(&self) -> bool {
        let mean = reputation_mean(self.good, self.bad);
        if self.vouched {
            return mean >= VOUCHED_REPUTATION;
        }
        mean >= TRUSTED_REPUTATION && self.confirmed >= TRUSTED_CONFIRMATIONS
    }
}

/// Move `provider`'s reputation by `mark`, through `db` (the pool or a
/// transaction).
pub(super) async fn mark_provider<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    provider: &str,
    mark: Mark,
) -> Result<(), ApiError> {
    let (good, bad) = mark.weights();
    let confirmed = matches!(mark, Mark::Confirmed) as i64 as f64;
    sqlx::query(
        "UPDATE providers SET good = good * $1 + $2, bad = bad * $1 + $3, units_done = units_done + $4, confirmed = confirmed * $1 + $6 WHERE id = $5",
    )
    .bind(REPUTATION_DECAY)
    .bind(good)
    .bind(bad)
    .bind(matches!(mark, Mark::Success | Mark::Confirmed) as i64)
    .bind(provider)
    .bind(confirmed)
    .execute(db)
    .await?;
    Ok(())
}

impl Jobs {
    pub(super) async fn mark(&self, provider: &str, mark: Mark) -> Result<(), ApiError> {
        mark_provider(&self.db.pool, provider, mark).await
    }

    /// Apply `marks` in the caller's transaction, in provider order (the
    /// order every transaction locks provider rows in).
    pub(super) async fn mark_all(
        tx: &mut Tx,
        mut marks: Vec<(String, Mark)>,
    ) -> Result<(), ApiError> {
        marks.sort_by(|a, b| a.0.cmp(&b.0));
        for (provider, mark) in marks {
            mark_provider(&mut **tx, &provider, mark).await?;
        }
        Ok(())
    }
}
