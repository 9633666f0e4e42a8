//! The failure rules: when a unit's failed runs (and, in a job checked by
//! `verify`, its rejected outputs) make it fail for good as the job's own
//! doing, and which of those runs are billed at what usage. Pure functions
//! over a unit's answered runs; `count_failure` (in `result`) and the
//! job's end at expiry (in `settle`) read the rows and apply the answer.
//!
//! Design choices (identities are free, so nothing rests on a key being
//! new or few, and trust earned through confirmations can be farmed):
//! - Only a provider trusted at its grant has a failure *counted*, and
//!   only when its account is believable: a timeout claimed before the
//!   market's clock says the unit's timeout passed, a compile-time limit
//!   claimed in under the compile deadline, and a verification the market
//!   could not finish count for nothing, and so does a lost worker (anyone
//!   can claim one) unless the operator vouches for its host.
//! - A unit fails for good once two different trusted providers failed it
//!   the same way ([`same_failure`]; for `verify`, had the same output
//!   rejected), or once [`MAX_UNIT_FAILURES`] counted failures came from
//!   two or more trusted providers whatever they were (rejected outputs
//!   that differ, as honest ones need not be equal bit for bit); either
//!   way with an operator-vouched host among them. One trusted key and any
//!   number of fresh ones, or a ring of keys that farmed their trust,
//!   cannot fail a buyer's unit (a market without vouched hosts lets its
//!   failing units expire, refunded).
//! - A buyer's retry policy ([`RetryTerms`]) only lowers the bar, never
//!   below a vouched host's word: fewer counted failures (one, when it is
//!   a vouched host's trap, error, fuel or memory limit, or rejected
//!   output), or with `retry_own_failures` off one vouched host's failure
//!   of the job's own kind.
//! - Billed, priced on what the operator's own hosts measured (others'
//!   claims can neither raise nor cut it): a vouched host's counted miss
//!   at its own usage within the unit's limits; a run that failed the way
//!   an anchored group did (a vouched host and another trusted provider;
//!   fresh keys and browser tabs matching it included) at no more than the
//!   least usage of the group's vouched hosts; another trusted run that
//!   failed its own way at no more than the least usage of the vouched
//!   hosts' counted misses, unless it contradicts an anchored group (the
//!   same failure at other fuel: a deterministic failure repeats to the
//!   instruction); a rejected output equal to a trusted one's at that
//!   one's usage. At most the unit's paid slots, vouched hosts first, then
//!   other trusted runs, each within the unit's cap.

use super::decide::Reported;
use super::{COMPILE_TIME_MS, MAX_UNIT_FAILURES, Usage, price};
use agora_wire::api::{LimitKind, RunOutcome};

/// How an answered run missed giving its unit an output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    /// The run failed: its outcome and, for `limit-exceeded`, which limit.
    Failed {
        outcome: RunOutcome,
        limit: Option<LimitKind>,
    },
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

/// Whether a failed run's fuel is deterministic: not when the clock
/// stopped it, nor when its worker died (a kill comes at any instruction).
fn fuel_is_deterministic(miss: Miss) -> bool {
    match miss {
        Miss::Failed {
            outcome: RunOutcome::WorkerLost,
            ..
        } => false,
        Miss::Failed { limit, .. } => {
            !matches!(limit, Some(LimitKind::Timeout | LimitKind::CompileTime))
        }
        Miss::Rejected | Miss::Unverified => true,
    }
}

/// Whether the provider's account of this miss is believable: the clock
/// limits it claims really ran out by the market's clock, it is no lost
/// verifier, and a lost worker is a vouched host's.
pub fn credible(r: &MissedRun, timeout_ms: u64) -> bool {
    let ran_ms = r.run.usage.wall_ms;
    match r.miss {
        Miss::Unverified => false,
        Miss::Failed {
            outcome: RunOutcome::WorkerLost,
            ..
        } => r.run.vouched,
        Miss::Failed {
            limit: Some(LimitKind::Timeout),
            ..
        } => ran_ms >= timeout_ms,
        Miss::Failed {
            limit: Some(LimitKind::CompileTime),
            ..
        } => ran_ms >= COMPILE_TIME_MS as u64,
        Miss::Failed { .. } | Miss::Rejected => true,
    }
}

/// Whether this miss counts towards failing its unit: a trusted
/// provider's, and believable.
pub fn counted(r: &MissedRun, timeout_ms: u64) -> bool {
    r.run.trusted && credible(r, timeout_ms)
}

/// Whether two runs failed the same way: the same outcome and limit, and
/// (a failure being deterministic) the same fuel, unless the clock or a
/// lost worker stopped them or a browser tab, which meters none, ran one
/// of them. Two rejected outputs are the same when they are equal.
pub fn same_failure(a: &MissedRun, b: &MissedRun, timeout_ms: u64) -> bool {
    if !credible(a, timeout_ms) || !credible(b, timeout_ms) {
        return false;
    }
    match (a.miss, b.miss) {
        (
            Miss::Failed { outcome, limit },
            Miss::Failed {
                outcome: other_outcome,
                limit: other_limit,
            },
        ) => {
            outcome == other_outcome
                && limit == other_limit
                && (!fuel_is_deterministic(a.miss)
                    || !a.run.metered
                    || !b.run.metered
                    || a.run.usage.fuel == b.run.usage.fuel)
        }
        (Miss::Rejected, Miss::Rejected) => a.run.answer() == b.run.answer(),
        _ => false,
    }
}

/// Whether two trusted misses by different providers agree that the job
/// is at fault: they failed the same way, or `verify` rejected the same
/// output from both. (Rejected outputs that differ, as honest ones may,
/// count towards [`MAX_UNIT_FAILURES`] instead.)
fn corroborate(a: &MissedRun, b: &MissedRun, timeout_ms: u64) -> bool {
    a.run.provider != b.run.provider
        && (a.run.vouched || b.run.vouched)
        && counted(a, timeout_ms)
        && counted(b, timeout_ms)
        && same_failure(a, b, timeout_ms)
}

/// Whether trusted runs `peers` anchor a failure: two or more providers,
/// an operator-vouched host among them.
fn anchored(peers: &[&MissedRun]) -> bool {
    let mut providers: Vec<&str> = peers.iter().map(|p| p.run.provider.as_str()).collect();
    providers.sort_unstable();
    providers.dedup();
    providers.len() >= 2 && peers.iter().any(|p| p.run.vouched)
}

/// A buyer's retry policy, as the rules read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryTerms {
    /// Counted failures that fail the unit (a vouched host among them;
    /// from two providers or more when more than one is asked for).
    pub max_attempts: usize,
    /// Whether a vouched host's counted failure of the job's own kind (a
    /// trap, an error, a limit) leaves the unit to be retried.
    pub retry_own_failures: bool,
}

impl Default for RetryTerms {
    fn default() -> Self {
        RetryTerms {
            max_attempts: MAX_UNIT_FAILURES as usize,
            retry_own_failures: true,
        }
    }
}

/// Whether a miss is the job's own kind of failure: a trap, an error or a
/// limit it ran into whatever the host (fuel, memory), not a clock limit
/// (a slow or busy host's), a lost worker, a refusal or a rejected output.
fn own_failure(miss: Miss) -> bool {
    match miss {
        Miss::Failed {
            outcome: RunOutcome::Trap | RunOutcome::JobError,
            ..
        } => true,
        Miss::Failed {
            outcome: RunOutcome::LimitExceeded,
            limit,
        } => !matches!(limit, Some(LimitKind::Timeout | LimitKind::CompileTime)),
        _ => false,
    }
}

/// Whether the unit fails for good as the job's doing (see the module's
/// rules, and the buyer's `retry`: fewer counted failures, or one vouched
/// host's of the job's own kind, never a provider's word alone). The
/// caller has checked that no result of the unit waits for its verdict
/// and no vouched host's or `verify`-passed result stands.
pub fn fails_for_good(runs: &[MissedRun], timeout_ms: u64, retry: RetryTerms) -> bool {
    let counted_runs: Vec<&MissedRun> = runs.iter().filter(|r| counted(r, timeout_ms)).collect();
    // One run is enough only when it is a vouched host's failure of the
    // job's own kind or its rejected output (not the operator's restart).
    let anchored_enough = if retry.max_attempts <= 1 {
        counted_runs
            .iter()
            .any(|r| r.run.vouched && (own_failure(r.miss) || r.miss == Miss::Rejected))
    } else {
        anchored(&counted_runs)
    };
    if counted_runs.len() >= retry.max_attempts && anchored_enough {
        return true;
    }
    if !retry.retry_own_failures
        && counted_runs
            .iter()
            .any(|r| r.run.vouched && own_failure(r.miss))
    {
        return true;
    }
    runs.iter()
        .enumerate()
        .any(|(i, a)| runs[i + 1..].iter().any(|b| corroborate(a, b, timeout_ms)))
}

/// Whether a unit still open when its job expires has runs to bill: a
/// vouched host's counted miss (the operator's own host does not invent
/// failures, and its run was work).
pub fn billable_at_expiry(runs: &[MissedRun], timeout_ms: u64) -> bool {
    runs.iter().any(|r| r.run.vouched && counted(r, timeout_ms))
}

/// The runs to bill, in `runs`' order (vouched hosts first, then other
/// trusted providers, then by answer, as the caller reads them), and what
/// each is paid.
pub fn billed(runs: &[MissedRun], terms: UnitTerms) -> Vec<(String, u64)> {
    let counted_runs: Vec<&MissedRun> = runs
        .iter()
        .filter(|t| counted(t, terms.timeout_ms))
        .collect();
    let mut bills = Vec::new();
    for r in runs {
        if bills.len() >= terms.paid_slots {
            break;
        }
        if let Some(usage) = billed_usage(r, &counted_runs, terms) {
            bills.push((
                r.run.lease.clone(),
                price(r.run.ask, usage).min(terms.unit_cap),
            ));
        }
    }
    bills
}

/// What run `r` is billed at, if it is (see the module's rules): never
/// more than the vouched hosts measured, unless it is a vouched host's.
fn billed_usage(r: &MissedRun, counted_runs: &[&MissedRun], terms: UnitTerms) -> Option<Usage> {
    let timeout_ms = terms.timeout_ms;
    let own = measured(&[r], terms);
    if r.run.vouched && counted(r, timeout_ms) {
        return own;
    }
    let peers: Vec<&MissedRun> = counted_runs
        .iter()
        .copied()
        .filter(|t| same_failure(t, r, timeout_ms))
        .collect();
    if anchored(&peers) {
        // A tab meters no fuel: it is paid the hosts' measure.
        let hosts = measured(&vouched(&peers), terms);
        return if r.run.metered {
            least(own, hosts)
        } else {
            hosts
        };
    }
    if r.miss == Miss::Rejected && !r.run.trusted {
        return least(
            measured(&peers, terms),
            measured(&vouched(counted_runs), terms),
        );
    }
    if !counted(r, timeout_ms) || contradicts_an_anchored_failure(r, counted_runs, timeout_ms) {
        return None;
    }
    least(own, measured(&vouched(counted_runs), terms))
}

/// The vouched hosts' runs among `runs`.
fn vouched<'a>(runs: &[&'a MissedRun]) -> Vec<&'a MissedRun> {
    runs.iter().copied().filter(|t| t.run.vouched).collect()
}

/// The least usage `runs` show, each part on its own, within the unit's
/// limits and GPU time within the wall time the market measured; `None`
/// without runs.
fn measured(runs: &[&MissedRun], terms: UnitTerms) -> Option<Usage> {
    let metered_fuel = runs
        .iter()
        .filter(|t| t.run.metered)
        .map(|t| t.run.usage.fuel)
        .min();
    let usage = Usage {
        fuel: metered_fuel.unwrap_or(0).min(terms.fuel_limit),
        gpu_time_us: runs
            .iter()
            .map(|t| t.run.usage.gpu_time_us)
            .min()?
            .min(terms.timeout_ms.saturating_mul(1000)),
        wall_ms: runs
            .iter()
            .map(|t| t.run.usage.wall_ms)
            .min()?
            .min(terms.timeout_ms),
    };
    Some(within_wall_time(usage))
}

/// Each part the least of `a` and `b`; `None` when either is.
fn least(a: Option<Usage>, b: Option<Usage>) -> Option<Usage> {
    let (a, b) = (a?, b?);
    Some(Usage {
        fuel: a.fuel.min(b.fuel),
        gpu_time_us: a.gpu_time_us.min(b.gpu_time_us),
        wall_ms: a.wall_ms.min(b.wall_ms),
    })
}

/// Whether `r` failed as an anchored group did (the same outcome and
/// limit, its fuel deterministic, both metered) at other fuel: one of them
/// misreports, and the group is the one a vouched host stands in.
fn contradicts_an_anchored_failure(
    r: &MissedRun,
    counted_runs: &[&MissedRun],
    timeout_ms: u64,
) -> bool {
    if !fuel_is_deterministic(r.miss) || !r.run.metered {
        return false;
    }
    counted_runs.iter().any(|t| {
        t.miss == r.miss && t.run.metered && t.run.usage.fuel != r.run.usage.fuel && {
            let group: Vec<&MissedRun> = counted_runs
                .iter()
                .copied()
                .filter(|o| same_failure(o, t, timeout_ms))
                .collect();
            anchored(&group)
        }
    })
}

/// GPU time within the wall time the market measured.
fn within_wall_time(usage: Usage) -> Usage {
    Usage {
        gpu_time_us: usage.gpu_time_us.min(usage.wall_ms.saturating_mul(1000)),
        ..usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_wire::api::Ask;

    const TIMEOUT: u64 = 10_000;
    const TERMS: UnitTerms = UnitTerms {
        paid_slots: 3,
        fuel_limit: 10_000_000_000,
        timeout_ms: TIMEOUT,
        unit_cap: 1_000,
    };

    /// Who ran a unit: the operator's own host, a key that earned (or
    /// farmed) its trust, or a fresh key.
    #[derive(Clone, Copy, PartialEq)]
    enum Who {
        Vouched,
        Farmed,
        Fresh,
    }
    use Who::*;

    fn run(provider: &str, who: Who, miss: Miss, fuel: u64, wall_ms: u64) -> MissedRun {
        MissedRun {
            run: Reported {
                lease: format!("lease-{provider}"),
                provider: provider.into(),
                output_digest: String::new(),
                outputs: None,
                metered: true,
                usage: Usage {
                    fuel,
                    gpu_time_us: 0,
                    wall_ms,
                },
                ask: Ask {
                    per_billion_fuel: 10,
                    per_gpu_second: 0,
                    per_wall_second: 0,
                },
                trusted: who != Fresh,
                vouched: who == Vouched,
            },
            miss,
        }
    }

    fn failed(outcome: RunOutcome) -> Miss {
        Miss::Failed {
            outcome,
            limit: None,
        }
    }

    fn costs(bills: &[(String, u64)]) -> Vec<(&str, u64)> {
        bills.iter().map(|(l, c)| (l.as_str(), *c)).collect()
    }

    const TIMED_OUT: Miss = Miss::Failed {
        outcome: RunOutcome::LimitExceeded,
        limit: Some(LimitKind::Timeout),
    };
    const TRAP: Miss = Miss::Failed {
        outcome: RunOutcome::Trap,
        limit: None,
    };

    #[test]
    fn a_buyers_retry_policy_never_rests_on_a_providers_word_alone() {
        let strict = RetryTerms {
            max_attempts: MAX_UNIT_FAILURES as usize,
            retry_own_failures: false,
        };
        let once = RetryTerms {
            max_attempts: 1,
            retry_own_failures: true,
        };
        // A vouched host's trap ends the unit when the buyer says so ...
        let trap = [run("host", Vouched, TRAP, 5, 100)];
        assert!(fails_for_good(&trap, TIMEOUT, strict));
        assert!(fails_for_good(&trap, TIMEOUT, once));
        assert!(!fails_for_good(&trap, TIMEOUT, RetryTerms::default()));
        // ... a farmed or fresh key's never does.
        for who in [Farmed, Fresh] {
            let theirs = [run("key", who, TRAP, 5, 100)];
            assert!(!fails_for_good(&theirs, TIMEOUT, strict));
            assert!(!fails_for_good(&theirs, TIMEOUT, once));
        }
        // A clock limit is a slow host's as much as the job's, and a lost
        // worker the operator's restart: neither ends it alone.
        let slow = [run("host", Vouched, TIMED_OUT, 5, TIMEOUT)];
        assert!(!fails_for_good(&slow, TIMEOUT, strict));
        let lost = [run("host", Vouched, failed(RunOutcome::WorkerLost), 5, 100)];
        assert!(!fails_for_good(&lost, TIMEOUT, strict));
        assert!(!fails_for_good(&lost, TIMEOUT, once));
    }

    #[test]
    fn one_trusted_key_and_any_number_of_fresh_ones_fail_nothing() {
        let mut runs = vec![run("colluder", Farmed, TRAP, 5, 100)];
        for i in 0..10 {
            runs.push(run(&format!("sybil-{i}"), Fresh, TRAP, 5, 100));
        }
        assert!(!fails_for_good(&runs, TIMEOUT, RetryTerms::default()));
        runs.push(run("host", Vouched, TRAP, 5, 100));
        assert!(
            fails_for_good(&runs, TIMEOUT, RetryTerms::default()),
            "a vouched host and another trusted provider, the same way"
        );
    }

    #[test]
    fn a_ring_of_farmed_keys_fails_nothing_without_a_vouched_host() {
        let runs: Vec<MissedRun> = (0..5)
            .map(|i| run(&format!("farmed-{i}"), Farmed, TRAP, 3_000_000_000, 100))
            .collect();
        assert!(!fails_for_good(&runs, TIMEOUT, RetryTerms::default()));
        assert!(!billable_at_expiry(&runs, TIMEOUT));
    }

    #[test]
    fn a_vouched_hosts_work_is_priced_on_its_own_measure_whatever_a_ring_claims() {
        // A ring answers at once with a trap at no fuel, to cut the host's pay.
        let cutters = [
            run("host", Vouched, TRAP, 3_000_000_000, 900),
            run("f1", Farmed, TRAP, 0, 1),
            run("f2", Farmed, TRAP, 0, 1),
        ];
        assert!(
            fails_for_good(&cutters, TIMEOUT, RetryTerms::default()),
            "three counted, a vouched host among them"
        );
        assert_eq!(
            costs(&billed(&cutters, TERMS)),
            [("lease-host", 30), ("lease-f1", 0), ("lease-f2", 0)]
        );
        // Or claims the unit's whole fuel, to be overpaid.
        let job_error = failed(RunOutcome::JobError);
        let padders = [
            run("host", Vouched, TRAP, 3_000_000_000, 900),
            run("f1", Farmed, job_error, u64::MAX, 900),
            run("f2", Farmed, job_error, u64::MAX, 900),
        ];
        assert_eq!(
            costs(&billed(&padders, TERMS)),
            [("lease-host", 30), ("lease-f1", 30), ("lease-f2", 30)],
            "no more than the host measured"
        );
    }

    #[test]
    fn trusted_failures_that_differ_need_three() {
        let mut runs = vec![
            run("a", Vouched, TRAP, 5, 100),
            run("b", Farmed, TRAP, 6, 100),
        ];
        assert!(
            !fails_for_good(&runs, TIMEOUT, RetryTerms::default()),
            "a deterministic failure repeats to the instruction"
        );
        runs.push(run("c", Farmed, failed(RunOutcome::JobError), 7, 100));
        assert!(
            fails_for_good(&runs, TIMEOUT, RetryTerms::default()),
            "three counted failures, a vouched host among them"
        );
    }

    #[test]
    fn lost_workers_count_only_on_vouched_hosts_and_early_timeouts_never() {
        let lost = failed(RunOutcome::WorkerLost);
        let runs = [
            run("a", Farmed, lost, 0, 100),
            run("b", Farmed, lost, 0, 100),
            run("c", Vouched, TIMED_OUT, 0, 10),
            run("d", Vouched, TIMED_OUT, 0, 20),
        ];
        assert!(!fails_for_good(&runs, TIMEOUT, RetryTerms::default()));
        assert!(
            billed(&runs, TERMS).is_empty(),
            "nothing believable to bill"
        );
        let hosts = [
            run("a", Vouched, lost, 1_000_000_000, 100),
            run("b", Vouched, lost, 3_000_000_000, 100),
        ];
        assert!(
            fails_for_good(&hosts, TIMEOUT, RetryTerms::default()),
            "the operator's hosts do not invent lost workers, killed at any instruction"
        );
        let real = [
            run("a", Vouched, TIMED_OUT, 3, TIMEOUT),
            run("b", Farmed, TIMED_OUT, 9, TIMEOUT + 5),
        ];
        assert!(
            fails_for_good(&real, TIMEOUT, RetryTerms::default()),
            "timeouts after the clock ran out match whatever their fuel"
        );
    }

    #[test]
    fn a_fresh_key_or_a_tab_matching_trusted_runs_is_paid_their_usage_and_cannot_cut_it() {
        let mut tab = run("tab", Fresh, TRAP, 0, 1);
        tab.run.metered = false;
        let runs = [
            run("a", Vouched, TRAP, 3_000_000_000, 500),
            run("b", Farmed, TRAP, 3_000_000_000, 700),
            tab,
            run("fresh", Fresh, TRAP, 3_000_000_000, 1),
        ];
        let bills = billed(
            &runs,
            UnitTerms {
                paid_slots: 4,
                ..TERMS
            },
        );
        assert_eq!(bills.len(), 4);
        assert!(bills.iter().all(|(_, cost)| *cost == 30), "{bills:?}");
    }

    #[test]
    fn a_run_failing_its_own_way_is_paid_no_more_than_the_vouched_hosts_measure() {
        let runs = [
            run("a", Vouched, TRAP, 2_000_000_000, 500),
            run("b", Farmed, failed(RunOutcome::JobError), u64::MAX, 500),
            run(
                "fresh",
                Fresh,
                failed(RunOutcome::Refused),
                1_000_000_000,
                500,
            ),
        ];
        assert_eq!(
            costs(&billed(&runs, TERMS)),
            [("lease-a", 20), ("lease-b", 20)],
            "a claim is never its own price; fresh keys' are not paid"
        );
    }

    #[test]
    fn a_claim_contradicting_an_anchored_failure_is_not_paid() {
        let runs = [
            run("a", Vouched, TRAP, 2_000_000_000, 500),
            run("b", Vouched, TRAP, 2_000_000_000, 500),
            run("liar", Farmed, TRAP, 9_000_000_000, 1),
        ];
        assert_eq!(
            costs(&billed(&runs, TERMS)),
            [("lease-a", 20), ("lease-b", 20)]
        );
    }

    #[test]
    fn rejected_outputs_fail_a_checked_unit_on_two_trusted_providers_and_bill_equal_ones() {
        let digest = |mut r: MissedRun, d: &str| {
            r.run.output_digest = d.into();
            r
        };
        let rejected =
            |p: &str, who: Who, d: &str| digest(run(p, who, Miss::Rejected, 2_000_000_000, 500), d);
        let mut runs = vec![
            rejected("a", Vouched, "x"),
            digest(run("fresh", Fresh, Miss::Rejected, 1, 1), "x"),
        ];
        assert!(
            !fails_for_good(&runs, TIMEOUT, RetryTerms::default()),
            "one trusted provider cannot fail a checked unit"
        );
        runs.push(rejected("b", Farmed, "y"));
        runs.push(digest(run("garbage", Fresh, Miss::Rejected, 1, 1), "z"));
        assert!(
            !fails_for_good(&runs, TIMEOUT, RetryTerms::default()),
            "two different outputs rejected: a cheat may be among them"
        );
        let mut same = runs.clone();
        same.push(rejected("c", Farmed, "x"));
        assert!(
            fails_for_good(&same, TIMEOUT, RetryTerms::default()),
            "the same output rejected on a vouched host and another trusted provider"
        );
        runs.push(rejected("d", Farmed, "w"));
        assert!(
            fails_for_good(&runs, TIMEOUT, RetryTerms::default()),
            "three trusted outputs rejected: honest outputs need not be equal"
        );
        let bills = billed(
            &runs,
            UnitTerms {
                paid_slots: 4,
                ..TERMS
            },
        );
        assert_eq!(
            costs(&bills),
            [
                ("lease-a", 20),
                ("lease-fresh", 20),
                ("lease-b", 20),
                ("lease-d", 20)
            ]
        );
        let unverified = |p: &str| digest(run(p, Vouched, Miss::Unverified, 1, 1), "x");
        assert!(
            !fails_for_good(
                &[unverified("a"), unverified("b")],
                TIMEOUT,
                RetryTerms::default()
            ),
            "a lost verifier is nobody's doing"
        );
    }

    #[test]
    fn an_output_equal_to_a_farmed_keys_is_paid_no_more_than_the_vouched_measure() {
        let digest = |mut r: MissedRun, d: &str| {
            r.run.output_digest = d.into();
            r
        };
        let runs = [
            digest(
                run("host", Vouched, Miss::Rejected, 2_000_000_000, 500),
                "x",
            ),
            digest(
                run("farmed", Farmed, Miss::Rejected, 9_000_000_000, 500),
                "q",
            ),
            digest(run("sybil", Fresh, Miss::Rejected, 9_000_000_000, 500), "q"),
        ];
        assert_eq!(
            costs(&billed(&runs, TERMS)),
            [
                ("lease-host", 20),
                ("lease-farmed", 20),
                ("lease-sybil", 20)
            ]
        );
    }

    #[test]
    fn at_most_the_paid_slots_are_billed() {
        let runs: Vec<MissedRun> = (0..6)
            .map(|i| run(&format!("p{i}"), Vouched, TRAP, 1_000_000_000, 100))
            .collect();
        assert_eq!(billed(&runs, TERMS).len(), 3);
    }
}
