//! Deciding a unit once a result is in: which output is the unit's (a
//! quorum of equal digests, or every result passing the package's
//! `verify`), which leases are accepted, and what each accepted lease is
//! paid.
//!
//! Design choices:
//! - A lease is paid from the usage its unit's accepted replicas agree on,
//!   never from what one provider claims: fuel is deterministic, so metered
//!   replicas of one unit report the same fuel; the market pays the least
//!   fuel, GPU time and wall time any accepted replica shows, each capped by
//!   the unit's limits, at the ask in force when each lease was granted.
//! - A replica whose fuel contradicts a strict majority of the others is a
//!   mismatch: rejected, unpaid, marked. Metered replicas of one output
//!   that differ in fuel with no majority get one more replica to make one
//!   (a provider reporting 0 fuel to cut its peer's pay is outvoted); when
//!   no replica is left, everyone is paid the least and nobody is marked.
//!   Jobs checked by `verify` are exempt: their replicas may legitimately
//!   take different paths.
//! - The usage arithmetic is a pure function ([`agreed_usage`]); the
//!   transaction only reads the rows and writes the decision.

use super::failures::{self, Miss, MissedRun, UnitTerms};
use super::{MAX_EXTRA_REPLICAS, Mark, Usage, limit_of, price};
use crate::db::Tx;
use crate::error::ApiError;
use agora_wire::api::{Ask, RunOutcome};
use sqlx::Row;

/// One submitted result of a unit, as decision needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reported {
    pub lease: String,
    pub provider: String,
    pub output_digest: String,
    /// Its named outputs' manifest (`outputs::manifest`), if it has any:
    /// replicas agree only when this agrees too.
    pub outputs: Option<String>,
    /// False for a browser tab, which cannot meter fuel (it reports 0).
    pub metered: bool,
    pub usage: Usage,
    /// The ask in force when the lease was granted.
    pub ask: Ask,
    /// Whether its provider was trusted when the lease was granted.
    pub trusted: bool,
    /// Whether the operator vouches for its provider.
    pub vouched: bool,
}

/// What replicas must agree on: the main output's digest and the named
/// outputs' manifest.
pub type Answer = (String, Option<String>);

impl Reported {
    pub fn answer(&self) -> Answer {
        (self.output_digest.clone(), self.outputs.clone())
    }
}

/// The usage the `accepted` results of a unit agree on, capped by the
/// unit's limits, and for each result whether its fuel contradicts a
/// strict majority of the metered ones.
pub fn agreed_usage(accepted: &[Reported], fuel_limit: u64, timeout_ms: u64) -> (Usage, Vec<bool>) {
    let metered = metered_fuel(accepted.iter());
    let majority = majority(&metered);
    let contradicts = accepted
        .iter()
        .map(|r| r.metered && metered.len() >= 2 && majority.is_some_and(|m| m != r.usage.fuel))
        .collect::<Vec<_>>();
    let agreeing = || {
        accepted
            .iter()
            .zip(&contradicts)
            .filter(|(_, c)| !**c)
            .map(|(r, _)| r)
    };
    let fuel = agreeing()
        .filter(|r| r.metered)
        .map(|r| r.usage.fuel)
        .min()
        .unwrap_or(0);
    let gpu = agreeing().map(|r| r.usage.gpu_time_us).min().unwrap_or(0);
    let wall = agreeing().map(|r| r.usage.wall_ms).min().unwrap_or(0);
    let usage = Usage {
        fuel: fuel.min(fuel_limit),
        gpu_time_us: gpu.min(timeout_ms.saturating_mul(1000)),
        wall_ms: wall.min(timeout_ms),
    };
    (usage, contradicts)
}

/// Whether metered replicas of one output report different fuel with no
/// strict majority (fuel is deterministic: an honest pair never differs).
pub fn fuel_disputed<'a>(agreeing: impl Iterator<Item = &'a Reported>) -> bool {
    let fuel = metered_fuel(agreeing);
    fuel.windows(2).any(|w| w[0] != w[1]) && majority(&fuel).is_none()
}

/// The fuel the metered results report (a browser tab's 0 is no report).
fn metered_fuel<'a>(results: impl Iterator<Item = &'a Reported>) -> Vec<u64> {
    results
        .filter(|r| r.metered)
        .map(|r| r.usage.fuel)
        .collect()
}

/// The value a strict majority of `values` holds, if one does.
fn majority(values: &[u64]) -> Option<u64> {
    values
        .iter()
        .copied()
        .find(|v| values.iter().filter(|w| *w == v).count() * 2 > values.len())
}

/// The lease columns [`reported`] reads.
const REPORTED_COLUMNS: &str = "id, provider, output_digest, outputs, metered, trusted, fuel_used, gpu_time_us, wall_ms, ask_per_billion_fuel, ask_per_gpu_second,
    ask_per_wall_second, (SELECT COUNT(*) FROM vouched v WHERE v.id = leases.provider) AS vouched";

/// The runs of unit (`job`, `idx`) that gave it no output: failed, or
/// (in a job checked by `verify`) rejected: vouched hosts' first, then
/// other trusted providers', then in the order they answered (the order
/// billing fills the paid slots in).
pub(super) async fn missed_runs(
    tx: &mut Tx,
    job: &str,
    idx: i64,
) -> Result<Vec<MissedRun>, ApiError> {
    let rows = sqlx::query(&format!(
        "SELECT {REPORTED_COLUMNS}, state, outcome, limit_kind FROM leases WHERE job_id = $1 AND idx = $2 AND state IN ('failed', 'rejected')
         ORDER BY vouched DESC, trusted DESC, answered_at_ms, id",
    ))
    .bind(job)
    .bind(idx)
    .fetch_all(&mut **tx)
    .await?;
    let mut runs = Vec::with_capacity(rows.len());
    for row in &rows {
        let outcome = super::outcome_of(row.try_get("outcome")?)?;
        let miss = match (row.try_get::<String, _>("state")?.as_str(), outcome) {
            ("rejected", _) => Miss::Rejected,
            // An output the market's verifiers could not check.
            (_, RunOutcome::Ok) => Miss::Unverified,
            (_, outcome) => Miss::Failed {
                outcome,
                limit: limit_of(row.try_get("limit_kind")?),
            },
        };
        runs.push(MissedRun {
            run: reported(row)?,
            miss,
        });
    }
    Ok(runs)
}

/// Unit terms of job `job` that the failure rules read.
pub(super) async fn unit_terms(tx: &mut Tx, job: &str) -> Result<UnitTerms, ApiError> {
    let row =
        sqlx::query("SELECT replicas, fuel_limit, timeout_ms, unit_cap FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_one(&mut **tx)
            .await?;
    let get = |c: &str| row.try_get::<i64, _>(c).map(|v| v.max(0) as u64);
    Ok(UnitTerms {
        paid_slots: (get("replicas")?.max(2) as i64 + MAX_EXTRA_REPLICAS) as usize,
        fuel_limit: get("fuel_limit")?,
        timeout_ms: get("timeout_ms")?,
        unit_cap: get("unit_cap")?,
    })
}

/// Bill `runs` of a unit that failed as the job's own doing (see
/// [`failures::billed`]): the job cannot compute its answer, log it, fail
/// (or have its own `verify` reject it) and have the work for free.
pub(super) async fn bill_missed_runs(
    tx: &mut Tx,
    runs: &[MissedRun],
    terms: UnitTerms,
) -> Result<(), ApiError> {
    for (lease, cost) in failures::billed(runs, terms) {
        sqlx::query("UPDATE leases SET state = 'billed', cost = $1 WHERE id = $2 AND state IN ('failed', 'rejected')")
            .bind(cost.min(i64::MAX as u64) as i64)
            .bind(&lease)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

fn reported(row: &sqlx::any::AnyRow) -> Result<Reported, sqlx::Error> {
    let get = |c: &str| {
        row.try_get::<Option<i64>, _>(c)
            .map(|v| v.unwrap_or(0).max(0) as u64)
    };
    Ok(Reported {
        lease: row.try_get("id")?,
        provider: row.try_get("provider")?,
        // A failed run has none.
        output_digest: row
            .try_get::<Option<String>, _>("output_digest")?
            .unwrap_or_default(),
        outputs: row.try_get("outputs")?,
        metered: row.try_get::<i64, _>("metered")? == 1,
        trusted: row.try_get::<i64, _>("trusted")? == 1,
        vouched: row.try_get::<i64, _>("vouched")? > 0,
        usage: Usage {
            fuel: get("fuel_used")?,
            gpu_time_us: get("gpu_time_us")?,
            wall_ms: get("wall_ms")?,
        },
        ask: Ask {
            per_billion_fuel: get("ask_per_billion_fuel")?,
            per_gpu_second: get("ask_per_gpu_second")?,
            per_wall_second: get("ask_per_wall_second")?,
        },
    })
}

/// With a new submitted result in, decide unit (`job`, `idx`): verified
/// when `quorum` outputs agree, another replica when they cannot, failed
/// when none is left. Returns the reputation marks to apply.
pub(super) async fn decide_unit(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    job: &str,
    idx: i64,
    checked: bool,
    kind: crate::db::Kind,
    spot_check_rate: f64,
) -> Result<Vec<(String, Mark)>, ApiError> {
    // On PostgreSQL the unit's row is locked: replicas answering at once
    // decide one after the other, each seeing the other's result.
    let lock = if kind == crate::db::Kind::Postgres {
        "FOR UPDATE OF u"
    } else {
        ""
    };
    let unit = sqlx::query(&format!(
        "SELECT u.wanted AS wanted, u.quorum AS quorum, u.state AS state, j.replicas AS replicas, j.fuel_limit AS fuel_limit,
                j.timeout_ms AS timeout_ms, j.unit_cap AS unit_cap
         FROM units u JOIN jobs j ON j.id = u.job_id WHERE u.job_id = $1 AND u.idx = $2 {lock}",
    ))
    .bind(job)
    .bind(idx)
    .fetch_one(&mut **tx)
    .await?;
    if unit.try_get::<String, _>("state")? != "queued" {
        return Ok(Vec::new());
    }
    let (wanted, quorum): (i64, i64) = (unit.try_get("wanted")?, unit.try_get("quorum")?);
    let results = sqlx::query(&format!(
        "SELECT {REPORTED_COLUMNS} FROM leases WHERE job_id = $1 AND idx = $2 AND state = 'submitted' ORDER BY created_at_ms, id"
    ))
    .bind(job)
    .bind(idx)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(reported)
    .collect::<Result<Vec<_>, _>>()?;
    // The leading output, how many results agree on it, and whether one of
    // them comes from a provider trusted at its grant: untrusted results
    // confirm each other never, only a trusted one (or `verify`) does.
    let best = if checked {
        // Every submitted result passed `verify`: they all count, and the
        // first one's output is the unit's.
        results
            .first()
            .map(|first| (first.answer(), results.len() as i64, true))
    } else {
        let mut counts: std::collections::BTreeMap<Answer, (i64, bool)> = Default::default();
        for r in &results {
            let entry = counts.entry(r.answer()).or_default();
            *entry = (entry.0 + 1, entry.1 || r.trusted);
        }
        // A group with a trusted result leads whatever its size: more
        // untrusted keys agreeing on another output prove nothing.
        counts
            .iter()
            .max_by_key(|(_, (n, trusted))| (*trusted, *n))
            .map(|(d, (n, trusted))| (d.clone(), *n, *trusted))
    };
    let slots = unit.try_get::<i64, _>("replicas")?.max(2) + MAX_EXTRA_REPLICAS;
    let mut marks = Vec::new();
    match best {
        Some((_, n, false)) if n >= quorum => {
            // Agreement without independent evidence: wait for a trusted
            // provider's replica (the lease query keeps it for one).
            if wanted < slots {
                sqlx::query("UPDATE units SET wanted = wanted + 1 WHERE job_id = $1 AND idx = $2")
                    .bind(job)
                    .bind(idx)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        // A trusted result standing alone is checked at random, after it
        // came in (so its provider cannot know in advance, nor tell from
        // the queue): one more trusted replica, then the usual quorum.
        Some((_, 1, true))
            if !checked
                && results.len() == 1
                && wanted < 2
                && super::rand_unit() < spot_check_rate =>
        {
            sqlx::query("UPDATE units SET wanted = 2, quorum = 2 WHERE job_id = $1 AND idx = $2")
                .bind(job)
                .bind(idx)
                .execute(&mut **tx)
                .await?;
        }
        Some((digest, n, true))
            if n >= quorum
                && !checked
                && wanted < slots
                && fuel_disputed(results.iter().filter(|r| r.answer() == digest)) =>
        {
            // The same output, different fuel and no majority: one side
            // misreports; another replica decides which.
            sqlx::query("UPDATE units SET wanted = wanted + 1 WHERE job_id = $1 AND idx = $2")
                .bind(job)
                .bind(idx)
                .execute(&mut **tx)
                .await?;
        }
        Some((digest, n, true)) if n >= quorum => {
            // The unit is decided once: a settle that failed it at the job's
            // expiry, or another replica's decision, came first.
            let decided = sqlx::query("UPDATE units SET state = 'verified', output_digest = $1, outputs = $4 WHERE job_id = $2 AND idx = $3 AND state = 'queued'")
                .bind(&digest.0)
                .bind(job)
                .bind(idx)
                .bind(&digest.1)
                .execute(&mut **tx)
                .await?;
            if decided.rows_affected() != 1 {
                return Ok(Vec::new());
            }
            // Outputs the package's `verify` rejected are proven wrong now
            // that one passed, when a provider trusted at its grant passed
            // (a verify that rejects everything marks nobody, and one that
            // passes only the buyer's own fresh key marks nobody either).
            let passed_by_trusted = results.iter().any(|r| r.trusted);
            for r in sqlx::query("SELECT provider FROM leases WHERE job_id = $1 AND idx = $2 AND state = 'rejected' AND outcome = 'ok'")
                .bind(job)
                .bind(idx)
                .fetch_all(&mut **tx)
                .await?
            {
                if passed_by_trusted {
                    marks.push((r.try_get("provider")?, Mark::Mismatch));
                }
            }
            let (accepted, rejected): (Vec<Reported>, Vec<Reported>) = results
                .into_iter()
                .partition(|r| checked || r.answer() == digest);
            let limit = |c: &str| unit.try_get::<i64, _>(c).map(|v| v as u64);
            let (usage, mut contradicts) =
                agreed_usage(&accepted, limit("fuel_limit")?, limit("timeout_ms")?);
            if checked {
                contradicts.fill(false);
            }
            let unit_cap = limit("unit_cap")?;
            for (r, contradicts) in accepted.iter().zip(contradicts) {
                let (state, cost) = if contradicts {
                    ("rejected", None)
                } else {
                    ("accepted", Some(price(r.ask, usage).min(unit_cap) as i64))
                };
                sqlx::query(
                    "UPDATE leases SET state = $1, cost = $2 WHERE id = $3 AND state = 'submitted'",
                )
                .bind(state)
                .bind(cost)
                .bind(&r.lease)
                .execute(&mut **tx)
                .await?;
                // Trust grows only from the operator's own hosts' agreement
                // (or canaries): a trusted key an attacker earned confers
                // none, and a package's own `verify` never does.
                let independent = !checked
                    && accepted.iter().any(|other| {
                        other.provider != r.provider && other.trusted && other.vouched
                    });
                let mark = match (contradicts, independent) {
                    (true, _) => Mark::Mismatch,
                    (false, true) => Mark::Confirmed,
                    (false, false) => Mark::Success,
                };
                marks.push((r.provider.clone(), mark));
            }
            for r in &rejected {
                sqlx::query(
                    "UPDATE leases SET state = 'rejected' WHERE id = $1 AND state = 'submitted'",
                )
                .bind(&r.lease)
                .execute(&mut **tx)
                .await?;
                marks.push((r.provider.clone(), Mark::Mismatch));
            }
            // Failed runs of a unit that succeeded elsewhere were not the
            // job's doing. (An `ok` run whose verify could not finish says
            // nothing about its provider.)
            let timeout_ms: i64 = unit.try_get("timeout_ms")?;
            for f in sqlx::query(
                "SELECT provider, outcome, limit_kind, wall_ms FROM leases WHERE job_id = $1 AND idx = $2 AND state = 'failed' AND outcome <> 'ok'",
            )
                .bind(job)
                .bind(idx)
                .fetch_all(&mut **tx)
                .await?
            {
                let outcome = super::outcome_of(f.try_get("outcome")?)?;
                let ran_ms = f.try_get::<Option<i64>, _>("wall_ms")?.unwrap_or(0);
                marks.push((f.try_get("provider")?, Mark::of_contradicted_failure(outcome, limit_of(f.try_get("limit_kind")?), ran_ms, timeout_ms)));
            }
            // Late replicas of a verified unit are not needed any more.
            sqlx::query("UPDATE leases SET state = 'cancelled' WHERE job_id = $1 AND idx = $2 AND state = 'active'").bind(job).bind(idx).execute(&mut **tx).await?;
        }
        _ if results.len() as i64 >= wanted => {
            // Every replica answered and they disagree: one more, once.
            if wanted < slots {
                sqlx::query("UPDATE units SET wanted = wanted + 1, quorum = CASE WHEN quorum < 2 THEN 2 ELSE quorum END WHERE job_id = $1 AND idx = $2")
                    .bind(job)
                    .bind(idx)
                    .execute(&mut **tx)
                    .await?;
            } else {
                sqlx::query("UPDATE units SET state = 'failed', message = 'replicas never agreed on an output' WHERE job_id = $1 AND idx = $2")
                    .bind(job)
                    .bind(idx)
                    .execute(&mut **tx)
                    .await?;
                for r in &results {
                    marks.push((r.provider.clone(), Mark::Mismatch));
                }
            }
        }
        _ => {}
    }
    Ok(marks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(fuel: u64, gpu: u64, wall: u64, metered: bool) -> Reported {
        Reported {
            lease: "l".into(),
            provider: "p".into(),
            output_digest: "d".into(),
            outputs: None,
            metered,
            usage: Usage {
                fuel,
                gpu_time_us: gpu,
                wall_ms: wall,
            },
            ask: Ask {
                per_billion_fuel: 1,
                per_gpu_second: 1,
                per_wall_second: 1,
            },
            trusted: false,
            vouched: false,
        }
    }

    #[test]
    fn an_inflated_claim_is_paid_the_agreed_usage_and_marked_against_a_majority() {
        let honest = result(2_000, 50, 900, true);
        let inflated = result(1 << 60, u64::MAX, u64::MAX, true);
        let (usage, contradicts) = agreed_usage(&[honest.clone(), inflated.clone()], 10_000, 1_000);
        assert_eq!(
            usage,
            Usage {
                fuel: 2_000,
                gpu_time_us: 50,
                wall_ms: 900
            },
            "two replicas, no majority: the least"
        );
        assert_eq!(contradicts, [false, false]);
        let (usage, contradicts) =
            agreed_usage(&[honest.clone(), inflated, honest.clone()], 10_000, 1_000);
        assert_eq!(usage.fuel, 2_000);
        assert_eq!(
            contradicts,
            [false, true, false],
            "the odd fuel out of three"
        );
    }

    #[test]
    fn one_result_is_capped_by_the_units_limits() {
        let (usage, _) = agreed_usage(&[result(u64::MAX, u64::MAX, u64::MAX, true)], 10_000, 1_000);
        assert_eq!(
            usage,
            Usage {
                fuel: 10_000,
                gpu_time_us: 1_000_000,
                wall_ms: 1_000
            }
        );
    }

    #[test]
    fn an_unmetered_tab_neither_sets_nor_contradicts_the_fuel() {
        let (usage, contradicts) = agreed_usage(
            &[result(0, 70, 500, false), result(3_000, 90, 800, true)],
            10_000,
            1_000,
        );
        assert_eq!(
            usage,
            Usage {
                fuel: 3_000,
                gpu_time_us: 70,
                wall_ms: 500
            }
        );
        assert_eq!(contradicts, [false, false]);
    }
}
