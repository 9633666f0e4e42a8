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

mod canaries;
mod decide;
mod settle;
mod verifying;
pub use canaries::CANARIES_PER_PROVIDER;
pub use settle::{MAX_SETTLE_BACKOFF_MS, SETTLE_BACKOFF_MS, SweepReport};
pub use verifying::{VERIFY_CLAIM_GRACE_MS, VERIFY_WAIT_MS, Verified};
use decide::decide_unit;
use settle::hold_id;

use crate::db::{Db, Kind, Tx};
use crate::error::ApiError;
use crate::ledger::{self, Ledger, Op, job_escrow};
use crate::registry::Registry;
use crate::verify::ResultVerifier;
use std::sync::Arc;
use agora_wire::KeyId;
use agora_wire::api::{
    ActivityBucket, Ask, Capabilities, LimitKind, RunOutcome, CostBreakdown, Heartbeat, JobInfo, JobLogLine, JobLogs, JobState, LeaseGrant, LogLine,
    MAX_LEASE_LOG_LINES, MAX_LOG_LINE_CHARS, Progress, ProviderActivity, ProviderInfo, RegisterProvider, ResultReport, SubmitJob, UnitInfo, UnitState,
    UnitLimits,
};
use base64::Engine as _;
use sqlx::Row;
use sqlx::any::AnyRow;

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
/// Providers a unit may fail on before it fails for good.
pub const MAX_UNIT_FAILURES: i64 = 3;
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
    /// A job unfinished after this long expires (its escrow is settled).
    pub job_ttl_ms: i64,
    /// The market's fee, in basis points of each payment.
    pub fee_bps: u64,
    /// Share of a trusted provider's units given a second replica anyway.
    pub spot_check_rate: f64,
    /// Chance that a lease of an untrusted provider with a canary due is
    /// the canary (it always is when no buyer's unit fits).
    pub canary_chance: f64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig { lease_ttl_ms: 30_000, heartbeat_fresh_ms: 30_000, job_ttl_ms: 24 * 3600 * 1000, fee_bps: 500, spot_check_rate: SPOT_CHECK_RATE, canary_chance: 0.5 }
    }
}

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
    pub fn of_contradicted_failure(outcome: RunOutcome, limit: Option<LimitKind>, ran_ms: i64, timeout_ms: i64) -> Mark {
        match (outcome, limit) {
            (RunOutcome::LimitExceeded, Some(LimitKind::Timeout)) if ran_ms < timeout_ms => Mark::Mismatch,
            (RunOutcome::LimitExceeded, Some(LimitKind::CompileTime)) if ran_ms < COMPILE_TIME_MS => Mark::Mismatch,
            (RunOutcome::LimitExceeded, Some(LimitKind::Timeout | LimitKind::CompileTime)) => Mark::Timeout,
            (RunOutcome::WorkerLost, _) => Mark::Crash,
            _ => Mark::Mismatch,
        }
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

fn reputation(good: f64, bad: f64) -> f64 {
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
    fn of(row: &AnyRow) -> Result<Record, sqlx::Error> {
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
        let mean = reputation(self.good, self.bad);
        if self.vouched {
            return mean >= VOUCHED_REPUTATION;
        }
        mean >= TRUSTED_REPUTATION && self.confirmed >= TRUSTED_CONFIRMATIONS
    }
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
    serde_json::to_value(limit).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// A stored limit kind, read back.
fn limit_of(text: Option<String>) -> Option<LimitKind> {
    serde_json::from_value(serde_json::Value::String(text?)).ok()
}

/// A uniform draw in [0, 1) from the OS.
fn rand_unit() -> f64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS provides randomness");
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// `prefix` and `bytes` random bytes in hex: the ids of jobs, leases and canaries.
fn random_id(prefix: char, bytes: usize) -> String {
    let mut id_bytes = vec![0u8; bytes];
    getrandom::fill(&mut id_bytes).expect("the OS provides randomness");
    format!("{prefix}{}", hex::encode(id_bytes))
}

fn b64(text: &str, what: &str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| ApiError::Invalid(format!("{what}: {e}")))
}

impl Jobs {
    pub fn new(db: Db, ledger: Ledger, registry: Registry, config: JobsConfig) -> Self {
        Jobs { db, ledger, registry, verifier: None, verify_wake: Default::default(), config }
    }

    pub fn set_verifier(&mut self, verifier: Arc<dyn ResultVerifier>) {
        self.verifier = Some(verifier);
    }

    // ------------------------------------------------------------ providers

    pub async fn register(&self, provider: &KeyId, r: RegisterProvider, now: i64) -> Result<(), ApiError> {
        check_ask("ask.per_billion_fuel", r.ask.per_billion_fuel)?;
        check_ask("ask.per_gpu_second", r.ask.per_gpu_second)?;
        check_ask("ask.per_wall_second", r.ask.per_wall_second)?;
        if r.max_concurrent == 0 || r.max_concurrent > MAX_CONCURRENT {
            return Err(ApiError::Invalid(format!("max_concurrent is 1 to {MAX_CONCURRENT}")));
        }
        if !matches!(r.capabilities.kind.as_str(), "native" | "browser") {
            return Err(ApiError::Invalid(format!("capabilities.kind is `native` or `browser`, not `{}`", r.capabilities.kind)));
        }
        let caps = serde_json::to_string(&r.capabilities).expect("plain JSON");
        let prior_bad = if r.capabilities.kind == "browser" { BROWSER_PRIOR_BAD } else { 0.0 };
        sqlx::query(
            "INSERT INTO providers (id, capabilities, ask_per_billion_fuel, ask_per_gpu_second, max_concurrent, has_gpu, telemetry, last_heartbeat_ms, registered_at_ms, bad, ask_per_wall_second)
             VALUES ($1, $2, $3, $4, $5, $6, '{}', $7, $7, $8, $9)
             ON CONFLICT (id) DO UPDATE SET capabilities = $2, ask_per_billion_fuel = $3, ask_per_gpu_second = $4, max_concurrent = $5, has_gpu = $6, last_heartbeat_ms = $7, ask_per_wall_second = $9",
        )
        .bind(provider.as_str())
        .bind(caps)
        .bind(r.ask.per_billion_fuel as i64)
        .bind(r.ask.per_gpu_second as i64)
        .bind(r.max_concurrent as i64)
        .bind(!r.capabilities.gpus.is_empty() as i64)
        .bind(now)
        .bind(prior_bad)
        .bind(r.ask.per_wall_second as i64)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Record telemetry and running units' progress and logs, and renew the
    /// leases the provider names as running (never past their deadline).
    pub async fn heartbeat(&self, provider: &KeyId, mut beat: Heartbeat, now: i64) -> Result<u64, ApiError> {
        let live = std::mem::take(&mut beat.leases);
        if live.len() > 1024 {
            return Err(ApiError::Invalid("at most 1024 leases per heartbeat".into()));
        }
        let done = sqlx::query("UPDATE providers SET telemetry = $1, last_heartbeat_ms = $2 WHERE id = $3")
            .bind(serde_json::to_string(&beat).expect("plain JSON"))
            .bind(now)
            .bind(provider.as_str())
            .execute(&self.db.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(ApiError::NotFound("register this provider first".into()));
        }
        for lease in &live {
            self.record_live(provider, &lease.lease_id, lease.progress, &lease.logs, now).await?;
        }
        let named: Vec<&str> = live.iter().map(|l| l.lease_id.as_str()).collect();
        self.renew(provider, &named, now).await
    }

    /// Renew `named` leases of `provider` that are still active: a lease
    /// lives [`JobsConfig::lease_ttl_ms`] past the last heartbeat naming it,
    /// never past its deadline. Canary leases are renewed the same way.
    async fn renew(&self, provider: &KeyId, named: &[&str], now: i64) -> Result<u64, ApiError> {
        if named.is_empty() {
            return Ok(0);
        }
        let until = now + self.config.lease_ttl_ms;
        let mut renewed = 0;
        let mut tx = self.db.write().await?;
        for lease in named {
            for (table, key) in LEASE_TABLES {
                renewed += sqlx::query(&format!(
                    "UPDATE {table} SET expires_at_ms = CASE WHEN deadline_ms > 0 AND deadline_ms < $1 THEN deadline_ms ELSE $1 END
                     WHERE {key} = $2 AND provider = $3 AND state = 'active' AND expires_at_ms > $4"
                ))
                .bind(until)
                .bind(lease)
                .bind(provider.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
        }
        tx.commit().await?;
        Ok(renewed)
    }

    pub async fn providers(&self, now: i64) -> Result<Vec<ProviderInfo>, ApiError> {
        let rows = sqlx::query("SELECT * FROM providers ORDER BY last_heartbeat_ms DESC LIMIT 500").fetch_all(&self.db.pool).await?;
        rows.iter().map(|r| self.provider_from(r, now)).collect()
    }

    fn provider_from(&self, r: &AnyRow, now: i64) -> Result<ProviderInfo, ApiError> {
        let (good, bad): (f64, f64) = (r.try_get("good")?, r.try_get("bad")?);
        let last: i64 = r.try_get("last_heartbeat_ms")?;
        Ok(ProviderInfo {
            id: r.try_get("id")?,
            capabilities: serde_json::from_str::<Capabilities>(&r.try_get::<String, _>("capabilities")?).unwrap_or_default(),
            ask: Ask {
                per_billion_fuel: r.try_get::<i64, _>("ask_per_billion_fuel")? as u64,
                per_gpu_second: r.try_get::<i64, _>("ask_per_gpu_second")? as u64,
                per_wall_second: r.try_get::<i64, _>("ask_per_wall_second")? as u64,
            },
            max_concurrent: r.try_get::<i64, _>("max_concurrent")? as u32,
            online: now - last <= self.config.heartbeat_fresh_ms,
            last_heartbeat_ms: last,
            telemetry: serde_json::from_str(&r.try_get::<String, _>("telemetry")?).unwrap_or_default(),
            reputation: reputation(good, bad),
            units_done: r.try_get::<i64, _>("units_done")? as u64,
        })
    }

    /// Live figures, and a suggested price: the median online ask, raised by
    /// up to 2x as the queue grows past the online capacity.
    pub async fn stats(&self, now: i64) -> Result<agora_wire::api::MarketStats, ApiError> {
        let online: Vec<ProviderInfo> = self.providers(now).await?.into_iter().filter(|p| p.online).collect();
        let count = |sql: &'static str| async move {
            Ok::<u64, ApiError>(sqlx::query(sql).fetch_one(&self.db.pool).await?.try_get::<i64, _>("n")? as u64)
        };
        // Canaries count as running like any lease: no figure tells them apart.
        let running = count(
            "SELECT (SELECT COUNT(*) FROM leases WHERE state = 'active') + (SELECT COUNT(*) FROM canary_runs WHERE state = 'active') AS n",
        )
        .await?;
        let queued = count(
            "SELECT CAST(COALESCE(SUM(u.wanted), 0) AS BIGINT) AS n FROM units u JOIN jobs j ON j.id = u.job_id WHERE u.state = 'queued' AND j.state = 'running'",
        )
        .await?
        .saturating_sub(running);
        let capacity: u64 = online.iter().map(|p| p.max_concurrent as u64).sum();
        let median = |mut v: Vec<u64>| {
            v.sort();
            v.get(v.len() / 2).copied().unwrap_or(0)
        };
        let pressure = if capacity == 0 { 2.0 } else { (1.0 + queued as f64 / capacity as f64).min(2.0) };
        let scale = |v: u64| (v as f64 * pressure).ceil() as u64;
        Ok(agora_wire::api::MarketStats {
            providers_online: online.len() as u64,
            gpus_online: online.iter().map(|p| p.capabilities.gpus.len() as u64).sum(),
            queued_units: queued,
            running_units: running,
            capacity,
            suggested_ask: Ask {
                per_billion_fuel: scale(median(online.iter().map(|p| p.ask.per_billion_fuel).collect())),
                per_gpu_second: scale(median(online.iter().map(|p| p.ask.per_gpu_second).collect())),
                per_wall_second: scale(median(online.iter().map(|p| p.ask.per_wall_second).collect())),
            },
        })
    }

    async fn mark(&self, provider: &str, mark: Mark) -> Result<(), ApiError> {
        mark_provider(&self.db.pool, provider, mark).await
    }

    /// Apply `marks` in the caller's transaction, in provider order (the
    /// order every transaction locks provider rows in).
    async fn mark_all(tx: &mut Tx, mut marks: Vec<(String, Mark)>) -> Result<(), ApiError> {
        marks.sort_by(|a, b| a.0.cmp(&b.0));
        for (provider, mark) in marks {
            mark_provider(&mut **tx, &provider, mark).await?;
        }
        Ok(())
    }

    /// Keep a lease's latest progress and its new log lines (up to
    /// [`MAX_LEASE_LOG_LINES`]). Leases of other providers are ignored.
    async fn record_live(&self, provider: &KeyId, lease_id: &str, progress: Option<Progress>, logs: &[LogLine], now: i64) -> Result<(), ApiError> {
        if progress.is_none() && logs.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.write().await?;
        Self::record_live_in(&mut tx, provider, lease_id, progress, logs, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// [`Jobs::record_live`] in the caller's transaction.
    async fn record_live_in(tx: &mut Tx, provider: &KeyId, lease_id: &str, progress: Option<Progress>, logs: &[LogLine], now: i64) -> Result<(), ApiError> {
        if progress.is_none() && logs.is_empty() {
            return Ok(());
        }
        let Some(lease) = sqlx::query("SELECT job_id, idx, log_lines FROM leases WHERE id = $1 AND provider = $2")
            .bind(lease_id)
            .bind(provider.as_str())
            .fetch_optional(&mut **tx)
            .await?
        else {
            return Ok(());
        };
        let (job_id, idx, kept): (String, i64, i64) = (lease.try_get("job_id")?, lease.try_get("idx")?, lease.try_get("log_lines")?);
        let room = (MAX_LEASE_LOG_LINES - kept).max(0) as usize;
        let mut lines: Vec<(String, String)> =
            logs.iter().take(room).map(|l| (l.level.chars().take(16).collect(), l.message.chars().take(MAX_LOG_LINE_CHARS).collect())).collect();
        if logs.len() > room && room > 0 {
            lines.pop();
            lines.push(("warn".into(), format!("the market keeps {MAX_LEASE_LOG_LINES} log lines per lease; later lines are dropped")));
        }
        for (level, message) in &lines {
            sqlx::query("INSERT INTO unit_logs (job_id, idx, lease_id, provider, level, message, at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                .bind(&job_id)
                .bind(idx)
                .bind(lease_id)
                .bind(provider.as_str())
                .bind(level)
                .bind(message)
                .bind(now)
                .execute(&mut **tx)
                .await?;
        }
        let (done, total) = progress.map(|p| (Some(p.done.min(i64::MAX as u64) as i64), Some(p.total.min(i64::MAX as u64) as i64))).unwrap_or((None, None));
        sqlx::query(
            "UPDATE leases SET log_lines = log_lines + $1, progress_done = COALESCE($2, progress_done), progress_total = COALESCE($3, progress_total) WHERE id = $4",
        )
        .bind(lines.len() as i64)
        .bind(done)
        .bind(total)
        .bind(lease_id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// A job's log lines after `after`, oldest first.
    pub async fn logs(&self, job: &str, after: i64, limit: u32) -> Result<JobLogs, ApiError> {
        let rows = sqlx::query("SELECT seq, idx, provider, level, message, at_ms FROM unit_logs WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3")
            .bind(job)
            .bind(after)
            .bind(limit.clamp(1, 1000) as i64)
            .fetch_all(&self.db.pool)
            .await?;
        let lines = rows
            .iter()
            .map(|r| {
                Ok(JobLogLine {
                    seq: r.try_get("seq")?,
                    unit: r.try_get::<i64, _>("idx")? as u32,
                    provider: r.try_get("provider")?,
                    level: r.try_get("level")?,
                    message: r.try_get("message")?,
                    at_ms: r.try_get("at_ms")?,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let next = lines.last().map(|l| l.seq).unwrap_or(after);
        Ok(JobLogs { lines, next })
    }

    /// What `provider` did over the last `buckets` buckets of `bucket_ms`
    /// up to `now`: results returned, credits earned, slots busy. Public,
    /// like the rest of a provider's record.
    pub async fn activity(&self, provider: &str, bucket_ms: i64, buckets: usize, now: i64) -> Result<ProviderActivity, ApiError> {
        let bucket_ms = bucket_ms.clamp(60_000, 7 * 24 * 3600 * 1000);
        let buckets = buckets.clamp(1, 200);
        let p = sqlx::query("SELECT max_concurrent FROM providers WHERE id = $1")
            .bind(provider)
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no provider `{provider}`")))?;
        let max_concurrent = p.try_get::<i64, _>("max_concurrent")?.max(1);
        let start = now - bucket_ms * buckets as i64;
        let rows = sqlx::query(
            "SELECT created_at_ms, answered_at_ms, expires_at_ms, state, cost, paid FROM leases WHERE provider = $1 AND created_at_ms >= $2 ORDER BY created_at_ms LIMIT 100000",
        )
        .bind(provider)
        .bind(start)
        .fetch_all(&self.db.pool)
        .await?;
        let mut out: Vec<ActivityBucket> =
            (0..buckets).map(|i| ActivityBucket { start_ms: start + i as i64 * bucket_ms, units: 0, earned: 0, utilization: 0.0 }).collect();
        let mut busy = vec![0i64; buckets];
        for r in &rows {
            let created: i64 = r.try_get("created_at_ms")?;
            let answered: Option<i64> = r.try_get("answered_at_ms")?;
            let state: String = r.try_get("state")?;
            // A running lease is busy until now; a lost one until it expired.
            let end = answered.unwrap_or(if state == "active" { now } else { r.try_get::<i64, _>("expires_at_ms")?.min(now) });
            let at = |t: i64| ((t - start) / bucket_ms).clamp(0, buckets as i64 - 1) as usize;
            if let Some(t) = answered {
                out[at(t)].units += 1;
            }
            if r.try_get::<i64, _>("paid")? == 1 {
                let cost = r.try_get::<Option<i64>, _>("cost")?.unwrap_or(0) as u64;
                out[at(created)].earned += cost - cost * self.config.fee_bps / 10_000;
            }
            // Spread the busy time over the buckets it covers.
            let mut t = created.max(start);
            while t < end {
                let b = at(t);
                let bucket_end = start + (b as i64 + 1) * bucket_ms;
                let until = end.min(bucket_end);
                busy[b] += until - t;
                t = until;
            }
        }
        for (b, ms) in out.iter_mut().zip(busy) {
            b.utilization = (ms as f64 / (bucket_ms * max_concurrent) as f64).min(1.0);
        }
        Ok(ProviderActivity { provider: provider.to_string(), bucket_ms, max_concurrent: max_concurrent as u32, buckets: out })
    }

    // ------------------------------------------------------------ buyers

    /// Submit a job: check it, store inputs, hold the cap in escrow.
    pub async fn submit(&self, buyer: &KeyId, request: SubmitJob, now: i64) -> Result<JobInfo, ApiError> {
        let units = request.inputs_base64.len();
        if units == 0 || units > MAX_UNITS {
            return Err(ApiError::Invalid(format!("a job has 1 to {MAX_UNITS} inputs")));
        }
        if request.replicas == 0 || request.replicas > MAX_REPLICAS {
            return Err(ApiError::Invalid(format!("replicas is 1 to {MAX_REPLICAS}")));
        }
        check_unit_limits(&request.limits)?;
        ledger::check_amount("max_price", request.max_price)?;
        let info = self.registry.info(&request.package).await?;
        let version = match &request.version {
            Some(v) => info.versions.iter().find(|x| &x.version == v).ok_or_else(|| ApiError::NotFound(format!("no version {v} of {}", request.package)))?,
            None => {
                let latest = info.summary.latest.clone().ok_or_else(|| ApiError::NotFound(format!("{} has no published version", request.package)))?;
                info.versions.iter().find(|x| x.version == latest).expect("latest is listed")
            }
        };
        if version.yanked {
            return Err(ApiError::Invalid(format!("{} {} is yanked", request.package, version.version)));
        }
        // The most results of one unit that can be paid: the buyer's
        // replicas (at least 2 once an untrusted provider is confirmed) plus
        // one tie-breaker.
        let slots = units as u64 * (request.replicas.max(2) as u64 + MAX_EXTRA_REPLICAS as u64);
        let unit_cap = request.max_price / slots;
        if unit_cap == 0 {
            return Err(ApiError::Invalid(format!(
                "max_price {} leaves nothing per replica: at least {slots} credits for {units} units x (replicas + {MAX_EXTRA_REPLICAS})",
                request.max_price
            )));
        }
        let mut inputs = Vec::with_capacity(units);
        for (i, text) in request.inputs_base64.iter().enumerate() {
            let bytes = b64(text, &format!("input {i}"))?;
            check_unit_bytes("an input", bytes.len())?;
            inputs.push(bytes);
        }
        let id = random_id('j', 9);
        let expires = now + self.config.job_ttl_ms;
        self.insert_job(&id, buyer, &request, version, unit_cap, &inputs, now, expires).await?;
        self.info(&id).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert_job(
        &self,
        id: &str,
        buyer: &KeyId,
        r: &SubmitJob,
        version: &agora_wire::api::VersionInfo,
        unit_cap: u64,
        inputs: &[Vec<u8>],
        now: i64,
        expires: i64,
    ) -> Result<(), ApiError> {
        // A component that imports the GPU interfaces needs a GPU, whatever
        // the buyer said.
        let uses_gpu = version.imports.iter().any(|i| i.starts_with("agora:compute/gpu") || i.starts_with("agora:compute/kernels"));
        let checked = self.verifier.is_some() && version.exports.iter().any(|e| e == "verify");
        let mut tx = self.db.write().await?;
        sqlx::query(
            "INSERT INTO jobs (id, buyer, package, version, digest, fuel_limit, memory_limit, timeout_ms, needs_gpu, max_price, unit_cap, replicas, state, created_at_ms, expires_at_ms, checked_by_verify)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'running', $13, $14, $15)",
        )
        .bind(id)
        .bind(buyer.as_str())
        .bind(&r.package)
        .bind(&version.version)
        .bind(&version.digest)
        .bind(r.limits.fuel as i64)
        .bind(r.limits.memory_bytes as i64)
        .bind(r.limits.timeout_ms as i64)
        .bind((r.limits.gpu || uses_gpu) as i64)
        .bind(r.max_price as i64)
        .bind(unit_cap as i64)
        .bind(r.replicas as i64)
        .bind(now)
        .bind(expires)
        .bind(checked as i64)
        .execute(&mut *tx)
        .await?;
        // Checked by `verify`, every replica must pass; compared by digest,
        // a majority must agree.
        let quorum = if checked || r.replicas <= 2 { r.replicas } else { r.replicas / 2 + 1 } as i64;
        for (i, bytes) in inputs.iter().enumerate() {
            let digest = agora_wire::digest_hex(bytes);
            sqlx::query("INSERT INTO blobs (digest, bytes) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING")
                .bind(&digest)
                .bind(bytes.clone())
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO units (job_id, idx, input_digest, state, wanted, quorum, queued_at_ms) VALUES ($1, $2, $3, 'queued', $4, $5, $6)")
                .bind(id)
                .bind(i as i64)
                .bind(&digest)
                .bind(r.replicas as i64)
                .bind(quorum)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        // The hold and the job in one transaction: no job without its
        // escrow, no escrow without its job, whatever crashes when. The
        // hold comes last, so the buyer's account row is locked only for
        // the end of the transaction, not while the units are written.
        let hold = Op::Hold {
            debit: buyer.to_string(),
            credit: job_escrow(id),
            amount: r.max_price,
            timeout_ms: (self.config.job_ttl_ms + 3_600_000) as u64,
        };
        self.ledger.execute_in(&mut tx, &hold_id(id), &hold, now).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn info(&self, id: &str) -> Result<JobInfo, ApiError> {
        let job = sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no job `{id}`")))?;
        let units = sqlx::query(
            "SELECT u.*, CAST(LENGTH(b.bytes) AS BIGINT) AS output_bytes FROM units u LEFT JOIN blobs b ON b.digest = u.output_digest WHERE u.job_id = $1 ORDER BY u.idx",
        )
        .bind(id)
        .fetch_all(&self.db.pool)
        .await?;
        let leases = sqlx::query("SELECT idx, state, cost, paid, output_digest, progress_done, progress_total FROM leases WHERE job_id = $1")
            .bind(id)
            .fetch_all(&self.db.pool)
            .await?;
        let max_price = job.try_get::<i64, _>("max_price")? as u64;
        let state = match job.try_get::<String, _>("state")?.as_str() {
            "done" => JobState::Done,
            "failed" => JobState::Failed,
            "expired" => JobState::Expired,
            _ => JobState::Running,
        };
        let fee_bps = self.config.fee_bps;
        let mut cost = CostBreakdown::default();
        let mut spent = 0u64;
        for l in &leases {
            if l.try_get::<i64, _>("paid")? == 1 {
                let c = l.try_get::<Option<i64>, _>("cost")?.unwrap_or(0) as u64;
                let fee = c * fee_bps / 10_000;
                cost.fees += fee;
                cost.paid_to_providers += c - fee;
                spent += c;
            }
        }
        if state == JobState::Running {
            cost.held = max_price - spent;
        } else {
            cost.refunded = max_price - spent;
        }
        let mut unit_infos = Vec::new();
        for u in &units {
            let idx: i64 = u.try_get("idx")?;
            let mine: Vec<&AnyRow> = leases.iter().filter(|l| l.try_get::<i64, _>("idx").ok() == Some(idx)).collect();
            let stored: String = u.try_get("state")?;
            let in_state = |l: &&AnyRow, state: &str| l.try_get::<String, _>("state").ok().as_deref() == Some(state);
            let running: Vec<&&AnyRow> = mine.iter().filter(|l| in_state(l, "active")).collect();
            let unit_state = match stored.parse::<UnitState>().map_err(ApiError::Internal)? {
                UnitState::Queued if !running.is_empty() => UnitState::Running,
                UnitState::Queued if mine.iter().any(|l| in_state(l, "verifying")) => UnitState::Verifying,
                other => other,
            };
            // The furthest running replica.
            let progress = running
                .iter()
                .filter_map(|l| {
                    let done = l.try_get::<Option<i64>, _>("progress_done").ok().flatten()?;
                    let total = l.try_get::<Option<i64>, _>("progress_total").ok().flatten()?;
                    Some(Progress { done: done as u64, total: total as u64 })
                })
                .max_by_key(|p| (p.done as u128 * 1_000_000).checked_div(p.total as u128).unwrap_or(0));
            let output_digest: Option<String> = u.try_get("output_digest")?;
            let output_bytes = u.try_get::<Option<i64>, _>("output_bytes")?.map(|n| n as u64);
            let unit_cost: u64 = mine
                .iter()
                .filter(|l| l.try_get::<i64, _>("paid").ok() == Some(1))
                .map(|l| l.try_get::<Option<i64>, _>("cost").ok().flatten().unwrap_or(0) as u64)
                .sum();
            unit_infos.push(UnitInfo {
                index: idx as u32,
                state: unit_state,
                attempts: mine.len() as u32,
                output_digest,
                output_bytes,
                cost: (unit_cost > 0).then_some(unit_cost),
                message: u.try_get("message")?,
                progress,
            });
        }
        Ok(JobInfo {
            id: id.into(),
            buyer: job.try_get("buyer")?,
            package: job.try_get("package")?,
            version: job.try_get("version")?,
            digest: job.try_get("digest")?,
            state,
            replicas: job.try_get::<i64, _>("replicas")? as u32,
            max_price,
            units: unit_infos,
            cost,
            created_at_ms: job.try_get("created_at_ms")?,
        })
    }

    pub async fn jobs_of(&self, buyer: &str) -> Result<Vec<JobInfo>, ApiError> {
        let ids: Vec<String> = sqlx::query("SELECT id FROM jobs WHERE buyer = $1 ORDER BY created_at_ms DESC LIMIT 50")
            .bind(buyer)
            .fetch_all(&self.db.pool)
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for id in ids {
            out.push(self.info(&id).await?);
        }
        Ok(out)
    }

    pub async fn buyer_of(&self, job: &str) -> Result<String, ApiError> {
        sqlx::query("SELECT buyer FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_optional(&self.db.pool)
            .await?
            .map(|r| r.try_get("buyer"))
            .transpose()?
            .ok_or_else(|| ApiError::NotFound(format!("no job `{job}`")))
    }

    pub async fn blob(&self, digest: &str) -> Result<Vec<u8>, ApiError> {
        let row = sqlx::query("SELECT bytes FROM blobs WHERE digest = $1")
            .bind(digest)
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no blob {digest}")))?;
        Ok(row.try_get("bytes")?)
    }

    /// The verified output of unit `idx`.
    pub async fn output(&self, job: &str, idx: u32) -> Result<Vec<u8>, ApiError> {
        let row = sqlx::query("SELECT output_digest FROM units WHERE job_id = $1 AND idx = $2 AND state = 'verified'")
            .bind(job)
            .bind(idx as i64)
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("unit {idx} of {job} has no verified output")))?;
        self.blob(&row.try_get::<String, _>("output_digest")?).await
    }

    // ------------------------------------------------------------ leases

    /// Lease one unit this provider can run, if any.
    pub async fn lease(&self, provider: &KeyId, now: i64) -> Result<Option<LeaseGrant>, ApiError> {
        let p = sqlx::query("SELECT p.*, (SELECT COUNT(*) FROM vouched v WHERE v.id = p.id) AS vouched FROM providers p WHERE p.id = $1")
            .bind(provider.as_str())
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or_else(|| ApiError::NotFound("register this provider first".into()))?;
        let info = self.provider_from(&p, now)?;
        if !info.online {
            return Err(ApiError::Invalid("this provider's heartbeat is stale: send one first".into()));
        }
        let mut tx = self.db.write().await?;
        let running: i64 = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM leases WHERE provider = $1 AND state = 'active')
                  + (SELECT COUNT(*) FROM canary_runs WHERE provider = $1 AND state = 'active' AND expires_at_ms > $2) AS n",
        )
        .bind(provider.as_str())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        // A key trusted through confirmations (not the operator's own host)
        // holds no more units at once than it has confirmations: a key that
        // earned trust cheaply cannot cash it in on a burst of lone results
        // before a spot check catches it.
        let record = Record::of(&p)?;
        let cap = if record.trusted() && !record.vouched { (record.confirmed as i64).clamp(1, info.max_concurrent as i64) } else { info.max_concurrent as i64 };
        if running >= cap {
            return Ok(None);
        }
        let query = lease_candidate_sql(self.db.kind);
        let has_gpu = !info.capabilities.gpus.is_empty();
        // A browser tab runs only packages with a browser bundle.
        let browser = info.capabilities.kind == "browser";
        let untrusted = !record.trusted();
        let candidate = sqlx::query(&query)
            .bind(now)
            .bind(has_gpu as i64)
            .bind(info.ask.per_billion_fuel as i64)
            .bind(info.ask.per_gpu_second as i64)
            .bind(provider.as_str())
            .bind(browser as i64)
            .bind(info.ask.per_wall_second as i64)
            .bind(untrusted as i64)
            .fetch_optional(&mut *tx)
            .await?;
        // An untrusted provider's canaries come at random among its leases
        // (or when no buyer's unit fits it), not always first.
        if untrusted
            && (candidate.is_none() || rand_unit() < self.config.canary_chance)
            && let Some(grant) = self.lease_canary(&mut tx, provider, has_gpu, browser, now).await?
        {
            tx.commit().await?;
            return Ok(Some(grant));
        }
        let Some(unit) = candidate else {
            return Ok(None);
        };
        let (job_id, idx): (String, i64) = (unit.try_get("job_id")?, unit.try_get("idx")?);
        // The unit row is locked now; recount under the lock with a fresh
        // statement (PostgreSQL re-checks a locked row's own columns but not
        // the subqueries of the statement that locked it).
        let fresh = sqlx::query(
            "SELECT u.wanted AS wanted,
               (SELECT COUNT(*) FROM leases l WHERE l.job_id = u.job_id AND l.idx = u.idx AND l.state IN ('active', 'submitted', 'verifying', 'accepted')) AS taken,
               (SELECT COUNT(*) FROM leases l WHERE l.job_id = u.job_id AND l.idx = u.idx AND l.provider = $3) AS mine,
               (SELECT COUNT(*) FROM leases l WHERE l.job_id = u.job_id AND l.idx = u.idx AND l.state IN ('active', 'submitted', 'verifying')) AS in_flight
             FROM units u WHERE u.job_id = $1 AND u.idx = $2",
        )
        .bind(&job_id)
        .bind(idx)
        .bind(provider.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let checked = unit.try_get::<i64, _>("checked")? == 1;
        let first_only = untrusted && !checked && fresh.try_get::<i64, _>("in_flight")? > 0;
        if fresh.try_get::<i64, _>("taken")? >= fresh.try_get::<i64, _>("wanted")? || fresh.try_get::<i64, _>("mine")? > 0 || first_only {
            return Ok(None);
        }
        // A provider not yet trusted is confirmed by another replica (unless
        // the market checks each result with the package's `verify`).
        if untrusted && !checked && unit.try_get::<i64, _>("wanted")? < 2 {
            sqlx::query("UPDATE units SET wanted = 2, quorum = 2 WHERE job_id = $1 AND idx = $2").bind(&job_id).bind(idx).execute(&mut *tx).await?;
        }
        let job = sqlx::query("SELECT * FROM jobs WHERE id = $1").bind(&job_id).fetch_one(&mut *tx).await?;
        let lease_id = random_id('l', 12);
        let deadline = now + job.try_get::<i64, _>("timeout_ms")? + LEASE_GRACE_MS;
        let expires = (now + self.config.lease_ttl_ms).min(deadline);
        sqlx::query(
            "INSERT INTO leases (id, job_id, idx, provider, state, expires_at_ms, created_at_ms, deadline_ms, ask_per_billion_fuel, ask_per_gpu_second, ask_per_wall_second, metered, trusted)
             VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&lease_id)
        .bind(&job_id)
        .bind(idx)
        .bind(provider.as_str())
        .bind(expires)
        .bind(now)
        .bind(deadline)
        .bind(info.ask.per_billion_fuel as i64)
        .bind(info.ask.per_gpu_second as i64)
        .bind(info.ask.per_wall_second as i64)
        .bind(!browser as i64)
        .bind(!untrusted as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(LeaseGrant {
            lease_id,
            job_id,
            unit: idx as u32,
            package: job.try_get("package")?,
            version: job.try_get("version")?,
            digest: job.try_get("digest")?,
            input_digest: unit.try_get("input_digest")?,
            limits: unit_limits_of(&job)?,
            expires_at_ms: expires,
        }))
    }

    /// Take a provider's signed result for a lease it holds, decide the
    /// unit when enough replicas agree, and settle: one commit. Should the
    /// settlement fail, the result is taken without it (the sweeper settles
    /// the job, setting it aside while it keeps failing).
    pub async fn submit_result(&self, provider: &KeyId, lease_id: &str, report: ResultReport, now: i64) -> Result<(), ApiError> {
        let signed = ResultReport::signed_bytes(lease_id, report.outcome, report.output_digest.as_deref(), report.fuel_used, report.gpu_time_us);
        provider.verify(&signed, &report.signature).map_err(|e| ApiError::Unauthenticated(format!("result signature: {e}")))?;
        let output = match (report.outcome, &report.output_base64) {
            (RunOutcome::Ok, Some(text)) => {
                let bytes = b64(text, "output")?;
                check_unit_bytes("the output", bytes.len())?;
                let digest = agora_wire::digest_hex(&bytes);
                if report.output_digest.as_deref() != Some(&digest) {
                    return Err(ApiError::Invalid("the output does not match its signed digest".into()));
                }
                Some((digest, bytes))
            }
            (RunOutcome::Ok, None) => return Err(ApiError::Invalid("an ok result carries its output".into())),
            _ => None,
        };
        // A canary's lease is judged against its known answer, and that is all.
        if self.answer_canary(provider, lease_id, &report, output.as_ref().map(|(d, _)| d.as_str()), now).await?.is_some() {
            return Ok(());
        }
        let output = output.as_ref().map(|(d, b)| (d.as_str(), b.as_slice()));
        if let Err(e) = self.take_result(provider, lease_id, &report, output, now, true).await? {
            tracing::warn!(lease = lease_id, "settling with this result failed; the result is taken alone and the sweeper settles its job: {e}");
            self.take_result(provider, lease_id, &report, output, now, false).await??;
        }
        Ok(())
    }

    /// [`Jobs::submit_result`]'s transaction, settling the job in it when
    /// `settle`. `Ok(Err(e))`: the settlement failed and nothing was
    /// committed; `Err(e)`: the result is refused.
    async fn take_result(
        &self,
        provider: &KeyId,
        lease_id: &str,
        report: &ResultReport,
        output: Option<(&str, &[u8])>,
        now: i64,
        settle: bool,
    ) -> Result<Result<(), ApiError>, ApiError> {
        let mut tx = self.db.write().await?;
        let lease = sqlx::query("SELECT l.*, j.unit_cap AS unit_cap, j.checked_by_verify AS checked FROM leases l JOIN jobs j ON j.id = l.job_id WHERE l.id = $1")
            .bind(lease_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no lease `{lease_id}`")))?;
        if lease.try_get::<String, _>("provider")? != provider.as_str() {
            return Err(ApiError::Forbidden("this lease belongs to another provider".into()));
        }
        if lease.try_get::<String, _>("state")? != "active" || lease.try_get::<i64, _>("expires_at_ms")? <= now {
            return Err(ApiError::NotPending(format!("lease {lease_id} (expired or already answered)")));
        }
        let (job_id, idx): (String, i64) = (lease.try_get("job_id")?, lease.try_get("idx")?);
        settle::lock_job(&mut tx, self.db.kind, &job_id).await?;
        let checked = lease.try_get::<i64, _>("checked")? == 1;
        // What the lease costs is decided with its unit, from the usage
        // the accepted replicas agree on (see `agreed_usage`), not here.
        // What became of this result: the lease's state, and why a unit
        // attempt failed. An output of a job checked by `verify` waits for
        // the market's verifiers (`verifying`), after this request.
        let (state, failure) = match output {
            None => ("failed", Some(format!("{}: {}", report.outcome, report.message.clone().unwrap_or_default()))),
            Some((digest, bytes)) => {
                sqlx::query("INSERT INTO blobs (digest, bytes) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING")
                    .bind(digest)
                    .bind(bytes.to_vec())
                    .execute(&mut *tx)
                    .await?;
                (if checked { "verifying" } else { "submitted" }, None)
            }
        };
        let answered = sqlx::query(
            "UPDATE leases SET state = $1, outcome = $2, message = $3, output_digest = $4, fuel_used = $5, gpu_time_us = $6, peak_memory_bytes = $7, signature = $8,
                answered_at_ms = $10, wall_ms = $10 - created_at_ms, limit_kind = $11 WHERE id = $9 AND state = 'active' AND expires_at_ms > $10",
        )
        .bind(state)
        .bind(report.outcome.as_str())
        .bind(failure.clone().or(report.message.clone()).map(|m| m.chars().take(2000).collect::<String>()))
        .bind(output.map(|(d, _)| d))
        .bind(report.fuel_used.min(i64::MAX as u64) as i64)
        .bind(report.gpu_time_us.min(i64::MAX as u64) as i64)
        .bind(report.peak_memory_bytes.min(i64::MAX as u64) as i64)
        .bind(&report.signature)
        .bind(lease_id)
        .bind(now)
        .bind(report.limit.map(limit_text))
        .execute(&mut *tx)
        .await?;
        // Swept, cancelled or answered by a concurrent duplicate since it was read.
        if answered.rows_affected() != 1 {
            return Err(ApiError::NotPending(format!("lease {lease_id} (expired or already answered)")));
        }
        let mut marks = Vec::new();
        match failure {
            Some(message) => self.count_failure(&mut tx, &job_id, idx, &message).await?,
            None if checked => Self::queue_verification(&mut tx, lease_id, &job_id, now).await?,
            None => marks.extend(decide_unit(&mut tx, &job_id, idx, checked, self.db.kind, self.config.spot_check_rate).await?),
        }
        Self::mark_all(&mut tx, marks).await?;
        Self::record_live_in(&mut tx, provider, lease_id, None, &report.logs, now).await?;
        if settle && let Err(e) = self.settle_in(&mut tx, &job_id, now).await {
            return Ok(Err(e));
        }
        tx.commit().await?;
        if checked && output.is_some() {
            self.verify_wake.notify_one();
        }
        Ok(Ok(()))
    }

    /// A failed attempt of unit (`job`, `idx`): counted, and the unit fails
    /// for good after [`MAX_UNIT_FAILURES`] of them only when a provider
    /// trusted at its grant failed it too, so fresh keys reporting errors
    /// cannot fail a buyer's work. Nobody is marked yet: the unit's
    /// outcome decides whether the failure was the job's doing (see
    /// `decide_unit`). When it fails for good, the failure was the job's
    /// own, and its failed runs are billed like any work.
    async fn count_failure(&self, tx: &mut sqlx::Transaction<'static, sqlx::Any>, job: &str, idx: i64, message: &str) -> Result<(), ApiError> {
        sqlx::query("UPDATE units SET failures = failures + 1, message = $1 WHERE job_id = $2 AND idx = $3")
            .bind(message.chars().take(2000).collect::<String>())
            .bind(job)
            .bind(idx)
            .execute(&mut **tx)
            .await?;
        let failed = sqlx::query(
            "UPDATE units SET state = 'failed' WHERE job_id = $1 AND idx = $2 AND state = 'queued' AND failures >= $3
               AND EXISTS (SELECT 1 FROM leases l WHERE l.job_id = $1 AND l.idx = $2 AND l.state = 'failed' AND l.trusted = 1 AND l.outcome <> 'ok')",
        )
        .bind(job)
        .bind(idx)
        .bind(MAX_UNIT_FAILURES)
        .execute(&mut **tx)
        .await?;
        if failed.rows_affected() == 1 {
            decide::bill_failed_attempts(tx, job, idx).await?;
        }
        Ok(())
    }

}

/// The next unit a provider may lease: binds `now`, has-GPU (0/1), the
/// provider's fuel and GPU asks, its id, browser (0/1), its wall ask and
/// untrusted (0/1): the most the unit can cost at those asks fits the
/// unit's cap, and an untrusted provider is only ever a unit's first
/// replica: it never joins a unit another provider holds or has answered,
/// so every confirming, tie-breaking and spot-checking replica is a
/// trusted provider's (two fresh keys cannot collect both replicas, nor
/// ride along with a colluding trusted key's check). On PostgreSQL the row is locked, and rows
/// other replicas hold are skipped.
pub fn lease_candidate_sql(kind: Kind) -> String {
    let lock = if kind == Kind::Postgres { "FOR UPDATE OF u SKIP LOCKED" } else { "" };
    format!(
        "SELECT u.job_id AS job_id, u.idx AS idx, u.wanted AS wanted, u.input_digest AS input_digest, j.checked_by_verify AS checked FROM units u JOIN jobs j ON j.id = u.job_id
         WHERE u.state = 'queued' AND j.state = 'running' AND j.expires_at_ms > $1 AND (j.needs_gpu = 0 OR $2 = 1)
           AND ($3 * j.fuel_limit) / 1000000000 + ($4 * j.timeout_ms) / 1000 + ($7 * j.timeout_ms) / 1000 <= j.unit_cap
           AND (SELECT COUNT(*) FROM leases l WHERE l.job_id = u.job_id AND l.idx = u.idx AND l.state IN ('active', 'submitted', 'verifying', 'accepted')) < u.wanted
           AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.job_id = u.job_id AND l.idx = u.idx AND l.provider = $5)
           AND ($6 = 0 OR EXISTS (SELECT 1 FROM browser_bundles b WHERE b.component_digest = j.digest))
           AND ($8 = 0 OR j.checked_by_verify = 1 OR NOT EXISTS (SELECT 1 FROM leases l WHERE l.job_id = u.job_id AND l.idx = u.idx AND l.state IN ('active', 'submitted', 'verifying')))
         ORDER BY u.queued_at_ms, u.job_id, u.idx LIMIT 1 {lock}"
    )
}

/// Move `provider`'s reputation by `mark`, through `db` (the pool or a
/// transaction).
async fn mark_provider<'e>(db: impl sqlx::Executor<'e, Database = sqlx::Any>, provider: &str, mark: Mark) -> Result<(), ApiError> {
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
