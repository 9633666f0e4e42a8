//! The run report: what happened to a job and what it used. It crosses from
//! the worker to the supervisor and out to `agora run --json` (and later the
//! market), so it is the one serialized type here.

use crate::gpu::{AdapterInfo, GpuStats};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

pub use agora_wire::api::LimitKind;

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Outcome {
    /// `run` returned an output.
    Ok,
    /// `run` returned an error message.
    JobError { message: String },
    /// A limit stopped the job.
    LimitExceeded { limit: LimitKind, message: String },
    /// The guest trapped (a bug in the job, not a limit).
    Trap { message: String },
    /// The component was refused before it ran (malformed, precompiled,
    /// wrong world).
    Refused { message: String },
    /// The worker died or was killed; the host replaced it.
    WorkerLost { message: String },
    /// The worker passed its memory wall (the sandbox's cgroup: linear
    /// memory, host-side blobs and GPU read-backs together), the kernel
    /// killed it and the host replaced it. On the wire a lost worker: the
    /// wall is the host's own setting, not one of the unit's limits.
    WorkerOutOfMemory { limit_bytes: u64, message: String },
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }

    /// How the run ended as the market's wire types say it, and which
    /// limit stopped it.
    pub fn wire(&self) -> (agora_wire::api::RunOutcome, Option<LimitKind>) {
        use agora_wire::api::RunOutcome;
        match self {
            Outcome::Ok => (RunOutcome::Ok, None),
            Outcome::JobError { .. } => (RunOutcome::JobError, None),
            Outcome::LimitExceeded { limit, .. } => (RunOutcome::LimitExceeded, Some(*limit)),
            Outcome::Trap { .. } => (RunOutcome::Trap, None),
            Outcome::Refused { .. } => (RunOutcome::Refused, None),
            Outcome::WorkerLost { .. } | Outcome::WorkerOutOfMemory { .. } => {
                (RunOutcome::WorkerLost, None)
            }
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::JobError { message } => write!(f, "job failed: {message}"),
            Outcome::LimitExceeded { limit, message } => {
                write!(f, "limit exceeded ({}): {message}", limit.name())
            }
            Outcome::Trap { message } => write!(f, "trap: {message}"),
            Outcome::Refused { message } => write!(f, "component refused: {message}"),
            Outcome::WorkerLost { message } => write!(f, "worker lost: {message}"),
            Outcome::WorkerOutOfMemory {
                limit_bytes,
                message,
            } => {
                write!(
                    f,
                    "worker memory ({} MiB) exceeded: {message}",
                    limit_bytes >> 20
                )
            }
        }
    }
}

/// A log line from the job (`progress.log`, or its stdout/stderr).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub level: String,
    pub message: String,
}

/// What a running job has said since the last update: sent while it runs
/// (worker -> supervisor -> provider -> market), at most every
/// [`crate::limits::LIVE_UPDATE_INTERVAL`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveUpdate {
    /// The last `progress.report` (done, total).
    pub progress: Option<(u64, u64)>,
    /// `progress.log` lines since the previous update, in order: they are a
    /// prefix of the final report's `logs`.
    pub logs: Vec<LogLine>,
}

/// Called with each [`LiveUpdate`] of a running job.
pub type LiveObserver = Box<dyn FnMut(LiveUpdate) + Send>;

/// Everything a run used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub outcome: Outcome,
    /// blake3 of the component, hex.
    pub component_digest: String,
    pub fuel_used: u64,
    pub peak_memory_bytes: u64,
    pub gpu: GpuStats,
    pub adapter: Option<AdapterInfo>,
    #[serde(with = "micros")]
    pub wall_time: Duration,
    /// Time to compile the component (zero when it came from the cache).
    #[serde(with = "micros")]
    pub compile_time: Duration,
    pub output_bytes: u64,
    /// The last `progress.report` (done, total).
    pub progress: Option<(u64, u64)>,
    pub logs: Vec<LogLine>,
    /// True when the worker cannot be trusted with another job (device hung).
    pub worker_poisoned: bool,
}

impl RunReport {
    pub(crate) fn new(outcome: Outcome, component_digest: String) -> Self {
        RunReport {
            outcome,
            component_digest,
            fuel_used: 0,
            peak_memory_bytes: 0,
            gpu: GpuStats::default(),
            adapter: None,
            wall_time: Duration::ZERO,
            compile_time: Duration::ZERO,
            output_bytes: 0,
            progress: None,
            logs: Vec::new(),
            worker_poisoned: false,
        }
    }
}

impl fmt::Display for RunReport {
    /// The human summary `agora run` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "outcome     {}", self.outcome)?;
        writeln!(
            f,
            "component   {}",
            &self.component_digest[..self.component_digest.len().min(16)]
        )?;
        writeln!(
            f,
            "wall time   {:.1} ms (compile {:.1} ms)",
            ms(self.wall_time),
            ms(self.compile_time)
        )?;
        writeln!(f, "fuel        {}", self.fuel_used)?;
        writeln!(f, "memory      {} peak", bytes(self.peak_memory_bytes))?;
        match &self.adapter {
            Some(a) => writeln!(
                f,
                "gpu         {} ({}, {})",
                a.name, a.backend, a.device_type
            )?,
            None => writeln!(f, "gpu         none")?,
        }
        writeln!(
            f,
            "gpu use     {} dispatches, {} peak, {:.1} ms",
            self.gpu.dispatches,
            bytes(self.gpu.buffer_bytes_peak),
            ms(self.gpu.gpu_time)
        )?;
        write!(f, "output      {}", bytes(self.output_bytes))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Bytes for people: 1.5 MiB.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Durations as integer microseconds on the wire.
pub mod micros {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_micros(u64::deserialize(d)?))
    }
}

/// Durations as integer milliseconds on the wire.
pub mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
