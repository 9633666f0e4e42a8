//! The job lifecycle: submit with escrow, lease units to providers, take
//! signed results, verify by replication, settle, refund.
//!
//! Money (all through [`Ledger`] with deterministic transfer ids, so a
//! re-run after a crash never pays twice):
//! - submit: hold `max_price` from the buyer to the job's own escrow account
//!   `job:{id}` (`job:{id}:hold`); ids and accounts under `job:` and
//!   `lease:` are the market's alone (see [`crate::ledger::is_market_id`]);
//! - first verified unit: post the hold in full (`job:{id}:escrow`);
//! - each accepted result: `job:{id} -> provider` (cost - fee,
//!   `lease:{id}:pay`) and `job:{id} -> fees` (`lease:{id}:fee`);
//! - job end: refund what was not spent (`job:{id}:refund`), or void the
//!   hold when nothing was (`job:{id}:void`).
//!
//! A lease's cost comes from the provider's signed usage and its ask, capped
//! at the unit's share of the job cap: `max_price / (units * (max(replicas,
//! 2) + MAX_EXTRA_REPLICAS))`, the most results of a unit that can be paid,
//! so all payments together never exceed the hold.
//!
//! Each transition is a module that owns it, and each runs as one
//! transaction: [`submit`] (the job, its units and its hold), [`cancel`]
//! (its buyer stops it: units withdrawn, runs paid their time, the rest
//! refunded), [`lease`] (a
//! unit to a provider), [`result`] (a signed result with the unit's
//! decision in [`decide`] and the job's settlement in [`settle`]),
//! [`verifying`] (a `verify` verdict, likewise), [`sweep`] (lost leases,
//! due jobs), [`retention`] (a job's data after it ends), with [`reputation`] (marks and trust), [`canaries`]
//! (known-answer units), [`requirements`] (what a job asks of providers'
//! GPUs and which providers it accepts), [`providers`] (registration, heartbeats,
//! listings), [`live`] (progress and logs) and [`views`] (what buyers read).

mod canaries;
mod cancel;
mod decide;
mod failures;
mod lease;
mod live;
mod outputs;
mod prices;
mod providers;
mod reputation;
mod requirements;
mod result;
mod retention;
mod settle;
mod speed;
mod submit;
mod sweep;
mod telemetry;
mod verifying;
mod views;
pub use canaries::CANARIES_PER_PROVIDER;
use decide::decide_unit;
pub use lease::{lease_candidate_sql, local_candidate_sql};
pub use reputation::{Mark, Record};
pub use retention::DATA_RETENTION_MS;
use settle::hold_id;
pub use speed::{SPEED_PEER_MARGIN_PERCENT, SPEED_RERATE_MS};
pub use sweep::{MAX_SETTLE_BACKOFF_MS, SETTLE_BACKOFF_MS, SweepReport};
pub use telemetry::{TELEMETRY_KEPT_MS, TELEMETRY_SAMPLE_MS};
pub use verifying::{VERIFY_CLAIM_GRACE_MS, VERIFY_WAIT_MS, Verified};
pub use views::MAX_JOBS_PER_PAGE;

use crate::db::{Db, Kind, Tx};
use crate::error::ApiError;
use crate::ledger::{self, Ledger, Op, job_escrow};
use crate::registry::Registry;
use crate::verify::ResultVerifier;
use agora_wire::KeyId;
use agora_wire::api::{
    ActivityBucket, Ask, Capabilities, CostBreakdown, Heartbeat, HeartbeatReply, JobInfo,
    JobLogLine, JobLogs, JobState, LeaseGrant, LimitKind, LogLine, MAX_HEARTBEAT_KEPT,
    MAX_LEASE_LOG_LINES, MAX_LOG_LINE_CHARS, Progress, ProviderActivity, ProviderInfo,
    RegisterProvider, ResultReport, RunOutcome, SubmitJob, UnitInfo, UnitLimits, UnitState,
};
use base64::Engine as _;
use sqlx::Row;
use sqlx::any::AnyRow;
use std::sync::Arc;

/// Refuse an answer or an upload for lease `lease_id`, read as `row` (its
/// `provider`, `state` and `expires_at_ms`; a buyer's or a canary's),
/// unless `provider` runs it now.
fn check_runs(row: &AnyRow, provider: &KeyId, lease_id: &str, now: i64) -> Result<(), ApiError> {
    if row.try_get::<String, _>("provider")? != provider.as_str() {
        return Err(ApiError::Forbidden(
            "this lease belongs to another provider".into(),
        ));
    }
    if row.try_get::<String, _>("state")? != "active"
        || row.try_get::<i64, _>("expires_at_ms")? <= now
    {
        return Err(ApiError::NotPending(format!(
            "lease {lease_id} (expired or already answered)"
        )));
    }
    Ok(())
}

/// Most work units per job.
pub const MAX_UNITS: usize = 10_000;
pub use agora_wire::limits::{MAX_ASK, MAX_UNIT_BYTES};
use agora_wire::limits::{check_ask, check_unit_bytes, check_unit_limits};
/// Most replicas a buyer may ask for.
pub const MAX_REPLICAS: u32 = 5;
/// Replicas beyond the buyer's that the market may add: one to confirm an
/// untrusted provider or to break a tie.
pub const MAX_EXTRA_REPLICAS: i64 = 1;
/// Most units one provider runs at once.
pub const MAX_CONCURRENT: u32 = 1024;
/// Counted failures (trusted providers', believable, from two or more of
/// them) after which a unit fails for good however they failed (see
/// `failures`), unless its buyer asked for fewer (`RetryPolicy`).
pub const MAX_UNIT_FAILURES: i64 = 3;
const _: () = assert!(
    agora_wire::limits::MAX_UNIT_ATTEMPTS as i64 == MAX_UNIT_FAILURES,
    "a buyer's attempts stay within the paid slots"
);
/// Reputation mean under which a provider's results are confirmed by another.
pub const TRUSTED_REPUTATION: f64 = 0.8;
/// Independent confirmations (decayed) before a provider can be trusted
/// alone: agreements with a provider trusted at its grant, or canaries
/// answered right. Agreement among untrusted providers, or a package's own
/// `verify` (its author may be the provider), never counts: identities are
/// free, so trust cannot rest on them.
pub const TRUSTED_CONFIRMATIONS: f64 = 3.0;
/// Reputation mean under which an operator-vouched provider loses its trust.
pub const VOUCHED_REPUTATION: f64 = 0.5;
/// Failures a browser provider starts with (decayed like any): a tab is
/// cheap to open and to abandon, so it earns trust over about ten confirmed
/// results instead of three. A native provider starts at zero.
pub const BROWSER_PRIOR_BAD: f64 = 2.0;
/// The compile deadline hosts give a component (the host's
/// `COMPILE_TIMEOUT`): a compile-time limit claimed sooner is a false report.
pub const COMPILE_TIME_MS: i64 = 60_000;
/// Time a lease has past its unit's timeout before it ends, heartbeats or
/// not: fetching the component and input, compiling it (the host allows a
/// minute), and returning the result.
pub const LEASE_GRACE_MS: i64 = 120_000;
/// How long a job's escrow hold outlives the job: every wait between the
/// job's expiry and its settlement (its pending verdicts, up to
/// [`VERIFY_WAIT_MS`]; a settlement set aside, up to
/// [`MAX_SETTLE_BACKOFF_MS`] a try) ends long before the hold does, or a
/// late settlement would find its escrow gone and leave accepted work
/// unpaid. A week leaves an operator days to mend a job set aside.
pub const HOLD_OUTLIVES_JOB_MS: i64 = 7 * 24 * 3600 * 1000;
/// Share of a trusted provider's units checked by a second replica: enough
/// that a trusted key turning dishonest is caught within tens of units.
pub const SPOT_CHECK_RATE: f64 = 0.1;
/// Decay applied to a provider's record at each update.
pub const REPUTATION_DECAY: f64 = 0.98;

/// Lifecycle timing and fees.
#[derive(Clone, Debug)]
pub struct JobsConfig {
    /// A lease lives this long past its last heartbeat.
    pub lease_ttl_ms: i64,
    /// A provider is online when its last heartbeat is this recent.
    pub heartbeat_fresh_ms: i64,
    /// A job whose buyer named no deadline expires after this long
    /// unfinished (its escrow is settled); at most `MAX_JOB_DEADLINE_MS`.
    pub job_ttl_ms: i64,
    /// The market's fee, in basis points of each payment.
    pub fee_bps: u64,
    /// Share of a trusted provider's units given a second replica anyway.
    pub spot_check_rate: f64,
    /// Chance that a lease of an untrusted provider with a canary due is
    /// the canary (it always is when no buyer's unit fits).
    pub canary_chance: f64,
    /// How long a job's data is kept after the job ends
    /// ([`DATA_RETENTION_MS`] unless the operator says otherwise).
    pub data_retention_ms: i64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            lease_ttl_ms: 30_000,
            heartbeat_fresh_ms: 30_000,
            job_ttl_ms: 24 * 3600 * 1000,
            fee_bps: 500,
            spot_check_rate: SPOT_CHECK_RATE,
            canary_chance: 0.5,
            data_retention_ms: DATA_RETENTION_MS,
        }
    }
}

impl JobsConfig {
    /// The market's fee on a payment of `cost` (rounded down). Job info
    /// sums the same in SQL: `cost * fee_bps / 10000` per lease.
    pub fn fee_of(&self, cost: u64) -> u64 {
        cost * self.fee_bps / 10_000
    }
}

#[derive(Clone)]
pub struct Jobs {
    db: Db,
    ledger: Ledger,
    registry: Registry,
    verifier: Option<Arc<dyn ResultVerifier>>,
    /// Wakes the verifiers when a result is queued for verification.
    verify_wake: Arc<tokio::sync::Notify>,
    /// The market's prices, read now and then (`prices::market_view`).
    going: Arc<prices::MarketViewCache>,
    pub config: JobsConfig,
}

/// What a unit used, as the market pays for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub fuel: u64,
    pub gpu_time_us: u64,
    /// Wall-clock time from the grant to the result, measured by the market.
    pub wall_ms: u64,
}

/// Credits for `usage` at `ask`, rounded up.
pub fn price(ask: Ask, usage: Usage) -> u64 {
    let fuel_part = (usage.fuel as u128 * ask.per_billion_fuel as u128).div_ceil(1_000_000_000);
    let gpu_part = (usage.gpu_time_us as u128 * ask.per_gpu_second as u128).div_ceil(1_000_000);
    let wall_part = (usage.wall_ms as u128 * ask.per_wall_second as u128).div_ceil(1_000);
    (fuel_part + gpu_part + wall_part).min(u64::MAX as u128) as u64
}

/// The limits of a unit from a row with the columns `jobs` and `canaries`
/// share (fuel_limit, memory_limit, timeout_ms, needs_gpu).
fn unit_limits_of(row: &AnyRow) -> Result<UnitLimits, ApiError> {
    Ok(UnitLimits {
        fuel: row.try_get::<i64, _>("fuel_limit")? as u64,
        memory_bytes: row.try_get::<i64, _>("memory_limit")? as u64,
        timeout_ms: row.try_get::<i64, _>("timeout_ms")? as u64,
        gpu: row.try_get::<i64, _>("needs_gpu")? == 1,
    })
}

/// The tables holding leases, with their lease-id column: buyers' leases
/// and canaries', which live, renew and lapse alike (a provider cannot
/// tell them apart).
const LEASE_TABLES: [(&str, &str); 2] = [("leases", "id"), ("canary_runs", "lease_id")];

/// A limit kind's wire form (`timeout`, `fuel`, ...), as stored.
fn limit_text(limit: LimitKind) -> String {
    serde_json::to_value(limit)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A stored limit kind, read back.
fn limit_of(text: Option<String>) -> Option<LimitKind> {
    serde_json::from_value(serde_json::Value::String(text?)).ok()
}

/// A stored run outcome, read back: an unknown one is an error, never a
/// guess.
fn outcome_of(text: String) -> Result<RunOutcome, ApiError> {
    text.parse()
        .map_err(|e| ApiError::Internal(format!("a stored lease's {e}")))
}

/// A uniform draw in [0, 1) from the OS.
fn rand_unit() -> f64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS provides randomness");
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// `prefix` and `bytes` random bytes in hex: the ids of jobs, leases,
/// canaries and uploads.
pub(crate) fn random_id(prefix: char, bytes: usize) -> String {
    let mut id_bytes = vec![0u8; bytes];
    getrandom::fill(&mut id_bytes).expect("the OS provides randomness");
    format!("{prefix}{}", hex::encode(id_bytes))
}

fn b64(text: &str, what: &str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| ApiError::Invalid(format!("{what}: {e}")))
}

impl Jobs {
    pub fn new(db: Db, ledger: Ledger, registry: Registry, config: JobsConfig) -> Self {
        assert!(
            agora_wire::limits::MAX_JOB_DEADLINE_MS as i64 + HOLD_OUTLIVES_JOB_MS
                <= crate::ledger::MAX_HOLD_MS as i64,
            "a job's longest deadline plus HOLD_OUTLIVES_JOB_MS must fit the ledger's longest hold"
        );
        assert!(
            (1..=agora_wire::limits::MAX_JOB_DEADLINE_MS as i64).contains(&config.job_ttl_ms),
            "a job's default deadline is within MAX_JOB_DEADLINE_MS"
        );
        Jobs {
            db,
            ledger,
            registry,
            verifier: None,
            verify_wake: Default::default(),
            going: Default::default(),
            config,
        }
    }

    pub fn set_verifier(&mut self, verifier: Arc<dyn ResultVerifier>) {
        self.verifier = Some(verifier);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_hold_outlives_every_wait_before_its_settlement() {
        let waits = VERIFY_WAIT_MS + MAX_SETTLE_BACKOFF_MS * 8;
        assert!(
            waits < HOLD_OUTLIVES_JOB_MS,
            "{waits} ms of waits past the job, a hold {HOLD_OUTLIVES_JOB_MS} ms past it"
        );
        let ttl = JobsConfig::default().job_ttl_ms;
        assert!(
            ttl + HOLD_OUTLIVES_JOB_MS <= crate::ledger::MAX_HOLD_MS as i64,
            "the ledger takes the default job's hold"
        );
    }
}
