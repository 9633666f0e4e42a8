//! Submitting a job: checked against the market's limits, its inputs
//! stored, its units queued and its cap held in escrow, all in one
//! transaction. A unit's input is inline (base64 in the request) or a blob
//! the buyer uploaded, named by digest; a job's shared inputs are uploaded
//! blobs every unit reads by name. A job names only blobs its buyer holds:
//! a digest someone else uploaded is refused like one nobody has. A job's
//! deadline is its buyer's (at most `MAX_JOB_DEADLINE_MS`), and a job whose
//! GPU requirements no online provider meets is refused, saying why. Its
//! bid sets its units' priority: the highest bid up to its own that its
//! cap pays at the median trusted ask, or 0 (`prices::priority_of`).

use super::requirements::{Needs, check_filter, unmet};
use super::*;
use agora_wire::limits::{MAX_BID_PERCENT, MAX_JOB_DEADLINE_MS, MIN_BID_PERCENT};
use std::collections::{BTreeMap, BTreeSet};

/// Most shared inputs one job names (each a blob every unit may read).
pub const MAX_SHARED_INPUTS: usize = 16;
/// Longest name of a shared input.
pub const MAX_SHARED_NAME_CHARS: usize = 64;

/// A shared input's name: 1 to [`MAX_SHARED_NAME_CHARS`] of `a-z 0-9 _ - .`.
fn check_shared_name(name: &str) -> Result<(), ApiError> {
    let fine =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.');
    if name.is_empty() || name.chars().count() > MAX_SHARED_NAME_CHARS || !name.chars().all(fine) {
        return Err(ApiError::Invalid(format!(
            "a shared input's name is 1 to {MAX_SHARED_NAME_CHARS} of a-z, 0-9, '_', '-', '.': `{name}`"
        )));
    }
    Ok(())
}

/// What a job's submit decided beside the request: the most one run of a
/// unit is paid, and whom its units may go to.
pub(super) struct JobTerms {
    unit_cap: u64,
    /// The buyer's bid, and the priority it earned (`prices::priority_of`).
    bid_percent: u32,
    priority: u32,
    /// The buyer's retry policy, every field filled (`check_retry`).
    retry: RetryFilled,
    /// Whether its units need a GPU: the buyer says so, names GPU
    /// requirements, or the component imports the GPU interfaces.
    needs_gpu: bool,
    needs: Option<Needs>,
    filter: agora_wire::api::ProviderFilter,
}

impl JobTerms {
    /// Whether the job narrows who may run it (a GPU, GPU requirements, an
    /// allow or deny list, a minimum reputation): leasing finds its units
    /// job by job (`lease::gated_jobs_sql`), not in the queue's walk, so the
    /// providers it shuts out read its conditions once, never its units.
    fn gated(&self) -> bool {
        self.needs_gpu
            || self.needs.is_some()
            || !self.filter.allow.is_empty()
            || !self.filter.deny.is_empty()
            || self.filter.min_reputation.is_some_and(|r| r > 0.0)
    }
}

/// A retry policy with its defaults filled in.
pub(super) struct RetryFilled {
    max_attempts: u32,
    retry_own_failures: bool,
    backoff_ms: u64,
}

/// A buyer's retry policy within its bounds, defaults filled.
fn check_retry(r: &agora_wire::api::RetryPolicy) -> Result<RetryFilled, ApiError> {
    use agora_wire::limits::{MAX_RETRY_BACKOFF_MS, MAX_UNIT_ATTEMPTS};
    let max_attempts = r.max_attempts.unwrap_or(MAX_UNIT_FAILURES as u32);
    if !(1..=MAX_UNIT_ATTEMPTS).contains(&max_attempts) {
        return Err(ApiError::Invalid(format!(
            "retry.max_attempts is 1 to {MAX_UNIT_ATTEMPTS} (MAX_UNIT_ATTEMPTS)"
        )));
    }
    let backoff_ms = r.backoff_ms.unwrap_or(0);
    if backoff_ms > MAX_RETRY_BACKOFF_MS {
        return Err(ApiError::Invalid(format!(
            "retry.backoff_ms is at most {MAX_RETRY_BACKOFF_MS} (MAX_RETRY_BACKOFF_MS, an hour)"
        )));
    }
    Ok(RetryFilled {
        max_attempts,
        retry_own_failures: r.retry_own_failures.unwrap_or(true),
        backoff_ms,
    })
}

/// The blobs a job names by digest: its units' and its shared inputs'.
struct Named<'a> {
    input_digests: &'a [String],
    shared: &'a BTreeMap<String, String>,
}

impl Named<'_> {
    fn digests(&self) -> BTreeSet<&str> {
        self.input_digests
            .iter()
            .chain(self.shared.values())
            .map(String::as_str)
            .collect()
    }

    /// Each named blob held by `buyer`, with its size; a unit's input within
    /// [`MAX_UNIT_BYTES`].
    async fn check_held(
        &self,
        conn: &mut sqlx::AnyConnection,
        buyer: &str,
    ) -> Result<BTreeMap<String, u64>, ApiError> {
        let digests: Vec<&str> = self.digests().into_iter().collect();
        let sizes = crate::uploads::held_sizes(conn, buyer, &digests).await?;
        if let Some(missing) = digests.iter().find(|d| !sizes.contains_key(**d)) {
            return Err(ApiError::NotFound(format!(
                "you hold no blob {missing}: upload it first (agora upload)"
            )));
        }
        for digest in self.input_digests {
            check_unit_bytes("an input", sizes[digest] as usize)?;
        }
        let shared: u64 = self.shared.values().map(|d| sizes[d]).sum();
        agora_wire::limits::check_shared_bytes(shared)?;
        Ok(sizes.into_iter().collect())
    }
}

/// A component that imports the GPU interfaces needs a GPU, whatever the
/// buyer said.
fn imports_gpu(version: &agora_wire::api::VersionInfo) -> bool {
    version
        .imports
        .iter()
        .any(|i| i.starts_with("agora:compute/gpu") || i.starts_with("agora:compute/kernels"))
}

impl Jobs {
    /// Submit a job: check it, store inputs, hold the cap in escrow.
    pub async fn submit(
        &self,
        buyer: &KeyId,
        request: SubmitJob,
        now: i64,
    ) -> Result<JobInfo, ApiError> {
        let units = request.inputs_base64.len() + request.input_digests.len();
        if units == 0 || units > MAX_UNITS {
            return Err(ApiError::Invalid(format!(
                "a job has 1 to {MAX_UNITS} inputs"
            )));
        }
        if request.replicas == 0 || request.replicas > MAX_REPLICAS {
            return Err(ApiError::Invalid(format!(
                "replicas is 1 to {MAX_REPLICAS}"
            )));
        }
        check_unit_limits(&request.limits)?;
        ledger::check_amount("max_price", request.max_price)?;
        if request.shared.len() > MAX_SHARED_INPUTS {
            return Err(ApiError::Invalid(format!(
                "a job names at most {MAX_SHARED_INPUTS} shared inputs"
            )));
        }
        request
            .shared
            .keys()
            .try_for_each(|name| check_shared_name(name))?;
        let needs = (!request.requirements.is_empty())
            .then(|| Needs::of(&request.requirements))
            .transpose()?;
        let filter = check_filter(&request.providers)?;
        let retry = check_retry(&request.retry)?;
        let bid_percent = request.bid_percent.unwrap_or(MIN_BID_PERCENT);
        if !(MIN_BID_PERCENT..=MAX_BID_PERCENT).contains(&bid_percent) {
            return Err(ApiError::Invalid(format!(
                "bid_percent is {MIN_BID_PERCENT} (the provider's ask) to {MAX_BID_PERCENT} (MAX_BID_PERCENT)"
            )));
        }
        let deadline_ms = request.deadline_ms.unwrap_or(self.config.job_ttl_ms as u64);
        if deadline_ms == 0 || deadline_ms > MAX_JOB_DEADLINE_MS {
            return Err(ApiError::Invalid(format!(
                "deadline_ms is 1 to {MAX_JOB_DEADLINE_MS} (MAX_JOB_DEADLINE_MS, a week)"
            )));
        }
        if let Some(needs) = &needs
            && let Some(why) = unmet(needs, &self.online_gpus(&filter, now).await?)
        {
            return Err(ApiError::Unsatisfiable(why));
        }
        let info = self.registry.info(&request.package).await?;
        let version = match &request.version {
            Some(v) => info
                .versions
                .iter()
                .find(|x| &x.version == v)
                .ok_or_else(|| {
                    ApiError::NotFound(format!("no version {v} of {}", request.package))
                })?,
            None => {
                let latest = info.summary.latest.clone().ok_or_else(|| {
                    ApiError::NotFound(format!("{} has no published version", request.package))
                })?;
                info.versions
                    .iter()
                    .find(|x| x.version == latest)
                    .expect("latest is listed")
            }
        };
        if version.yanked {
            return Err(ApiError::Invalid(format!(
                "{} {} is yanked",
                request.package, version.version
            )));
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
            inputs.push(axum::body::Bytes::from(bytes));
        }
        // Before any input is written to the object store: a buyer who
        // cannot pay stores nothing (the hold in the transaction is the
        // check that counts; this one keeps a rolled-back submit from
        // leaving objects behind, save for concurrent submits racing one
        // balance).
        let available = self
            .ledger
            .balance(buyer.as_str())
            .await?
            .map_or(0, |b| b.available);
        if available < request.max_price {
            return Err(ApiError::InsufficientFunds {
                account: buyer.to_string(),
                available,
                requested: request.max_price,
            });
        }
        // A first look, for a clear answer before anything is written; the
        // transaction checks again under the blobs' locks.
        let named = Named {
            input_digests: &request.input_digests,
            shared: &request.shared,
        };
        named
            .check_held(&mut *self.db.pool.acquire().await?, buyer.as_str())
            .await?;
        let id = random_id('j', 9);
        let expires = now + deadline_ms as i64;
        let needs_gpu = request.limits.gpu || needs.is_some() || imports_gpu(version);
        let priority = self
            .priority(bid_percent, unit_cap, &request.limits, needs_gpu, now)
            .await?;
        let terms = JobTerms {
            unit_cap,
            bid_percent,
            priority,
            retry,
            needs_gpu,
            needs,
            filter,
        };
        self.insert_job(&id, buyer, &request, version, &terms, &inputs, now, expires)
            .await?;
        self.info(&id).await
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn insert_job(
        &self,
        id: &str,
        buyer: &KeyId,
        r: &SubmitJob,
        version: &agora_wire::api::VersionInfo,
        terms: &JobTerms,
        inputs: &[axum::body::Bytes],
        now: i64,
        expires: i64,
    ) -> Result<(), ApiError> {
        let checked = self.verifier.is_some() && version.exports.iter().any(|e| e == "verify");
        let mut digests: Vec<String> = inputs
            .iter()
            .map(|bytes| agora_wire::digest_hex(bytes))
            .collect();
        digests.extend(r.input_digests.iter().cloned());
        let named = Named {
            input_digests: &r.input_digests,
            shared: &r.shared,
        };
        let referenced: Vec<String> = named.digests().into_iter().map(str::to_string).collect();
        // The inputs' bytes first, outside the transaction.
        let mut staged = crate::blobs::Staged::write(
            &self.db,
            digests.iter().cloned().zip(inputs.iter().cloned()),
        )
        .await?;
        let mut tx = self.db.write().await?;
        sqlx::query(
            "INSERT INTO jobs (id, buyer, package, version, digest, fuel_limit, memory_limit, timeout_ms, needs_gpu, max_price, unit_cap, replicas, state, created_at_ms, expires_at_ms, checked_by_verify, bid_percent, priority, max_attempts, retry_own_failures, backoff_ms, gated)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'running', $13, $14, $15, $16, $17, $18, $19, $20, $21)",
        )
        .bind(id)
        .bind(buyer.as_str())
        .bind(&r.package)
        .bind(&version.version)
        .bind(&version.digest)
        .bind(r.limits.fuel as i64)
        .bind(r.limits.memory_bytes as i64)
        .bind(r.limits.timeout_ms as i64)
        .bind(terms.needs_gpu as i64)
        .bind(r.max_price as i64)
        .bind(terms.unit_cap as i64)
        .bind(r.replicas as i64)
        .bind(now)
        .bind(expires)
        .bind(checked as i64)
        .bind(terms.bid_percent as i64)
        .bind(terms.priority as i64)
        .bind(terms.retry.max_attempts as i64)
        .bind(terms.retry.retry_own_failures as i64)
        .bind(terms.retry.backoff_ms.min(i64::MAX as u64) as i64)
        .bind(terms.gated() as i64)
        .execute(&mut *tx)
        .await?;
        self.record_terms(&mut tx, id, terms.needs.as_ref(), &terms.filter)
            .await?;
        // Checked by `verify`, every replica must pass; compared by digest,
        // a majority must agree.
        let quorum = if checked || r.replicas <= 2 {
            r.replicas
        } else {
            r.replicas / 2 + 1
        } as i64;
        // The named blobs' rows are locked (in one order with the staged
        // ones): a holder letting one go meanwhile either went first, and
        // the check below refuses the job, or waits, and its collection
        // sees this job naming the blob.
        staged
            .record_locking(&mut tx, crate::blobs::Pin::Job, &referenced)
            .await?;
        let sizes = named.check_held(&mut *tx, buyer.as_str()).await?;
        for (name, digest) in &r.shared {
            sqlx::query(
                "INSERT INTO job_shared (job_id, name, digest, size) VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(name)
            .bind(digest)
            .bind(sizes[digest] as i64)
            .execute(&mut *tx)
            .await?;
        }
        for (i, digest) in digests.iter().enumerate() {
            sqlx::query("INSERT INTO units (job_id, idx, input_digest, state, wanted, quorum, queued_at_ms, priority, gated) VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8)")
                .bind(id)
                .bind(i as i64)
                .bind(digest)
                .bind(r.replicas as i64)
                .bind(quorum)
                .bind(now)
                .bind(terms.priority as i64)
                .bind(terms.gated() as i64)
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
            timeout_ms: (expires - now + HOLD_OUTLIVES_JOB_MS) as u64,
        };
        self.ledger
            .execute_in(&mut tx, &hold_id(id), &hold, now)
            .await?;
        tx.commit().await?;
        staged.settle().await;
        Ok(())
    }
}
