//! Canary units: known-answer work the market mixes into an untrusted
//! provider's first leases, to measure its honesty cheaply.
//!
//! Design choices:
//! - The operator adds a canary (`POST /api/v1/operator/canaries`): a
//!   published package version, an input and its one exact answer. Canaries
//!   are judged by the output digest, so an operator picks inputs every
//!   honest implementation computes bit for bit (a float matmul is not one:
//!   its rounding differs between GPUs).
//! - A provider not yet trusted gets up to [`CANARIES_PER_PROVIDER`]
//!   canaries among its leases, each one it has not run, drawn at random
//!   from the operator's set and mixed at random among buyers' units
//!   (`JobsConfig::canary_chance`). The grant is shaped like any other
//!   (lease and job ids from the same generators, a small unit index, the
//!   same lease lifetime and renewal, counted as running in the market's
//!   figures), and job lookups answer a stranger the same for a canary as
//!   for a buyer's job, so a provider cannot tell a canary apart.
//! - A right answer is a confirmation (it builds trust), a wrong one (or an
//!   error on work known to succeed) a mismatch, with the same weights as
//!   replicated work. Canaries are not paid: no buyer's escrow is involved.
//! - Vouching: the operator's own hosts are trusted from the start
//!   (`vouch`), which is how a new market gets its first trusted providers.

use super::{Jobs, Mark, check_runs, random_id};
use crate::error::ApiError;
use agora_wire::KeyId;
use agora_wire::api::{AddCanary, CanaryInfo, LeaseGrant, ResultReport, RunOutcome, UnitLimits};
use sqlx::Row;

/// Canaries a provider runs while it is not yet trusted.
pub const CANARIES_PER_PROVIDER: i64 = 2;
/// A canary's grant names a unit index below this, like a small job's.
const CANARY_UNIT_SPREAD: u32 = 8;

impl Jobs {
    /// Store a canary of a published version (the caller is the operator).
    pub async fn add_canary(&self, request: AddCanary, now: i64) -> Result<CanaryInfo, ApiError> {
        let info = self.registry.info(&request.package).await?;
        let version = info
            .versions
            .iter()
            .find(|v| v.version == request.version)
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "no version {} of {}",
                    request.version, request.package
                ))
            })?;
        let input = super::b64(&request.input_base64, "input")?;
        let expected = super::b64(&request.expected_output_base64, "expected output")?;
        agora_wire::limits::check_unit_bytes("the input", input.len())?;
        agora_wire::limits::check_unit_bytes("the expected output", expected.len())?;
        agora_wire::limits::check_unit_limits(&request.limits)?;
        let UnitLimits {
            fuel,
            memory_bytes,
            timeout_ms,
            gpu,
        } = request.limits;
        let needs_gpu = gpu
            || version.imports.iter().any(|i| {
                i.starts_with("agora:compute/gpu") || i.starts_with("agora:compute/kernels")
            });
        let (input_digest, output_digest) = (
            agora_wire::digest_hex(&input),
            agora_wire::digest_hex(&expected),
        );
        let blobs = [
            (input_digest.clone(), input.into()),
            (output_digest.clone(), expected.into()),
        ];
        let mut staged = crate::blobs::Staged::write(&self.db, blobs).await?;
        let mut tx = self.db.write().await?;
        // The same canary twice is one canary.
        if let Some(row) = sqlx::query("SELECT id FROM canaries WHERE digest = $1 AND input_digest = $2 AND output_digest = $3")
            .bind(&version.digest)
            .bind(&input_digest)
            .bind(&output_digest)
            .fetch_optional(&mut *tx)
            .await?
        {
            let id = row.try_get("id")?;
            return Ok(CanaryInfo { id, package: request.package, version: version.version.clone(), input_digest, output_digest });
        }
        let id = random_id('c', 9);
        staged.record(&mut tx, crate::blobs::Pin::Kept).await?;
        sqlx::query(
            "INSERT INTO canaries (id, package, version, digest, input_digest, output_digest, fuel_limit, memory_limit, timeout_ms, needs_gpu, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&id)
        .bind(&request.package)
        .bind(&version.version)
        .bind(&version.digest)
        .bind(&input_digest)
        .bind(&output_digest)
        .bind(fuel as i64)
        .bind(memory_bytes as i64)
        .bind(timeout_ms as i64)
        .bind(needs_gpu as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        staged.settle().await;
        Ok(CanaryInfo {
            id,
            package: request.package,
            version: version.version.clone(),
            input_digest,
            output_digest,
        })
    }

    /// Vouch for `provider` (the caller is the operator).
    pub async fn vouch(&self, provider: &str, now: i64) -> Result<(), ApiError> {
        sqlx::query("INSERT INTO vouched (id, at_ms) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
            .bind(provider)
            .bind(now)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// A canary for an untrusted provider, if one is due: it has run fewer
    /// than [`CANARIES_PER_PROVIDER`], and one fits it that it has not run.
    pub(super) async fn lease_canary(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        provider: &KeyId,
        has_gpu: bool,
        browser: bool,
        now: i64,
    ) -> Result<Option<LeaseGrant>, ApiError> {
        // The provider's own filter applies as to a buyer's unit: a
        // canary it would never be leased otherwise would give it away.
        let accepted = super::requirements::accepted_by_sql("c", "$3");
        let Some(canary) = sqlx::query(&format!(
            "SELECT c.* FROM canaries c
             WHERE (c.needs_gpu = 0 OR $1 = 1)
               AND ($2 = 0 OR EXISTS (SELECT 1 FROM browser_bundles b WHERE b.component_digest = c.digest))
               AND NOT EXISTS (SELECT 1 FROM canary_runs r WHERE r.canary_id = c.id AND r.provider = $3)
               AND (SELECT COUNT(*) FROM canary_runs r WHERE r.provider = $3) < $4{accepted}
             ORDER BY RANDOM() LIMIT 1"
        ))
        .bind(has_gpu as i64)
        .bind(browser as i64)
        .bind(provider.as_str())
        .bind(CANARIES_PER_PROVIDER)
        .fetch_optional(&mut **tx)
        .await?
        else {
            return Ok(None);
        };
        let (lease_id, job_id) = (random_id('l', 12), random_id('j', 9));
        // The same lifetime as a buyer's lease: renewed by heartbeats that
        // name it, never past its deadline.
        let deadline = now + canary.try_get::<i64, _>("timeout_ms")? + super::LEASE_GRACE_MS;
        let expires = (now + self.config.lease_ttl_ms).min(deadline);
        sqlx::query(
            "INSERT INTO canary_runs (lease_id, canary_id, job_id, provider, state, expires_at_ms, created_at_ms, deadline_ms)
             VALUES ($1, $2, $3, $4, 'active', $5, $6, $7)",
        )
        .bind(&lease_id)
        .bind(canary.try_get::<String, _>("id")?)
        .bind(&job_id)
        .bind(provider.as_str())
        .bind(expires)
        .bind(now)
        .bind(deadline)
        .execute(&mut **tx)
        .await?;
        Ok(Some(LeaseGrant {
            lease_id,
            job_id,
            // Buyers' jobs have units 0, 1, 2...: a canary is any of the first few.
            unit: (super::rand_unit() * CANARY_UNIT_SPREAD as f64) as u32,
            package: canary.try_get("package")?,
            version: canary.try_get("version")?,
            digest: canary.try_get("digest")?,
            input_digest: canary.try_get("input_digest")?,
            limits: super::unit_limits_of(&canary)?,
            expires_at_ms: expires,
            shared: Vec::new(),
        }))
    }

    /// Judge a result if `lease_id` is a canary's (`None` when it is a
    /// buyer's lease): the answer against the known one, marked on the
    /// provider's record.
    pub(super) async fn answer_canary(
        &self,
        provider: &KeyId,
        lease_id: &str,
        report: &ResultReport,
        output_digest: Option<&str>,
        now: i64,
    ) -> Result<Option<()>, ApiError> {
        // A read first: most results are a buyer's, and they must not wait
        // for the writer here.
        let Some(run) = sqlx::query(
            "SELECT r.provider AS provider, r.state AS state, r.expires_at_ms AS expires_at_ms, r.created_at_ms AS created_at_ms,
                    c.output_digest AS expected, c.timeout_ms AS timeout_ms
             FROM canary_runs r JOIN canaries c ON c.id = r.canary_id WHERE r.lease_id = $1",
        )
        .bind(lease_id)
        .fetch_optional(&self.db.pool)
        .await?
        else {
            return Ok(None);
        };
        check_runs(&run, provider, lease_id, now)?;
        let expected: String = run.try_get("expected")?;
        // The canary is known to succeed: any other answer is a wrong one,
        // a job error included (it cannot be the job's own fault here).
        let mark = match (report.outcome, output_digest) {
            (RunOutcome::Ok, Some(digest)) if digest == expected => Mark::Confirmed,
            (RunOutcome::Ok, _) => Mark::Mismatch,
            (outcome, _) => {
                let ran_ms = now - run.try_get::<i64, _>("created_at_ms")?;
                Mark::of_contradicted_failure(
                    outcome,
                    report.limit,
                    ran_ms,
                    run.try_get("timeout_ms")?,
                )
            }
        };
        let state = if matches!(mark, Mark::Confirmed) {
            "passed"
        } else {
            "failed"
        };
        // One statement decides who answered first.
        let updated = sqlx::query(
            "UPDATE canary_runs SET state = $1 WHERE lease_id = $2 AND state = 'active'",
        )
        .bind(state)
        .bind(lease_id)
        .execute(&self.db.pool)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(ApiError::NotPending(format!(
                "lease {lease_id} (already answered)"
            )));
        }
        tracing::info!(provider = %provider, lease = lease_id, state, "canary answered");
        self.mark(provider.as_str(), mark).await?;
        Ok(Some(()))
    }
}
