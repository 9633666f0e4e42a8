//! The provider daemon (`agora host`): registers this machine with a market,
//! heartbeats, leases work units, checks each package against its signed log
//! before running it, runs units in the worker pool under the job's limits,
//! and returns signed results. Before each lease it asks its [`Policy`]
//! (battery, GPU temperature, idle cores); a paused host lets its running
//! units finish and takes no new ones. It outlives market restarts: every
//! call that fails is retried after a pause.

use crate::Limits;
use crate::blob_cache::{BlobCache, CacheError};
use crate::policy::{Machine, Policy, Readings, Verdict};
use crate::pool::{ComponentBytes, WorkerPool};
use crate::status::{HostStatus, RunningUnit};
use agora_wire::api::{
    Ask, Capabilities, GpuDevice, Heartbeat, HeartbeatReply, LeaseGrant, LeaseProgress, LogLine,
    MAX_HEARTBEAT_LOG_LINES, MAX_LEASE_LOG_LINES, MAX_LOG_LINE_CHARS, NamedOutput, Progress,
    RegisterProvider, ResultReport, WorkFilter,
};
use agora_wire::client::{Client, ClientError};
use agora_wire::log::verify_log;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Pause after a failed call to the market.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Components kept in memory by digest.
const MAX_CACHED_COMPONENTS: usize = 32;
/// Bytes of shared inputs a provider keeps on disk unless told otherwise.
pub const DEFAULT_CACHE_BYTES: u64 = 16 << 30;

#[derive(Clone, Debug)]
pub struct ProviderConfig {
    pub ask: Ask,
    /// Asks per device class; the market puts this machine's in force.
    pub class_asks: std::collections::BTreeMap<String, Ask>,
    pub max_concurrent: u32,
    /// How long to wait before asking again when there is no work.
    pub poll_interval: Duration,
    pub heartbeat_interval: Duration,
    /// Test-only: return wrong outputs (to exercise the market's quorum).
    pub cheat: bool,
    /// Where jobs' shared inputs are kept between units (a fresh
    /// temporary folder when None).
    pub cache_dir: Option<std::path::PathBuf>,
    /// Most bytes the cache keeps on disk.
    pub cache_bytes: u64,
    /// When to take no new work.
    pub policy: Policy,
    /// Where the policy's readings come from (this machine, or a root a
    /// test writes).
    pub machine: Machine,
    /// Where to write what the host is doing after each heartbeat
    /// (`agora host status` reads it); nowhere when None.
    pub status_file: Option<std::path::PathBuf>,
    /// The work this host takes (the market leases it nothing else).
    pub accepts: WorkFilter,
    /// Its first device's fp32 matmul speed in GFLOPS
    /// ([`WorkerPool::benchmark`]), reported when it registers.
    pub gflops: Option<f64>,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            ask: Ask {
                per_billion_fuel: 10,
                per_gpu_second: 1,
                per_wall_second: 0,
            },
            class_asks: Default::default(),
            max_concurrent: 2,
            poll_interval: Duration::from_millis(500),
            heartbeat_interval: Duration::from_secs(5),
            cheat: false,
            cache_dir: None,
            cache_bytes: DEFAULT_CACHE_BYTES,
            policy: Policy::default(),
            machine: Machine::system(),
            status_file: None,
            accepts: WorkFilter::default(),
            gflops: None,
        }
    }
}

struct Shared {
    client: Client,
    pool: WorkerPool,
    /// Jobs' shared inputs by digest.
    blobs: BlobCache,
    config: ProviderConfig,
    running: AtomicU32,
    components: Mutex<HashMap<String, ComponentBytes>>,
    /// What running units said that the market has not heard yet.
    live: Mutex<HashMap<String, LiveLease>>,
    stop: Arc<AtomicBool>,
    /// Cores idle over the last heartbeat's interval, as it measured them.
    free_cores: Mutex<Option<f64>>,
    /// Why the host takes no new work now (None: it takes work).
    paused: Mutex<Option<String>>,
    /// Results returned, and runs the market stopped, since the start.
    answered: AtomicU64,
    stopped: AtomicU64,
    started_at_ms: i64,
}

/// One running unit's news, waiting for the next heartbeat.
#[derive(Default)]
struct LiveLease {
    progress: Option<Progress>,
    progress_sent: bool,
    unsent: Vec<LogLine>,
    /// Log lines received live so far (a prefix of the final report's).
    received: usize,
    /// Set when a heartbeat's reply says the market no longer runs it.
    stop: Arc<AtomicBool>,
    package: String,
    unit: u32,
}

impl LiveLease {
    fn of(grant: &LeaseGrant) -> LiveLease {
        LiveLease {
            package: grant.package.clone(),
            unit: grant.unit,
            ..LiveLease::default()
        }
    }
}

fn wire_line(line: &crate::report::LogLine) -> LogLine {
    LogLine {
        level: line.level.clone(),
        message: line.message.chars().take(MAX_LOG_LINE_CHARS).collect(),
    }
}

/// Serve until `stop` is set.
pub fn serve(
    client: Client,
    pool: WorkerPool,
    config: ProviderConfig,
    stop: Arc<AtomicBool>,
) -> Result<(), CacheError> {
    let temporary = match &config.cache_dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("agora-blobs-")
                .tempdir()
                .map_err(|source| CacheError::Io {
                    dir: "a temporary folder".into(),
                    source,
                })?,
        ),
    };
    let dir = config
        .cache_dir
        .clone()
        .unwrap_or_else(|| temporary.as_ref().expect("made above").path().to_path_buf());
    let blobs = BlobCache::new(&dir, config.cache_bytes)?;
    let shared = Arc::new(Shared {
        client,
        pool,
        blobs,
        config,
        running: AtomicU32::new(0),
        components: Mutex::default(),
        live: Mutex::default(),
        stop,
        free_cores: Mutex::default(),
        paused: Mutex::default(),
        answered: AtomicU64::new(0),
        stopped: AtomicU64::new(0),
        started_at_ms: agora_wire::auth::now_ms(),
    });
    register(&shared);
    let mut threads = Vec::new();
    let hb = shared.clone();
    threads.push(std::thread::spawn(move || heartbeats(&hb)));
    for _ in 0..shared.config.max_concurrent {
        let s = shared.clone();
        threads.push(std::thread::spawn(move || work(&s)));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// What this machine offers the market: its cores, memory and the
/// worker pool's devices.
pub fn capabilities(pool: &WorkerPool) -> Capabilities {
    let cpu_cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
        .min(agora_wire::limits::MAX_CPU_CORES);
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0);
    use agora_wire::limits::{MAX_PROVIDER_GPUS, gpu_text};
    let gpus: Vec<GpuDevice> = pool
        .devices()
        .iter()
        .take(MAX_PROVIDER_GPUS)
        .map(|a| GpuDevice {
            name: gpu_text(&a.name),
            backend: gpu_text(&a.backend),
            device_type: gpu_text(&a.device_type),
            memory_bytes: a.memory_bytes,
            compute_capability: a.compute_capability.as_deref().map(gpu_text),
            gflops: None,
        })
        .collect();
    let cuda = gpus.iter().any(|g| g.backend == "cuda");
    Capabilities {
        cpu_cores,
        memory_bytes,
        gpus,
        cuda,
        kind: "native".into(),
    }
}

/// A measured speed as the market takes it: whole GFLOPS (at least 1),
/// within what it accepts of a device of `device_type` (a software
/// adapter's bound is lower: a reading past it would be refused, and the
/// host would never register).
fn reported_gflops(gflops: f64, device_type: &str) -> u32 {
    use agora_wire::limits::{MAX_GPU_GFLOPS, MAX_SOFTWARE_GFLOPS};
    let most = if device_type == "cpu" {
        MAX_SOFTWARE_GFLOPS
    } else {
        MAX_GPU_GFLOPS
    };
    gflops.round().clamp(1.0, f64::from(most)) as u32
}

fn register(s: &Shared) {
    let mut capabilities = capabilities(&s.pool);
    if let Some(first) = capabilities.gpus.first_mut() {
        first.gflops = s
            .config
            .gflops
            .map(|g| reported_gflops(g, &first.device_type));
    }
    // Only this machine's class: a fleet's shared config names others.
    let class = capabilities.device_class();
    let request = RegisterProvider {
        class_asks: s
            .config
            .class_asks
            .iter()
            .filter(|(c, _)| **c == class)
            .map(|(c, a)| (c.clone(), *a))
            .collect(),
        capabilities,
        ask: s.config.ask,
        max_concurrent: s.config.max_concurrent,
        accepts: s.config.accepts.clone(),
    };
    while !s.stop.load(Ordering::Relaxed) {
        match s
            .client
            .post::<_, serde_json::Value>("/api/v1/providers", &request, None)
        {
            Ok(_) => {
                tracing::info!(provider = %s.client.key().expect("signed").id(), "registered with the market");
                return;
            }
            Err(e) => {
                tracing::warn!("registering: {e}; retrying");
                std::thread::sleep(RETRY_PAUSE);
            }
        }
    }
}

fn heartbeats(s: &Shared) {
    let mut last = s.config.machine.cpu_times();
    // What the market last heard this host keeps (sent again on a change).
    let mut told: Option<Vec<String>> = None;
    let mut failed: Option<String> = None;
    while !s.stop.load(Ordering::Relaxed) {
        std::thread::sleep(s.config.heartbeat_interval.min(Duration::from_millis(200)));
        let now = s.config.machine.cpu_times();
        let free = match (&last, &now) {
            (Some(earlier), Some(now)) => now.free_cores_since(earlier),
            _ => None,
        };
        *s.free_cores.lock().expect("free cores lock") = free;
        last = now;
        let mut keeps = s.blobs.held(agora_wire::api::MAX_HEARTBEAT_KEPT);
        keeps.sort();
        let beat = Heartbeat {
            running_units: s.running.load(Ordering::Relaxed),
            free_cpu_cores: free
                .unwrap_or(0.0)
                .clamp(0.0, agora_wire::limits::MAX_CPU_CORES as f64),
            gpu_memory_used_bytes: None,
            devices: s
                .config
                .machine
                .gpu_devices()
                .into_iter()
                .take(agora_wire::limits::MAX_PROVIDER_GPUS)
                .collect(),
            leases: take_live(s),
            keeps: (told.as_ref() != Some(&keeps)).then(|| keeps.clone()),
        };
        // Written before the heartbeat too: one can wait a long time for
        // a market that does not answer, and the host is alive meanwhile.
        write_status(s, failed.clone(), free);
        failed = None;
        match s
            .client
            .post::<_, HeartbeatReply>("/api/v1/providers/heartbeat", &beat, None)
        {
            Ok(reply) => {
                told = Some(keeps);
                stop_leases(s, &reply.stop);
            }
            Err(e) if e.code() == Some(agora_wire::api::codes::NOT_FOUND) => {
                told = None;
                register(s);
            }
            Err(e) => {
                tracing::warn!("heartbeat: {e}");
                failed = Some(e.to_string());
            }
        }
        write_status(s, failed.clone(), free);
        sleep_unless_stopped(
            s,
            s.config
                .heartbeat_interval
                .saturating_sub(Duration::from_millis(200)),
        );
    }
}

/// Write what the host is doing for `agora host status`, if asked to.
fn write_status(s: &Shared, heartbeat_error: Option<String>, free_cpu_cores: Option<f64>) {
    let Some(path) = &s.config.status_file else {
        return;
    };
    let running = s
        .live
        .lock()
        .expect("live lock")
        .iter()
        .map(|(lease_id, l)| RunningUnit {
            lease_id: lease_id.clone(),
            package: l.package.clone(),
            unit: l.unit,
            progress: l.progress,
        })
        .collect();
    let status = HostStatus {
        provider: s
            .client
            .key()
            .map(|k| k.id().to_string())
            .unwrap_or_default(),
        market: s.client.market().to_string(),
        pid: std::process::id(),
        started_at_ms: s.started_at_ms,
        updated_at_ms: agora_wire::auth::now_ms(),
        heartbeat_interval_ms: s.config.heartbeat_interval.as_millis() as u64,
        heartbeat_error,
        paused: s.paused.lock().expect("paused lock").clone(),
        free_cpu_cores,
        max_concurrent: s.config.max_concurrent,
        running,
        answered: s.answered.load(Ordering::Relaxed),
        stopped: s.stopped.load(Ordering::Relaxed),
    };
    if let Err(e) = status.write(path) {
        tracing::warn!("writing the host's status to {}: {e}", path.display());
    }
}

/// Stop the running leases the market says it no longer runs (their job
/// was cancelled, or they lapsed): their workers are killed.
fn stop_leases(s: &Shared, leases: &[String]) {
    let live = s.live.lock().expect("live lock");
    for lease_id in leases {
        if let Some(l) = live.get(lease_id) {
            tracing::info!(lease = %lease_id, "the market ended this lease: stopping it");
            l.stop.store(true, Ordering::SeqCst);
        }
    }
}

/// Every running lease, with its news for one heartbeat (at most
/// [`MAX_HEARTBEAT_LOG_LINES`] log lines; the rest wait for the next). A
/// lease with no news is still named: that is what renews it.
fn take_live(s: &Shared) -> Vec<LeaseProgress> {
    let mut live = s.live.lock().expect("live lock");
    let mut budget = MAX_HEARTBEAT_LOG_LINES;
    let mut out = Vec::new();
    for (lease_id, l) in live.iter_mut() {
        let n = l.unsent.len().min(budget);
        budget -= n;
        let progress = if l.progress_sent { None } else { l.progress };
        l.progress_sent = true;
        out.push(LeaseProgress {
            lease_id: lease_id.clone(),
            progress,
            logs: l.unsent.drain(..n).collect(),
        });
    }
    out
}

fn sleep_unless_stopped(s: &Shared, total: Duration) {
    let step = Duration::from_millis(50);
    let mut slept = Duration::ZERO;
    while slept < total && !s.stop.load(Ordering::Relaxed) {
        std::thread::sleep(step);
        slept += step;
    }
}

/// Whether the policy lets this host take another unit now; a change is
/// logged once (pausing, and why; resuming).
fn may_take_work(s: &Shared) -> bool {
    let readings = Readings {
        power: s.config.machine.power(),
        gpu_celsius: s.config.machine.gpu_celsius(),
        free_cores: *s.free_cores.lock().expect("free cores lock"),
    };
    let why = match s.config.policy.verdict(&readings) {
        Verdict::Take => None,
        Verdict::Pause(why) => Some(why),
    };
    let mut paused = s.paused.lock().expect("paused lock");
    if *paused != why {
        match &why {
            Some(why) => tracing::info!("taking no new work: {why} (running units finish)"),
            None => tracing::info!("taking work again"),
        }
        *paused = why.clone();
    }
    why.is_none()
}

fn work(s: &Shared) {
    while !s.stop.load(Ordering::Relaxed) {
        if !may_take_work(s) {
            sleep_unless_stopped(s, s.config.poll_interval.max(Duration::from_secs(1)));
            continue;
        }
        match s
            .client
            .post::<_, Option<LeaseGrant>>("/api/v1/leases", &serde_json::json!({}), None)
        {
            Ok(Some(grant)) => {
                s.running.fetch_add(1, Ordering::Relaxed);
                // Named in every heartbeat from now on (the market renews
                // only the leases a provider says it is running).
                s.live
                    .lock()
                    .expect("live lock")
                    .insert(grant.lease_id.clone(), LiveLease::of(&grant));
                match run_lease(s, &grant) {
                    Ok(LeaseEnd::Answered) => {
                        s.answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(LeaseEnd::Stopped) => {
                        s.stopped.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(lease = %grant.lease_id, "stopped: the market ended this lease (its job was cancelled, or it lapsed)")
                    }
                    Err(e) => tracing::warn!(lease = %grant.lease_id, "lease abandoned: {e}"),
                }
                s.live.lock().expect("live lock").remove(&grant.lease_id);
                s.running.fetch_sub(1, Ordering::Relaxed);
            }
            Ok(None) => sleep_unless_stopped(s, s.config.poll_interval),
            Err(e) => {
                tracing::debug!("leasing: {e}");
                sleep_unless_stopped(s, RETRY_PAUSE);
            }
        }
    }
}

/// The component of `grant`, checked against the package's signed log.
fn component(s: &Shared, grant: &LeaseGrant) -> Result<ComponentBytes, String> {
    if let Some(c) = s.components.lock().expect("cache lock").get(&grant.digest) {
        return Ok(c.clone());
    }
    let log: Vec<agora_wire::log::LogEntry> = s
        .client
        .get(&format!("/api/v1/packages/{}/log", grant.package))
        .map_err(|e: ClientError| e.to_string())?;
    let state = verify_log(&log, None)
        .map_err(|e| format!("the log of {} fails verification: {e}", grant.package))?;
    let release = state.releases.get(&grant.version).ok_or_else(|| {
        format!(
            "{} {} is not in its signed log",
            grant.package, grant.version
        )
    })?;
    if release.digest != grant.digest {
        return Err(format!(
            "the lease names digest {} but the signed log says {}",
            grant.digest, release.digest
        ));
    }
    let bytes = s
        .client
        .get_bytes(&format!(
            "/api/v1/packages/{}/versions/{}/component",
            grant.package, grant.version
        ))
        .map_err(|e| e.to_string())?;
    let component = ComponentBytes::new(bytes);
    if component.digest != release.digest {
        return Err(format!(
            "downloaded bytes have digest {}, the signed log says {}",
            component.digest, release.digest
        ));
    }
    let mut cache = s.components.lock().expect("cache lock");
    if cache.len() >= MAX_CACHED_COMPONENTS {
        cache.clear();
    }
    cache.insert(grant.digest.clone(), component.clone());
    Ok(component)
}

/// The lease's shared inputs, from the cache or fetched into it.
fn shared_inputs(s: &Shared, grant: &LeaseGrant) -> Result<crate::SharedInputs, String> {
    let mut inputs = crate::SharedInputs::new();
    let total: u64 = grant.shared.iter().map(|b| b.size).sum();
    if total > agora_wire::limits::MAX_SHARED_INPUT_BYTES {
        return Err(format!(
            "the lease's shared inputs are {total} bytes, past MAX_SHARED_INPUT_BYTES"
        ));
    }
    for blob in &grant.shared {
        let path = format!("/api/v1/blobs/{}", blob.digest);
        if blob.size > agora_wire::limits::MAX_SHARED_INPUT_BYTES {
            return Err(format!(
                "shared input {} is {} bytes, past MAX_SHARED_INPUT_BYTES",
                blob.name, blob.size
            ));
        }
        // No more than the grant says: a market sending more is cut off.
        let fetch = |file: &mut std::fs::File| {
            let mut capped = Capped {
                inner: file,
                left: blob.size,
            };
            s.client
                .download_signed(&path, &mut capped)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let bytes = s
            .blobs
            .get(&blob.digest, fetch)
            .map_err(|e| e.to_string())?;
        inputs.insert(
            blob.name.clone(),
            crate::SharedBlob::checked(blob.digest.clone(), bytes),
        );
    }
    Ok(inputs)
}

/// A writer that refuses bytes past `left`.
struct Capped<'a> {
    inner: &'a mut std::fs::File,
    left: u64,
}

impl std::io::Write for Capped<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if bytes.len() as u64 > self.left {
            return Err(std::io::Error::other(
                "more bytes than the lease's shared input has",
            ));
        }
        let n = self.inner.write(bytes)?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// How a lease this host ran ended.
enum LeaseEnd {
    /// Its result went back to the market.
    Answered,
    /// The market ended it while it ran; nothing was sent.
    Stopped,
}

fn run_lease(s: &Shared, grant: &LeaseGrant) -> Result<LeaseEnd, String> {
    let component = component(s, grant)?;
    let input = s
        .client
        .get_signed_bytes(&format!("/api/v1/blobs/{}", grant.input_digest))
        .map_err(|e| e.to_string())?;
    if agora_wire::digest_hex(&input) != grant.input_digest {
        return Err("the input does not match its digest".into());
    }
    let limits = Limits {
        fuel: grant.limits.fuel,
        memory_bytes: grant.limits.memory_bytes,
        timeout: Duration::from_millis(grant.limits.timeout_ms),
        // The market's bound on a result, so it never refuses an honest one.
        output_bytes: agora_wire::limits::MAX_UNIT_BYTES as u64,
        ..Limits::default()
    };
    tracing::info!(lease = %grant.lease_id, package = %grant.package, unit = grant.unit, "running");
    let mut on_live = |update: crate::report::LiveUpdate| {
        let mut live = s.live.lock().expect("live lock");
        let Some(l) = live.get_mut(&grant.lease_id) else {
            return;
        };
        if let Some((done, total)) = update.progress {
            let progress = Some(Progress { done, total });
            l.progress_sent &= l.progress == progress;
            l.progress = progress;
        }
        l.received += update.logs.len();
        let room = (MAX_LEASE_LOG_LINES as usize).saturating_sub(l.unsent.len());
        l.unsent
            .extend(update.logs.iter().take(room).map(wire_line));
    };
    let shared = shared_inputs(s, grant)?;
    let stop = s
        .live
        .lock()
        .expect("live lock")
        .get(&grant.lease_id)
        .map(|l| l.stop.clone())
        .unwrap_or_default();
    if stop.load(Ordering::SeqCst) {
        return Ok(LeaseEnd::Stopped);
    }
    let result = s
        .pool
        .run_stoppable(&component, &input, &shared, &limits, &mut on_live, &stop);
    if stop.load(Ordering::SeqCst) {
        return Ok(LeaseEnd::Stopped);
    }
    let (unsent, received) = s
        .live
        .lock()
        .expect("live lock")
        .remove(&grant.lease_id)
        .map(|l| (l.unsent, l.received))
        .unwrap_or_default();
    let report = result.report;
    // Lines not sent with a heartbeat go with the result.
    let mut logs = unsent;
    logs.extend(report.logs.iter().skip(received).map(wire_line));
    logs.truncate(MAX_LEASE_LOG_LINES as usize);
    let mut output = result.output;
    if s.config.cheat
        && let Some(bytes) = output.as_mut()
    {
        // Wrong in a way any check sees: the first four bytes (a whole f32
        // of a matrix, a PNG's signature) inverted.
        bytes.iter_mut().take(4).for_each(|b| *b ^= 0xff);
        if bytes.is_empty() {
            bytes.push(0xff);
        }
    }
    let (outcome, limit) = report.outcome.wire();
    let (output_digest, outputs) = match &output {
        Some(main) => upload_outputs(s, &grant.lease_id, main, &result.named)?,
        None => (None, Vec::new()),
    };
    let gpu_time_us = report.gpu.gpu_time.as_micros() as u64;
    let key = s.client.key().expect("a signed client");
    let signature = key.sign(&ResultReport::signed_bytes(
        &grant.lease_id,
        outcome,
        output_digest.as_deref(),
        &outputs,
        report.fuel_used,
        gpu_time_us,
    ));
    let result = ResultReport {
        outcome,
        limit,
        message: (!report.outcome.is_ok()).then(|| report.outcome.to_string()),
        output_base64: None,
        output_digest,
        fuel_used: report.fuel_used,
        gpu_time_us,
        peak_memory_bytes: report.peak_memory_bytes,
        signature,
        logs,
        outputs,
    };
    s.client
        .post::<_, serde_json::Value>(
            &format!("/api/v1/leases/{}/result", grant.lease_id),
            &result,
            None,
        )
        .map_err(|e| e.to_string())?;
    tracing::info!(lease = %grant.lease_id, %outcome, fuel = report.fuel_used, "result returned");
    Ok(LeaseEnd::Answered)
}

/// Upload a run's outputs under its lease, each blob once: the main
/// output's digest and the named outputs' manifest, for the result.
fn upload_outputs(
    s: &Shared,
    lease_id: &str,
    main: &[u8],
    named: &crate::NamedOutputs,
) -> Result<(Option<String>, Vec<NamedOutput>), String> {
    let mut sent = std::collections::HashSet::new();
    let mut upload = |bytes: &[u8]| -> Result<String, String> {
        let digest = agora_wire::digest_hex(bytes);
        if sent.insert(digest.clone()) {
            s.client
                .put_signed_bytes::<serde_json::Value>(
                    &format!("/api/v1/leases/{lease_id}/outputs/{digest}"),
                    bytes,
                )
                .map_err(|e| format!("uploading an output: {e}"))?;
        }
        Ok(digest)
    };
    let main = upload(main)?;
    let mut outputs = Vec::new();
    for (name, bytes) in named {
        outputs.push(NamedOutput {
            name: name.clone(),
            digest: upload(bytes)?,
            bytes: bytes.len() as u64,
        });
    }
    Ok((Some(main), outputs))
}
