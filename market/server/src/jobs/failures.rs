//! The failure rules: when a unit's failed runs (and, in a job checked by
//! `verify`, its rejected outputs) make it fail for good as the job's own
//! doing, and which of those runs are billed at what usage. Pure functions
//! over a unit's answered runs; `count_failure` (in `result`) and the
//! job's end at expiry (in `settle`) read the rows and apply the answer.
//!
//! Design choices (identities are free, so nothing rests on a key being
//! new or few):
//! - Only a provider trusted at its grant has a failure *counted*, and
//!   only when its account is believable: a lost worker (anyone can claim
//!   one), a timeout claimed before the market's clock says the unit's
//!   timeout passed, a compile-time limit claimed in under the compile
//!   deadline, and a verification the market could not finish count for
//!   nothing.
//! - A unit fails for good once two different trusted providers failed it
//!   the same way ([`same_failure`]; for `verify`, had the same output
//!   rejected), or once [`MAX_UNIT_FAILURES`] counted failures came from
//!   two or more trusted providers whatever they were (rejected outputs
//!   that differ, as honest ones need not be equal bit for bit): one
//!   trusted key (earned, say, by an attacker) and any number of fresh ones
//!   cannot fail a buyer's unit.
//! - Billed: a run that failed the way two trusted providers did, at the
//!   usage *those trusted runs* agree on (a fresh key or a browser tab
//!   matching them is paid that, and cannot cut it); a trusted run that
//!   failed its own way, at its own usage within the unit's limits; a
//!   trusted rejected output, and an output equal to one. At most the
//!   unit's paid slots, trusted runs first, each within the unit's cap.

use super::decide::{Reported, agreed_usage};
use super::{COMPILE_TIME_MS, MAX_UNIT_FAILURES, Usage, price};
use agora_wire::api::{LimitKind, RunOutcome};

/// How an answered run missed giving its unit an output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    /// The run failed: its outcome and, for `limit-exceeded`, which limit.
    Failed { outcome: RunOutcome, limit: Option<LimitKind> },
    /// The package's `verify` rejected its output (or trapped on it).
    Rejected,
    /// The market could not verify its output: nobody's doing.
    Unverified,
}

/// One answered run of a unit that gave it no output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissedRun {
    pub run: Reported,
    pub miss: Miss,
}

/// The unit's terms the rules read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnitTerms {
    /// Runs of the unit the escrow holds credits for.
    pub paid_slots: usize,
    pub fuel_limit: u64,
    pub timeout_ms: u64,
    /// The most one run of the unit is paid.
    pub unit_cap: u64,
}

/// Whether a limit is the clock's (its run's fuel is not deterministic).
fn clock_limit(limit: Option<LimitKind>) -> bool {
    matches!(limit, Some(LimitKind::Timeout | LimitKind::CompileTime))
}

/// Whether the provider's account of this miss is believable: the clock
/// limits it claims really ran out by the market's clock, and it is no
/// lost worker or lost verifier.
pub fn credible(r: &MissedRun, timeout_ms: u64) -> bool {
    let ran_ms = r.run.usage.wall_ms;
    match r.miss {
        Miss::Unverified | Miss::Failed { outcome: RunOutcome::WorkerLost, .. } => false,
        Miss::Failed { limit: Some(LimitKind::Timeout), .. } => ran_ms >= timeout_ms,
        Miss::Failed { limit: Some(LimitKind::CompileTime), .. } => ran_ms >= COMPILE_TIME_MS as u64,
        Miss::Failed { .. } | Miss::Rejected => true,
    }
}

/// Whether this miss counts towards failing its unit: a trusted
/// provider's, and believable.
pub fn counted(r: &MissedRun, timeout_ms: u64) -> bool {
    r.run.trusted && credible(r, timeout_ms)
}

/// Whether two runs failed the same way: the same outcome and limit, and
/// (a failure being deterministic) the same fuel, unless the limit was
/// the clock's or a browser tab, which meters none, ran one of them. Two
/// rejected outputs are the same when they are equal.
pub fn same_failure(a: &MissedRun, b: &MissedRun, timeout_ms: u64) -> bool {
    if !credible(a, timeout_ms) || !credible(b, timeout_ms) {
        return false;
    }
    match (a.miss, b.miss) {
        (Miss::Failed { outcome, limit }, Miss::Failed { outcome: other_outcome, limit: other_limit }) => {
            outcome == other_outcome
                && limit == other_limit
                && (clock_limit(limit) || !a.run.metered || !b.run.metered || a.run.usage.fuel == b.run.usage.fuel)
        }
        (Miss::Rejected, Miss::Rejected) => a.run.output_digest == b.run.output_digest,
        _ => false,
    }
}

/// Whether two trusted misses by different providers agree that the job
/// is at fault: they failed the same way, or `verify` rejected the same
/// output from both. (Rejected outputs that differ, as honest ones may,
/// count towards [`MAX_UNIT_FAILURES`] instead.)
fn corroborate(a: &MissedRun, b: &MissedRun, timeout_ms: u64) -> bool {
    a.run.provider != b.run.provider && counted(a, timeout_ms) && counted(b, timeout_ms) && same_failure(a, b, timeout_ms)
}

/// How many different trusted providers have a counted miss of the unit.
pub fn counted_providers(runs: &[MissedRun], timeout_ms: u64) -> usize {
    let mut providers: Vec<&str> = runs.iter().filter(|r| counted(r, timeout_ms)).map(|r| r.run.provider.as_str()).collect();
    providers.sort_unstable();
    providers.dedup();
    providers.len()
}

/// Whether the unit fails for good as the job's doing (see the module's
/// rules). The caller has checked that no result of the unit waits for
/// its verdict and no trusted or `verify`-passed result stands.
pub fn fails_for_good(runs: &[MissedRun], timeout_ms: u64) -> bool {
    let count = runs.iter().filter(|r| counted(r, timeout_ms)).count();
    if count as i64 >= MAX_UNIT_FAILURES && counted_providers(runs, timeout_ms) >= 2 {
        return true;
    }
    runs.iter().enumerate().any(|(i, a)| runs[i + 1..].iter().any(|b| corroborate(a, b, timeout_ms)))
}

/// The runs to bill, in `runs`' order (trusted first, then by answer, as
/// the caller reads them), and what each is paid.
pub fn billed(runs: &[MissedRun], terms: UnitTerms) -> Vec<(String, u64)> {
    let mut bills = Vec::new();
    for r in runs {
        if bills.len() >= terms.paid_slots {
            break;
        }
        if let Some(usage) = billed_usage(r, runs, terms) {
            bills.push((r.run.lease.clone(), price(r.run.ask, usage).min(terms.unit_cap)));
        }
    }
    bills
}

/// What run `r` is billed at, if it is: the usage of the trusted runs it
/// matches when two providers' do, else its own when it is a counted
/// trusted miss, else a rejected output equal to a trusted one's at that
/// one's usage.
fn billed_usage(r: &MissedRun, runs: &[MissedRun], terms: UnitTerms) -> Option<Usage> {
    let timeout_ms = terms.timeout_ms;
    let peers: Vec<Reported> = runs.iter().filter(|t| counted(t, timeout_ms) && same_failure(t, r, timeout_ms)).map(|t| t.run.clone()).collect();
    let mut peer_providers: Vec<&str> = peers.iter().map(|p| p.provider.as_str()).collect();
    peer_providers.sort_unstable();
    peer_providers.dedup();
    let agreed = |of: &[Reported]| within_wall_time(agreed_usage(of, terms.fuel_limit, timeout_ms).0);
    if peer_providers.len() >= 2 || (r.miss == Miss::Rejected && !peers.is_empty() && !r.run.trusted) {
        Some(agreed(&peers))
    } else if counted(r, timeout_ms) {
        Some(agreed(std::slice::from_ref(&r.run)))
    } else {
        None
    }
}

/// GPU time within the wall time the market measured.
fn within_wall_time(usage: Usage) -> Usage {
    Usage { gpu_time_us: usage.gpu_time_us.min(usage.wall_ms.saturating_mul(1000)), ..usage }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_wire::api::Ask;

    const TIMEOUT: u64 = 10_000;
    const TERMS: UnitTerms = UnitTerms { paid_slots: 3, fuel_limit: 10_000_000_000, timeout_ms: TIMEOUT, unit_cap: 1_000 };

    fn run(provider: &str, trusted: bool, miss: Miss, fuel: u64, wall_ms: u64) -> MissedRun {
        MissedRun {
            run: Reported {
                lease: format!("lease-{provider}"),
                provider: provider.into(),
                output_digest: String::new(),
                metered: true,
                usage: Usage { fuel, gpu_time_us: 0, wall_ms },
                ask: Ask { per_billion_fuel: 10, per_gpu_second: 0, per_wall_second: 0 },
                trusted,
                vouched: false,
            },
            miss,
        }
    }

    fn failed(outcome: RunOutcome) -> Miss {
        Miss::Failed { outcome, limit: None }
    }

    const TIMED_OUT: Miss = Miss::Failed { outcome: RunOutcome::LimitExceeded, limit: Some(LimitKind::Timeout) };

    #[test]
    fn one_trusted_key_and_any_number_of_fresh_ones_fail_nothing() {
        let mut runs = vec![run("colluder", true, failed(RunOutcome::Trap), 5, 100)];
        for i in 0..10 {
            runs.push(run(&format!("sybil-{i}"), false, failed(RunOutcome::Trap), 5, 100));
        }
        assert!(!fails_for_good(&runs, TIMEOUT));
        runs.push(run("honest", true, failed(RunOutcome::Trap), 5, 100));
        assert!(fails_for_good(&runs, TIMEOUT), "two trusted providers, the same way");
    }

    #[test]
    fn trusted_failures_that_differ_need_three() {
        let mut runs = vec![run("a", true, failed(RunOutcome::Trap), 5, 100), run("b", true, failed(RunOutcome::Trap), 6, 100)];
        assert!(!fails_for_good(&runs, TIMEOUT), "a deterministic failure repeats to the instruction");
        runs.push(run("c", true, failed(RunOutcome::JobError), 7, 100));
        assert!(fails_for_good(&runs, TIMEOUT), "three counted failures from trusted providers");
    }

    #[test]
    fn lost_workers_and_early_timeouts_count_for_nothing() {
        let lost = failed(RunOutcome::WorkerLost);
        let runs = [run("a", true, lost, 0, 100), run("b", true, lost, 0, 100), run("c", true, TIMED_OUT, 0, 10), run("d", true, TIMED_OUT, 0, 20)];
        assert!(!fails_for_good(&runs, TIMEOUT));
        assert!(billed(&runs, TERMS).is_empty(), "nothing believable to bill");
        let real = [run("a", true, TIMED_OUT, 3, TIMEOUT), run("b", true, TIMED_OUT, 9, TIMEOUT + 5)];
        assert!(fails_for_good(&real, TIMEOUT), "timeouts after the clock ran out match whatever their fuel");
    }

    #[test]
    fn a_fresh_key_or_a_tab_matching_trusted_runs_is_paid_their_usage_and_cannot_cut_it() {
        let trap = failed(RunOutcome::Trap);
        let mut tab = run("tab", false, trap, 0, 1);
        tab.run.metered = false;
        let runs = [run("a", true, trap, 3_000_000_000, 500), run("b", true, trap, 3_000_000_000, 700), tab, run("fresh", false, trap, 3_000_000_000, 1)];
        let bills = billed(&runs, UnitTerms { paid_slots: 4, ..TERMS });
        assert_eq!(bills.len(), 4);
        assert!(bills.iter().all(|(_, cost)| *cost == 30), "{bills:?}");
    }

    #[test]
    fn a_trusted_run_failing_its_own_way_is_paid_its_own_capped_usage_and_fresh_ones_are_not() {
        let runs = [
            run("a", true, failed(RunOutcome::Trap), 2_000_000_000, 500),
            run("b", true, failed(RunOutcome::JobError), u64::MAX, 500),
            run("fresh", false, failed(RunOutcome::Refused), 1_000_000_000, 500),
        ];
        let bills = billed(&runs, TERMS);
        assert_eq!(bills, vec![("lease-a".to_string(), 20), ("lease-b".to_string(), 100)], "fuel capped at the unit's limit");
    }

    #[test]
    fn rejected_outputs_fail_a_checked_unit_on_two_trusted_providers_and_bill_equal_ones() {
        let digest = |mut r: MissedRun, d: &str| {
            r.run.output_digest = d.into();
            r
        };
        let mut runs = vec![digest(run("a", true, Miss::Rejected, 2_000_000_000, 500), "x"), digest(run("fresh", false, Miss::Rejected, 1, 1), "x")];
        assert!(!fails_for_good(&runs, TIMEOUT), "one trusted provider cannot fail a checked unit");
        runs.push(digest(run("b", true, Miss::Rejected, 2_000_000_000, 500), "y"));
        runs.push(digest(run("garbage", false, Miss::Rejected, 1, 1), "z"));
        assert!(!fails_for_good(&runs, TIMEOUT), "two different outputs rejected: a cheat may be among them");
        let mut same = runs.clone();
        same.push(digest(run("c", true, Miss::Rejected, 2_000_000_000, 500), "x"));
        assert!(fails_for_good(&same, TIMEOUT), "the same output rejected on two trusted providers");
        runs.push(digest(run("d", true, Miss::Rejected, 2_000_000_000, 500), "w"));
        assert!(fails_for_good(&runs, TIMEOUT), "three trusted outputs rejected: honest outputs need not be equal");
        let bills = billed(&runs, UnitTerms { paid_slots: 4, ..TERMS });
        assert_eq!(bills.iter().map(|(l, c)| (l.as_str(), *c)).collect::<Vec<_>>(), [("lease-a", 20), ("lease-fresh", 20), ("lease-b", 20), ("lease-d", 20)]);
        assert!(!fails_for_good(&[digest(run("a", true, Miss::Unverified, 1, 1), "x"), digest(run("b", true, Miss::Unverified, 1, 1), "x")], TIMEOUT));
    }

    #[test]
    fn at_most_the_paid_slots_are_billed() {
        let trap = failed(RunOutcome::Trap);
        let runs: Vec<MissedRun> = (0..6).map(|i| run(&format!("p{i}"), true, trap, 1_000_000_000, 100)).collect();
        assert_eq!(billed(&runs, TERMS).len(), 3);
    }
}
