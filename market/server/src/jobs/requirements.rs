//! What a job asks of the providers that run it, and what providers offer
//! and take: GPU requirements (memory, backend, device type, CUDA compute
//! capability, all met by one device), a buyer's provider filter (minimum
//! reputation, allow and deny lists), the devices each provider registered
//! (`provider_gpus`), the work each provider takes (its `WorkFilter`:
//! packages, publishers, unit size, CPU or GPU units), and the lease
//! query's parts that honour them.
//!
//! Design choices:
//! - Leasing decides in SQL ([`LEASE_FILTER_SQL`]), on columns of the job
//!   and rows of the provider's devices, so a unit a provider cannot run is
//!   skipped where the queue is read, never leased and handed back.
//! - A job with GPU requirements that no online provider meets is refused
//!   at submit, saying which requirement nobody meets ([`unmet`]); a job
//!   asking only for "a GPU" waits for one as before (a market's providers
//!   come and go, and a queue is where work waits for them).
//! - A buyer's filter never shuts out the hosts the operator vouches for:
//!   they are the market's referee (a unit fails for good, and failed runs
//!   are billed, only on a vouched host's word; a unit failed three times
//!   goes to them alone), so a filter that excluded them would leave a
//!   job's failures unbilled and its fresh providers unconfirmable. A deny
//!   list is no wall against anyone else either: keys are free.
//! - A provider's filter applies to canaries as to buyers' units
//!   ([`accepted_by_sql`] on either): a unit it would never be leased
//!   otherwise would give a canary away. A vouched host's filter limits
//!   only the size of its units (it is the referee for every package); a
//!   provider with an allow list is only ever a unit's first replica.
//! - Providers' devices are their claims, checked for plausibility at
//!   registration (`agora_wire::limits::check_capabilities`); a provider
//!   that claims a card it lacks fails the units it leases and is marked.
//!   A measured speed (GFLOPS, the host's benchmark) is rated by
//!   `speed.rs`: anchored by the operator's hosts of its class.

use super::*;
use agora_wire::api::{GpuDevice, GpuRequirements, ProviderFilter, WorkFilter};
use agora_wire::limits::{
    GPU_BACKENDS, GPU_DEVICE_TYPES, MAX_GPU_GFLOPS, MAX_JOB_PROVIDER_LIST,
    MAX_PROVIDER_FILTER_LIST, compute_capability_value,
};
use std::collections::{BTreeMap, BTreeSet};

/// The lease query's conditions for job `j` and provider `$5`: one of the
/// provider's devices meets the job's requirements; and the provider is a
/// host the operator vouches for, or its reputation is at least the job's
/// minimum, the job does not deny it and, when the job has an allow list,
/// names it.
pub(super) const LEASE_FILTER_SQL: &str = "
           AND (j.has_requirements = 0 OR EXISTS (SELECT 1 FROM provider_gpus g WHERE g.provider = $5
                AND g.memory_bytes >= j.req_gpu_memory AND g.compute >= j.req_compute AND g.gflops >= j.req_gflops
                AND (j.req_backend IS NULL OR g.backend = j.req_backend)
                AND (j.req_device_type IS NULL OR g.device_type = j.req_device_type)))
           AND (EXISTS (SELECT 1 FROM vouched v WHERE v.id = $5) OR (
                (j.min_reputation <= 0 OR j.min_reputation <= (SELECT (p.good + 1.0) / (p.good + p.bad + 2.0) FROM providers p WHERE p.id = $5))
                AND NOT EXISTS (SELECT 1 FROM job_providers f WHERE f.job_id = j.id AND f.provider = $5 AND f.allow = 0)
                AND (j.allow_listed = 0 OR EXISTS (SELECT 1 FROM job_providers f WHERE f.job_id = j.id AND f.provider = $5 AND f.allow = 1))))";

/// The lease query's conditions that provider `provider` (a bind, `$5`)
/// takes the work of `t` (the alias of a `jobs` or `canaries` row: both
/// have `package`, `version`, `timeout_ms`, `memory_limit`, `needs_gpu`):
/// its unit size always; and, unless the operator vouches for the provider
/// (the market's referee takes any work it can run), its deny lists, its
/// kind of units, and its allow lists when it has any (a unit must then be
/// of an allowed package or publisher). A version's publisher is the key
/// that released it (its package's owner for versions of earlier markets).
pub(super) fn accepted_by_sql(t: &str, provider: &str) -> String {
    let publisher = format!(
        "COALESCE((SELECT v.publisher FROM versions v WHERE v.name = {t}.package AND v.version = {t}.version),
                  (SELECT pk.owner FROM packages pk WHERE pk.name = {t}.package))"
    );
    let listed = |allow: u8| {
        format!(
            "(EXISTS (SELECT 1 FROM provider_accepts a WHERE a.provider = {provider} AND a.kind = 'package' AND a.name = {t}.package AND a.allow = {allow})
              OR EXISTS (SELECT 1 FROM provider_accepts a WHERE a.provider = {provider} AND a.kind = 'publisher' AND a.name = {publisher} AND a.allow = {allow}))"
        )
    };
    let (denied, allowed) = (listed(0), listed(1));
    format!(
        "
           AND NOT EXISTS (SELECT 1 FROM providers pa WHERE pa.id = {provider} AND (
                (pa.accept_max_timeout_ms > 0 AND {t}.timeout_ms > pa.accept_max_timeout_ms)
                OR (pa.accept_max_memory_bytes > 0 AND {t}.memory_limit > pa.accept_max_memory_bytes)))
           AND (EXISTS (SELECT 1 FROM vouched vv WHERE vv.id = {provider}) OR (
                NOT EXISTS (SELECT 1 FROM providers pa WHERE pa.id = {provider} AND (
                    (pa.accept_units = 'cpu-only' AND {t}.needs_gpu = 1)
                    OR (pa.accept_units = 'gpu-only' AND {t}.needs_gpu = 0)))
                AND NOT {denied}
                AND (NOT EXISTS (SELECT 1 FROM provider_accepts a WHERE a.provider = {provider} AND a.allow = 1) OR {allowed})))"
    )
}

/// The lease query's condition that a provider with an allow list (not a
/// vouched host) is only ever a unit's first replica: an allow list
/// reaches straight for one package's units past the queue, so a ring
/// could aim it at the replicas that check its partners' results.
pub(super) const ALLOW_LISTED_FIRST_ONLY_SQL: &str = "
           AND (EXISTS (SELECT 1 FROM vouched vv WHERE vv.id = $5)
                OR NOT EXISTS (SELECT 1 FROM provider_accepts a WHERE a.provider = $5 AND a.allow = 1)
                OR NOT EXISTS (SELECT 1 FROM leases l WHERE l.job_id = u.job_id AND l.idx = u.idx AND l.state IN ('active', 'submitted', 'verifying')))";

/// Check a provider's work filter: each list at most
/// `MAX_PROVIDER_FILTER_LIST` long, package names as the registry takes
/// them, publishers keys (returned in the form owners are stored under),
/// no name both allowed and denied, no zero limit.
pub(super) fn check_work_filter(f: &WorkFilter) -> Result<WorkFilter, ApiError> {
    let lists = [
        ("packages", &f.packages),
        ("deny_packages", &f.deny_packages),
        ("publishers", &f.publishers),
        ("deny_publishers", &f.deny_publishers),
    ];
    if let Some((what, _)) = lists
        .iter()
        .find(|(_, l)| l.len() > MAX_PROVIDER_FILTER_LIST)
    {
        return Err(ApiError::Invalid(format!(
            "accepts.{what} names at most {MAX_PROVIDER_FILTER_LIST} (MAX_PROVIDER_FILTER_LIST)"
        )));
    }
    let packages = |what: &str, names: &[String]| -> Result<Vec<String>, ApiError> {
        for name in names {
            crate::registry::check_name(name).map_err(|_| {
                ApiError::Invalid(format!("accepts.{what}: `{name}` is no package name"))
            })?;
        }
        Ok(names.to_vec())
    };
    let keys = |what: &str, keys: &[String]| -> Result<Vec<String>, ApiError> {
        keys.iter()
            .map(|k| {
                KeyId::parse(k)
                    .map(|id| id.as_str().to_string())
                    .map_err(|_| {
                        ApiError::Invalid(format!("accepts.{what}: `{k}` is not a publisher's key"))
                    })
            })
            .collect()
    };
    let checked = WorkFilter {
        packages: packages("packages", &f.packages)?,
        deny_packages: packages("deny_packages", &f.deny_packages)?,
        publishers: keys("publishers", &f.publishers)?,
        deny_publishers: keys("deny_publishers", &f.deny_publishers)?,
        ..f.clone()
    };
    let both = |allow: &[String], deny: &[String]| allow.iter().find(|n| deny.contains(n)).cloned();
    if let Some(name) = both(&checked.packages, &checked.deny_packages)
        .or(both(&checked.publishers, &checked.deny_publishers))
    {
        return Err(ApiError::Invalid(format!(
            "accepts: `{name}` is both allowed and denied"
        )));
    }
    if f.max_timeout_ms == Some(0) || f.max_memory_bytes == Some(0) {
        return Err(ApiError::Invalid(
            "accepts.max_timeout_ms and max_memory_bytes are at least 1 (leave them out for any)"
                .into(),
        ));
    }
    Ok(checked)
}

/// A job's GPU requirements as leasing compares them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Needs {
    pub memory_bytes: u64,
    pub backend: Option<String>,
    pub device_type: Option<String>,
    /// [`compute_capability_value`] of the minimum; 0 for none.
    pub compute: u64,
    /// Measured GFLOPS at least this; 0 for none.
    pub gflops: u32,
}

impl Needs {
    /// Check `r` and read it; an unknown backend or device type, or a
    /// compute capability that is not `major.minor`, is refused.
    pub fn of(r: &GpuRequirements) -> Result<Needs, ApiError> {
        let one_of = |what: &str, value: &Option<String>, known: &[&str]| match value {
            Some(v) if !known.contains(&v.as_str()) => Err(ApiError::Invalid(format!(
                "requirements.{what} is one of {}, not `{v}`",
                known.join(", ")
            ))),
            _ => Ok(value.clone()),
        };
        let compute = match &r.compute_capability {
            None => 0,
            Some(text) => compute_capability_value(text).ok_or_else(|| {
                ApiError::Invalid(format!(
                    "requirements.compute_capability is major.minor (8.6), not `{text}`"
                ))
            })?,
        };
        if let Some(g) = r.min_gflops
            && g > MAX_GPU_GFLOPS
        {
            return Err(ApiError::Invalid(format!(
                "requirements.min_gflops is at most {MAX_GPU_GFLOPS} (MAX_GPU_GFLOPS: no device is honoured past it), not {g}"
            )));
        }
        Ok(Needs {
            gflops: r.min_gflops.unwrap_or(0),
            memory_bytes: r.memory_bytes.unwrap_or(0),
            backend: one_of("backend", &r.backend, GPU_BACKENDS)?,
            device_type: one_of("device_type", &r.device_type, GPU_DEVICE_TYPES)?,
            compute,
        })
    }

    /// Whether `gpu` meets every requirement.
    fn met_by(&self, gpu: &GpuDevice) -> bool {
        self.unmet_by(gpu).is_empty()
    }

    /// The requirements `gpu` does not meet, as a buyer reads them.
    fn unmet_by(&self, gpu: &GpuDevice) -> Vec<String> {
        let mut unmet = Vec::new();
        if gpu.memory_bytes.unwrap_or(0) < self.memory_bytes {
            unmet.push(format!(
                "at least {} of GPU memory",
                human_bytes(self.memory_bytes)
            ));
        }
        if let Some(b) = &self.backend
            && *b != gpu.backend
        {
            unmet.push(format!("the {b} backend"));
        }
        if let Some(t) = &self.device_type
            && *t != gpu.device_type
        {
            unmet.push(format!("a {t} device"));
        }
        let compute = gpu
            .compute_capability
            .as_deref()
            .and_then(compute_capability_value)
            .unwrap_or(0);
        if compute < self.compute {
            unmet.push(format!(
                "CUDA compute capability {}.{} or above",
                self.compute / 100,
                self.compute % 100
            ));
        }
        if gpu.gflops.unwrap_or(0) < self.gflops {
            unmet.push(format!(
                "a measured speed of at least {} GFLOPS",
                self.gflops
            ));
        }
        unmet
    }
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n => format!("{n} bytes"),
    }
}

/// Why no device of `online` meets `needs`, or none when one does: each
/// requirement with how many of the online devices meet it, and what the
/// best of them offers.
pub(super) fn unmet(needs: &Needs, online: &[GpuDevice]) -> Option<String> {
    if online.iter().any(|g| needs.met_by(g)) {
        return None;
    }
    if online.is_empty() {
        return Some("no provider with a GPU is online".into());
    }
    let mut missing: BTreeMap<String, usize> = BTreeMap::new();
    for gpu in online {
        for need in needs.unmet_by(gpu) {
            *missing.entry(need).or_default() += 1;
        }
    }
    let most_memory = online.iter().filter_map(|g| g.memory_bytes).max();
    let fastest = online.iter().filter_map(|g| g.gflops).max();
    let seen: BTreeSet<String> = online
        .iter()
        .map(|g| format!("{} ({}, {})", g.name, g.backend, g.device_type))
        .collect();
    let needs_text: Vec<String> = missing
        .iter()
        .map(|(need, lacking)| format!("{need} ({lacking} of {} lack it)", online.len()))
        .collect();
    Some(format!(
        "no online provider has a GPU with {}; online: {}; the most GPU memory any reports: {}; the fastest measured: {}",
        needs_text.join(" and "),
        seen.into_iter().collect::<Vec<_>>().join(", "),
        most_memory.map_or("none".into(), human_bytes),
        fastest.map_or("none".into(), |g| format!("{g} GFLOPS")),
    ))
}

/// Check a job's provider filter, its keys in the form providers are
/// stored under.
pub(super) fn check_filter(f: &ProviderFilter) -> Result<ProviderFilter, ApiError> {
    if let Some(min) = f.min_reputation
        && !(0.0..=1.0).contains(&min)
    {
        return Err(ApiError::Invalid(format!(
            "providers.min_reputation is 0 to 1, not {min}"
        )));
    }
    let keys = |what: &str, list: &[String]| -> Result<Vec<String>, ApiError> {
        if list.len() > MAX_JOB_PROVIDER_LIST {
            return Err(ApiError::Invalid(format!(
                "providers.{what} names at most {MAX_JOB_PROVIDER_LIST} providers (MAX_JOB_PROVIDER_LIST)"
            )));
        }
        list.iter()
            .map(|k| {
                KeyId::parse(k)
                    .map(|id| id.as_str().to_string())
                    .map_err(|_| {
                        ApiError::Invalid(format!(
                            "providers.{what}: `{k}` is not a provider's key"
                        ))
                    })
            })
            .collect()
    };
    let (allow, deny) = (keys("allow", &f.allow)?, keys("deny", &f.deny)?);
    if let Some(both) = allow.iter().find(|k| deny.contains(k)) {
        return Err(ApiError::Invalid(format!(
            "providers: {both} is both allowed and denied"
        )));
    }
    Ok(ProviderFilter {
        min_reputation: f.min_reputation,
        allow,
        deny,
    })
}

impl Jobs {
    /// The devices of the providers online now that `filter` lets run the
    /// job (as the lease query reads them: `provider_gpus`).
    pub(super) async fn online_gpus(
        &self,
        filter: &ProviderFilter,
        now: i64,
    ) -> Result<Vec<GpuDevice>, ApiError> {
        let rows = sqlx::query(
            "SELECT p.id AS id, p.capabilities AS capabilities, p.good AS good, p.bad AS bad,
                    (SELECT COUNT(*) FROM vouched v WHERE v.id = p.id) AS vouched
             FROM providers p WHERE p.last_heartbeat_ms >= $1 AND EXISTS (SELECT 1 FROM provider_gpus g WHERE g.provider = p.id)",
        )
        .bind(now - self.config.heartbeat_fresh_ms)
        .fetch_all(&self.db.pool)
        .await?;
        let mut gpus = Vec::new();
        for r in rows {
            let id: String = r.try_get("id")?;
            let vouched = r.try_get::<i64, _>("vouched")? > 0;
            let reputation =
                super::reputation::reputation_mean(r.try_get("good")?, r.try_get("bad")?);
            let admitted = filter.min_reputation.is_none_or(|min| reputation >= min)
                && !filter.deny.contains(&id)
                && (filter.allow.is_empty() || filter.allow.contains(&id));
            if !(vouched || admitted) {
                continue;
            }
            let caps: Capabilities =
                serde_json::from_str(&r.try_get::<String, _>("capabilities")?).unwrap_or_default();
            gpus.extend(caps.gpus);
        }
        Ok(gpus)
    }

    /// Record the devices of a provider registered before the market kept
    /// them (`provider_gpus`), from its stored capabilities, once.
    pub(super) async fn backfill_gpus(&self, provider: &KeyId) -> Result<(), ApiError> {
        let missing = sqlx::query(
            "SELECT capabilities FROM providers p WHERE p.id = $1 AND p.has_gpu = 1
               AND NOT EXISTS (SELECT 1 FROM provider_gpus g WHERE g.provider = p.id)",
        )
        .bind(provider.as_str())
        .fetch_optional(&self.db.pool)
        .await?;
        let Some(row) = missing else {
            return Ok(());
        };
        let caps: Capabilities =
            serde_json::from_str(&row.try_get::<String, _>("capabilities")?).unwrap_or_default();
        let mut tx = self.db.write().await?;
        self.record_gpus(&mut tx, provider, &caps.gpus).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replace the work `provider` takes with its registration's filter
    /// (as `check_work_filter` returned it).
    pub(super) async fn record_work_filter(
        &self,
        tx: &mut Tx,
        provider: &KeyId,
        f: &WorkFilter,
    ) -> Result<(), ApiError> {
        sqlx::query("UPDATE providers SET accept_max_timeout_ms = $1, accept_max_memory_bytes = $2, accept_units = $3 WHERE id = $4")
            .bind(f.max_timeout_ms.unwrap_or(0).min(i64::MAX as u64) as i64)
            .bind(f.max_memory_bytes.unwrap_or(0).min(i64::MAX as u64) as i64)
            .bind(f.units.as_str())
            .bind(provider.as_str())
            .execute(&mut **tx)
            .await?;
        sqlx::query("DELETE FROM provider_accepts WHERE provider = $1")
            .bind(provider.as_str())
            .execute(&mut **tx)
            .await?;
        // (Checked by `check_work_filter`: publishers in stored form.)
        let rows: BTreeMap<(&str, &String), bool> = f
            .packages
            .iter()
            .map(|n| (("package", n), true))
            .chain(f.publishers.iter().map(|k| (("publisher", k), true)))
            .chain(f.deny_packages.iter().map(|n| (("package", n), false)))
            .chain(f.deny_publishers.iter().map(|k| (("publisher", k), false)))
            .collect();
        for ((kind, name), allow) in rows {
            sqlx::query("INSERT INTO provider_accepts (provider, kind, name, allow) VALUES ($1, $2, $3, $4)")
                .bind(provider.as_str())
                .bind(kind)
                .bind(name)
                .bind(allow as i64)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Replace the devices `provider` offers with those it registered.
    pub(super) async fn record_gpus(
        &self,
        tx: &mut Tx,
        provider: &KeyId,
        gpus: &[GpuDevice],
    ) -> Result<(), ApiError> {
        sqlx::query("DELETE FROM provider_gpus WHERE provider = $1")
            .bind(provider.as_str())
            .execute(&mut **tx)
            .await?;
        for (i, gpu) in gpus.iter().enumerate() {
            let compute = gpu
                .compute_capability
                .as_deref()
                .and_then(compute_capability_value)
                .unwrap_or(0);
            sqlx::query("INSERT INTO provider_gpus (provider, idx, backend, device_type, memory_bytes, compute, gflops) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                .bind(provider.as_str())
                .bind(i as i64)
                .bind(&gpu.backend)
                .bind(&gpu.device_type)
                .bind(gpu.memory_bytes.unwrap_or(0) as i64)
                .bind(compute as i64)
                .bind(i64::from(gpu.gflops.unwrap_or(0)))
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Record job `id`'s requirements and provider filter, in its submit's
    /// transaction.
    pub(super) async fn record_terms(
        &self,
        tx: &mut Tx,
        id: &str,
        needs: Option<&Needs>,
        filter: &ProviderFilter,
    ) -> Result<(), ApiError> {
        if let Some(n) = needs {
            sqlx::query("UPDATE jobs SET has_requirements = 1, req_gpu_memory = $1, req_backend = $2, req_device_type = $3, req_compute = $4, req_gflops = $6 WHERE id = $5")
                .bind(n.memory_bytes.min(i64::MAX as u64) as i64)
                .bind(&n.backend)
                .bind(&n.device_type)
                .bind(n.compute as i64)
                .bind(id)
                .bind(i64::from(n.gflops))
                .execute(&mut **tx)
                .await?;
        }
        if filter.is_empty() {
            return Ok(());
        }
        sqlx::query("UPDATE jobs SET min_reputation = $1, allow_listed = $2 WHERE id = $3")
            .bind(filter.min_reputation.unwrap_or(0.0))
            .bind(!filter.allow.is_empty() as i64)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        let listed: BTreeMap<&String, bool> = filter
            .allow
            .iter()
            .map(|k| (k, true))
            .chain(filter.deny.iter().map(|k| (k, false)))
            .collect();
        for (provider, allow) in listed {
            sqlx::query("INSERT INTO job_providers (job_id, provider, allow) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(provider)
                .bind(allow as i64)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(backend: &str, device_type: &str, memory: Option<u64>, cc: Option<&str>) -> GpuDevice {
        GpuDevice {
            name: format!("{backend} card"),
            backend: backend.into(),
            device_type: device_type.into(),
            memory_bytes: memory,
            compute_capability: cc.map(str::to_string),
            gflops: None,
        }
    }

    fn needs(r: GpuRequirements) -> Needs {
        Needs::of(&r).unwrap()
    }

    #[test]
    fn one_device_must_meet_every_requirement() {
        let n = needs(GpuRequirements {
            memory_bytes: Some(8 << 30),
            backend: Some("cuda".into()),
            compute_capability: Some("8.0".into()),
            ..Default::default()
        });
        let a100 = gpu("cuda", "discrete-gpu", Some(40 << 30), Some("8.0"));
        let t4 = gpu("cuda", "discrete-gpu", Some(16 << 30), Some("7.5"));
        let llvmpipe = gpu("vulkan", "cpu", None, None);
        assert_eq!(unmet(&n, &[a100.clone(), llvmpipe.clone()]), None);
        let why = unmet(&n, &[t4, llvmpipe.clone()]).expect("nobody meets it");
        assert!(why.contains("compute capability 8.0"), "{why}");
        assert!(why.contains("the cuda backend (1 of 2 lack it)"), "{why}");
        assert!(why.contains("16.0 GiB"), "the best on offer: {why}");
        let only_software = unmet(
            &needs(GpuRequirements {
                memory_bytes: Some(8 << 30),
                ..Default::default()
            }),
            &[llvmpipe],
        )
        .unwrap();
        assert!(
            only_software.contains("at least 8.0 GiB of GPU memory (1 of 1 lack it)")
                && only_software.contains("vulkan card (vulkan, cpu)"),
            "{only_software}"
        );
        assert_eq!(
            unmet(&n, &[]).as_deref(),
            Some("no provider with a GPU is online")
        );
    }

    #[test]
    fn requirements_and_filters_are_checked() {
        let bad = |r: GpuRequirements| Needs::of(&r).unwrap_err().to_string();
        assert!(
            bad(GpuRequirements {
                backend: Some("opencl".into()),
                ..Default::default()
            })
            .contains("vulkan, metal, dx12, gl, cuda")
        );
        assert!(
            bad(GpuRequirements {
                compute_capability: Some("eight".into()),
                ..Default::default()
            })
            .contains("major.minor")
        );
        let key = agora_wire::Keypair::generate().id().to_string();
        let filter = |allow: Vec<String>, deny: Vec<String>, min: Option<f64>| ProviderFilter {
            min_reputation: min,
            allow,
            deny,
        };
        assert!(check_filter(&filter(vec![key.clone()], vec![], Some(0.9))).is_ok());
        assert!(check_filter(&filter(vec![], vec![], Some(1.5))).is_err());
        assert!(check_filter(&filter(vec!["nobody".into()], vec![], None)).is_err());
        assert!(check_filter(&filter(vec![key.clone()], vec![key.clone()], None)).is_err());
        assert!(check_filter(&filter(vec![key; MAX_JOB_PROVIDER_LIST + 1], vec![], None)).is_err());
    }
}
