//! The JSON types of the market's HTTP API (`/api/v1`), and its errors.
//!
//! Amounts are integer credits (`u64` on the wire, never floats).

use crate::keys::KeyId;
use crate::log::LogEntry;
use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// A stored or wire text that names no variant of a state enum.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a {what}")]
pub struct UnknownState {
    pub what: &'static str,
    pub text: String,
}

/// `as_str`, `ALL`, `Display`, `FromStr` and `TryFrom<String>` for an enum
/// of unit variants, from one table of its text forms: the forms stored in
/// the market's database and sent on the wire (serde's kebab-case gives the
/// same; a test holds them together).
macro_rules! text_forms {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = UnknownState;

            fn from_str(text: &str) -> Result<Self, UnknownState> {
                match text {
                    $($text => Ok($ty::$variant),)+
                    other => Err(UnknownState { what: stringify!($ty), text: other.to_string() }),
                }
            }
        }

        impl TryFrom<String> for $ty {
            type Error = UnknownState;

            fn try_from(text: String) -> Result<Self, UnknownState> {
                text.parse()
            }
        }
    };
}

/// Every error response: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorDetail {
    /// Stable, machine-readable: see [`codes`].
    pub code: String,
    pub message: String,
}

/// The stable error codes.
pub mod codes {
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    pub const FORBIDDEN: &str = "forbidden";
    pub const NOT_FOUND: &str = "not_found";
    pub const INVALID: &str = "invalid_request";
    pub const TOO_LARGE: &str = "payload_too_large";
    pub const RATE_LIMITED: &str = "rate_limited";
    /// Too much work in flight: retry shortly.
    pub const BUSY: &str = "busy";
    pub const INSUFFICIENT_FUNDS: &str = "insufficient_funds";
    pub const TRANSFER_CONFLICT: &str = "transfer_conflict";
    pub const IDEMPOTENCY_MISMATCH: &str = "idempotency_mismatch";
    /// A concurrent request with the same idempotency key is still running.
    pub const IDEMPOTENCY_IN_PROGRESS: &str = "idempotency_in_progress";
    pub const NOT_PENDING: &str = "not_pending";
    /// A transfer id, hold or account the market keeps for itself.
    pub const RESERVED: &str = "reserved";
    /// A value past a named limit (the message names it).
    pub const LIMIT: &str = "limit_exceeded";
    pub const VERSION_EXISTS: &str = "version_exists";
    pub const NAME_TAKEN: &str = "name_taken";
    pub const BAD_PACKAGE: &str = "bad_package";
    pub const BAD_LOG: &str = "bad_log";
    /// Asked too early: a job's data while the job is still running or
    /// being paid.
    pub const NOT_YET: &str = "not_yet";
    /// Deleted by its owner or at the end of its retention period.
    pub const GONE: &str = "gone";
    /// An upload past the account's storage quota.
    pub const STORAGE_QUOTA: &str = "storage_quota";
    /// A chunk whose bytes are not the ones its upload declared.
    pub const CHUNK_MISMATCH: &str = "chunk_mismatch";
    /// An upload finished before all its chunks arrived.
    pub const INCOMPLETE: &str = "incomplete";
    /// The job ended (done, failed, expired) before the request: it cannot
    /// be cancelled any more.
    pub const JOB_ENDED: &str = "job_ended";
    /// A job whose GPU requirements no online provider meets.
    pub const UNSATISFIABLE: &str = "unsatisfiable";
    pub const INTERNAL: &str = "internal";
}

/// An account's balances. `available = credits_posted - debits_posted - debits_pending`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Balance {
    pub account: String,
    pub credits_posted: u64,
    pub debits_posted: u64,
    pub credits_pending: u64,
    pub debits_pending: u64,
    pub available: u64,
}

/// What a transfer request does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TransferKind {
    /// Move `amount` now.
    Single,
    /// Reserve `amount` (escrow) until posted, voided, or `timeout_ms` passes.
    Hold { timeout_ms: u64 },
    /// Settle hold `pending_id`: `amount` (at most the held amount; all of it
    /// when omitted) moves, the rest is released.
    Post { pending_id: String },
    /// Release hold `pending_id` entirely.
    Void { pending_id: String },
}

/// A transfer request. `id` is the client's: a retry with the same id and
/// body returns the first outcome; the same id with another body is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TransferRequest {
    pub id: String,
    /// Debited account (for post/void: taken from the hold).
    pub debit: Option<String>,
    /// Credited account (for post/void: taken from the hold).
    pub credit: Option<String>,
    /// Credits; for post, at most the held amount (omit for all of it).
    pub amount: Option<u64>,
    #[serde(flatten)]
    pub kind: TransferKind,
}

/// The state of a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum TransferState {
    Posted,
    Pending,
    /// A hold settled by a post (see `amount_posted`).
    Settled,
    Voided,
    Expired,
}

text_forms!(TransferState { Posted => "posted", Pending => "pending", Settled => "settled", Voided => "voided", Expired => "expired" });

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Transfer {
    pub id: String,
    pub debit: String,
    pub credit: String,
    pub amount: u64,
    pub kind: String,
    pub state: TransferState,
    /// The hold a post or void resolved.
    pub pending_id: Option<String>,
    /// For a hold: what its post moved.
    pub amount_posted: Option<u64>,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
}

/// Operator-only: create credits in `account` (recorded as a transfer from
/// the issuance account `mint`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct MintRequest {
    pub id: String,
    pub account: String,
    pub amount: u64,
}

/// A page of results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Page<T> {
    pub items: Vec<T>,
    pub page: u32,
    pub per_page: u32,
    pub total: u64,
}

/// The ledger invariants, as checked now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct InvariantReport {
    pub ok: bool,
    pub debits_posted: u64,
    pub credits_posted: u64,
    pub debits_pending: u64,
    pub credits_pending: u64,
    pub violations: Vec<String>,
}

/// Publish a version: the component (base64) and the signed release entry
/// that extends the package log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PublishRequest {
    pub description: String,
    pub category: String,
    pub tags: Vec<String>,
    /// The component's bytes, standard base64.
    pub component_base64: String,
    /// A `release` entry for this name, version and the component's digest.
    pub entry: LogEntry,
}

/// Append a yank or key rotation to a package's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AppendLogRequest {
    pub entry: LogEntry,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct VersionInfo {
    pub version: String,
    pub digest: String,
    pub size: u64,
    pub yanked: bool,
    pub published_at_ms: i64,
    /// The component's imports and exports (its WIT world, in short).
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// Browser contributors can run it: it needs nothing beyond the Agora
    /// contract and the WASI a browser provides, and its browser bundle is
    /// at `GET /api/v1/browser/{digest}/`.
    #[serde(default)]
    pub browser: bool,
}

/// A component transpiled for browsers: core wasm modules and the
/// JavaScript glue that instantiates them, each file content-addressed.
/// Served at `GET /api/v1/browser/{component_digest}` (this manifest) and
/// `GET /api/v1/browser/{component_digest}/{file}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct BrowserBundle {
    /// blake3 of the signed component it was made from.
    pub component_digest: String,
    /// The ES module to import; it exports `instantiate(getCoreModule, imports)`.
    pub entry: String,
    pub files: Vec<BundleFile>,
    /// What made it (tool and version), so a bundle can be traced and rebuilt.
    pub generator: String,
    /// Imports the runtime must provide as suspending (JSPI) functions.
    pub suspending_imports: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct BundleFile {
    pub name: String,
    /// blake3 of the file.
    pub digest: String,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PackageSummary {
    pub name: String,
    pub description: String,
    pub category: String,
    pub tags: Vec<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub owner: KeyId,
    pub latest: Option<String>,
    pub downloads: u64,
    pub updated_at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PackageInfo {
    #[serde(flatten)]
    pub summary: PackageSummary,
    pub versions: Vec<VersionInfo>,
}

// ---------------------------------------------------------------- jobs

/// What a provider machine offers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Capabilities {
    pub cpu_cores: u32,
    pub memory_bytes: u64,
    pub gpus: Vec<GpuDevice>,
    pub cuda: bool,
    /// `native` (agora host) or `browser`.
    pub kind: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct GpuDevice {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    /// Device memory (CUDA devices report it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// `major.minor` compute capability of a CUDA device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_capability: Option<String>,
    /// The fp32 matmul speed the host measured on this device with the
    /// standard `matmul` kernel (`agora_host::gpu::speed`), in GFLOPS, of
    /// a provider's first device only; the market refuses one past
    /// [`crate::limits::MAX_GPU_GFLOPS`] ([`crate::limits::MAX_SOFTWARE_GFLOPS`]
    /// for a software adapter), or of 0; the operator's own hosts are
    /// rated at their claim, anyone else's at most 150% of what the
    /// operator's hosts of the same class online are rated (with none,
    /// `None` in its listing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gflops: Option<u32>,
}

/// The device class of a provider without a GPU.
pub const CPU_CLASS: &str = "cpu";
/// The device class of every software adapter (llvmpipe, lavapipe, WARP):
/// they are priced alike, whatever they are called.
pub const SOFTWARE_CLASS: &str = "software";

impl GpuDevice {
    /// What the card is, as prices are grouped: its name in lowercase
    /// words joined by `-` (`NVIDIA GeForce RTX 4090` is
    /// `nvidia-geforce-rtx-4090`), at most 64 characters; a software
    /// adapter is [`SOFTWARE_CLASS`].
    pub fn class(&self) -> String {
        if self.device_type == "cpu" {
            return SOFTWARE_CLASS.to_string();
        }
        let words: Vec<String> = self
            .name
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
        let mut class = words.join("-");
        class.truncate(64);
        let class = class.trim_end_matches('-').to_string();
        if class.is_empty() {
            "unnamed-gpu".to_string()
        } else {
            class
        }
    }
}

impl Capabilities {
    /// The class of the device this provider runs units on: its first
    /// GPU's, or [`CPU_CLASS`].
    pub fn device_class(&self) -> String {
        self.gpus
            .first()
            .map_or(CPU_CLASS.to_string(), GpuDevice::class)
    }

    /// The ask in force for a provider of these capabilities: its device
    /// class's in `class_asks`, or `ask`.
    pub fn ask_in_force(
        &self,
        ask: Ask,
        class_asks: &std::collections::BTreeMap<String, Ask>,
    ) -> Ask {
        class_asks.get(&self.device_class()).copied().unwrap_or(ask)
    }
}

/// A provider's prices, in credits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Ask {
    pub per_billion_fuel: u64,
    pub per_gpu_second: u64,
    /// Per second of wall-clock time the unit held the provider's slot
    /// (a guest that sleeps holds it as surely as one that computes).
    #[serde(default)]
    pub per_wall_second: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RegisterProvider {
    pub capabilities: Capabilities,
    /// The ask in force when `class_asks` names no class of this
    /// provider's devices.
    pub ask: Ask,
    /// Asks per device class ([`GpuDevice::class`]): a card is priced by
    /// what it is. The ask of the class of the provider's first GPU (the
    /// one it runs units on) is in force; each class named must be one of
    /// its devices', at most [`crate::limits::MAX_PROVIDER_GPUS`].
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub class_asks: std::collections::BTreeMap<String, Ask>,
    pub max_concurrent: u32,
    /// Whose work, and what work, this provider takes (empty: any).
    #[serde(default, skip_serializing_if = "WorkFilter::is_empty")]
    pub accepts: WorkFilter,
}

/// The work a provider takes: packages and publishers (their owners' keys)
/// it allows (when any are named, a unit must be of one of them) or
/// denies, the longest and largest units, and CPU or GPU units only. The
/// market leases it nothing else, canaries included.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct WorkFilter {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny_packages: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publishers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny_publishers: Vec<String>,
    /// Units whose timeout is at most this (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_timeout_ms: Option<u64>,
    /// Units whose memory limit is at most this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_memory_bytes: Option<u64>,
    /// `any`, `cpu-only` (units that need no GPU) or `gpu-only`.
    #[serde(skip_serializing_if = "UnitKinds::is_any")]
    pub units: UnitKinds,
}

impl WorkFilter {
    pub fn is_empty(&self) -> bool {
        *self == WorkFilter::default()
    }
}

/// Which units a provider takes by their need of a GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum UnitKinds {
    #[default]
    Any,
    CpuOnly,
    GpuOnly,
}

text_forms!(UnitKinds { Any => "any", CpuOnly => "cpu-only", GpuOnly => "gpu-only" });

impl UnitKinds {
    pub fn is_any(&self) -> bool {
        *self == UnitKinds::Any
    }
}

/// Telemetry sent with each heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Heartbeat {
    pub running_units: u32,
    /// Cores idle over the last interval, measured.
    pub free_cpu_cores: f64,
    pub gpu_memory_used_bytes: Option<u64>,
    /// Each GPU's readings, where the platform gives them (at most
    /// `MAX_PROVIDER_GPUS`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceTelemetry>,
    /// Progress and new log lines of the units running now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leases: Vec<LeaseProgress>,
    /// The digests of the shared inputs this provider keeps, most recently
    /// used first, at most [`MAX_HEARTBEAT_KEPT`]; sent when they changed
    /// since its last heartbeat. Leasing prefers units whose job shares one
    /// of them. Never shown to anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keeps: Option<Vec<String>>,
}

/// One GPU's readings in a heartbeat; each where the platform gives it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DeviceTelemetry {
    /// The device as the host names it (`card0 amdgpu`).
    pub name: String,
    /// Busy share, 0 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub celsius: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watts: Option<f64>,
}

/// A provider's machine over its last day, a sample a minute at most
/// (`GET /api/v1/providers/{id}/telemetry`), oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ProviderTelemetry {
    pub provider: String,
    /// The most often a sample is kept.
    pub sample_ms: i64,
    pub samples: Vec<TelemetrySample>,
}

/// One heartbeat's readings, its GPUs summed up: the mean busy share, the
/// hottest, and the power and memory of all (each over the devices that
/// report it; none when none does).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TelemetrySample {
    pub at_ms: i64,
    pub free_cpu_cores: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_utilization_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_celsius: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_watts: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_used_bytes: Option<u64>,
}

/// Most digests a heartbeat says its provider keeps.
pub const MAX_HEARTBEAT_KEPT: usize = 64;

/// Log lines the market keeps per lease; more are counted, not stored.
pub const MAX_LEASE_LOG_LINES: i64 = 1000;
/// Longest log line kept, in characters.
pub const MAX_LOG_LINE_CHARS: usize = 1000;
/// Most log lines a provider sends in one heartbeat (the rest wait).
pub const MAX_HEARTBEAT_LOG_LINES: usize = 200;

/// What one running unit said since the last heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LeaseProgress {
    pub lease_id: String,
    pub progress: Option<Progress>,
    #[serde(default)]
    pub logs: Vec<LogLine>,
}

/// `done` of `total`, as the job reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// One log line of a job (`progress.log`, stdout or stderr).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LogLine {
    /// trace, debug, info, warn, error, stdout or stderr.
    pub level: String,
    pub message: String,
}

/// A log line as the market keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct JobLogLine {
    /// Increasing within the market: ask for lines after it.
    pub seq: i64,
    pub unit: u32,
    /// The provider that ran the unit.
    pub provider: String,
    pub level: String,
    pub message: String,
    pub at_ms: i64,
}

/// A page of a job's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct JobLogs {
    pub lines: Vec<JobLogLine>,
    /// Pass as `after` for the next page.
    pub next: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HeartbeatReply {
    /// Leases this provider holds that the market extended.
    pub leases_extended: u64,
    /// Leases the heartbeat named that the market no longer runs (their
    /// job was cancelled, or they lapsed or were decided without them):
    /// stop them, their results will not be taken.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ProviderInfo {
    pub id: String,
    pub capabilities: Capabilities,
    /// The ask in force (its device class's, when it named one).
    pub ask: Ask,
    /// What its card is, as prices are grouped ([`GpuDevice::class`]).
    #[serde(default)]
    pub device_class: String,
    pub max_concurrent: u32,
    pub online: bool,
    pub last_heartbeat_ms: i64,
    pub telemetry: Heartbeat,
    /// Mean of the Beta reputation (0..1).
    pub reputation: f64,
    pub units_done: u64,
}

/// A package category and how many packages it has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Category {
    pub name: String,
    pub packages: u64,
}

/// What a provider did over time, in equal buckets (oldest first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ProviderActivity {
    pub provider: String,
    pub bucket_ms: i64,
    pub max_concurrent: u32,
    pub buckets: Vec<ActivityBucket>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ActivityBucket {
    pub start_ms: i64,
    /// Results returned (any outcome).
    pub units: u64,
    /// Credits paid to the provider for leases started in this bucket.
    pub earned: u64,
    /// Share of the provider's slots busy (0..1).
    pub utilization: f64,
}

/// Per-unit limits a buyer asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UnitLimits {
    pub fuel: u64,
    pub memory_bytes: u64,
    pub timeout_ms: u64,
    /// The unit needs a GPU.
    pub gpu: bool,
}

/// The operator vouches for a provider key (its own host): trusted from
/// the start, still spot-checked, and trusted only while its record holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Vouch {
    pub provider: String,
}

/// A canary unit (operator only): known-answer work the market gives new
/// providers as if it were a buyer's, to measure their honesty. The answer
/// must be exact: an input every honest implementation computes bit for bit
/// (integers in f32, say), because a canary is judged by the output digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AddCanary {
    pub package: String,
    pub version: String,
    pub input_base64: String,
    pub expected_output_base64: String,
    pub limits: UnitLimits,
}

/// A stored canary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CanaryInfo {
    pub id: String,
    pub package: String,
    pub version: String,
    pub input_digest: String,
    pub output_digest: String,
}

/// Begin uploading a blob, or resume its upload: its blake3 digest, its
/// size, and the value of each of its chunks of [`UploadInfo::chunk_bytes`]
/// (`agora_wire::chunks`; hex, in order), which must make the digest. Each
/// chunk is then checked against its value as it arrives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct NewUpload {
    pub digest: String,
    pub size: u64,
    pub chunk_values: Vec<String>,
}

/// An upload under way, or a blob the caller holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UploadInfo {
    pub digest: String,
    pub size: u64,
    /// The upload's id (`PUT /api/v1/uploads/{upload}/chunks/{index}`);
    /// none once the blob is stored.
    pub upload: Option<String>,
    pub chunk_bytes: u64,
    /// The chunks not received yet, in order.
    pub missing: Vec<u64>,
    /// The blob is stored and the caller holds it: a job may name it.
    pub stored: bool,
}

/// A chunk received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ChunkReceived {
    pub index: u64,
    /// Chunks of the upload still missing.
    pub missing: u64,
}

/// What an account stores: the blobs it holds (a page of them, newest
/// first) and its quota.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Storage {
    /// Bytes held and being uploaded.
    pub used_bytes: u64,
    /// What the account may hold now: the market's quota per account, or
    /// less for an account with few credits.
    pub quota_bytes: u64,
    pub blobs: Vec<HeldBlob>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HeldBlob {
    pub digest: String,
    pub size: u64,
    pub created_at_ms: i64,
}

/// Submit a job: a package version run once per input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SubmitJob {
    pub package: String,
    /// The latest version when omitted.
    pub version: Option<String>,
    /// One work unit per input (standard base64).
    #[serde(default)]
    pub inputs_base64: Vec<String>,
    /// One work unit per blob the buyer uploaded (by digest; a unit's
    /// input is at most `MAX_UNIT_BYTES`), after those of `inputs_base64`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_digests: Vec<String>,
    /// Blobs every unit reads by name (`data.shared(name)`, contract
    /// 0.1.1): name → digest of a blob the buyer uploaded.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub shared: std::collections::BTreeMap<String, String>,
    pub limits: UnitLimits,
    /// The most the whole job may cost, in credits (held in escrow).
    pub max_price: u64,
    /// Providers that must agree on each unit's output (at least 1).
    pub replicas: u32,
    /// What a provider's GPU must be to lease the units (implies
    /// `limits.gpu`); a job no online provider meets is refused at submit.
    #[serde(default, skip_serializing_if = "GpuRequirements::is_empty")]
    pub requirements: GpuRequirements,
    /// Which providers may run the units.
    #[serde(default, skip_serializing_if = "ProviderFilter::is_empty")]
    pub providers: ProviderFilter,
    /// How long the job may run before it expires (ms; its unfinished
    /// units fail and the rest of its escrow is refunded): at most
    /// [`crate::limits::MAX_JOB_DEADLINE_MS`], a day when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// How the job's units are retried when a run fails.
    #[serde(default, skip_serializing_if = "RetryPolicy::is_empty")]
    pub retry: RetryPolicy,
    /// The buyer's bid, in percent of each provider's ask: the queue
    /// serves higher bids first, and a run is paid the provider's ask times
    /// the bid in force (never past the unit's cap): this bid, or the
    /// highest below it that the cap pays at the median trusted provider's
    /// ask (the job's `priority`). From
    /// [`crate::limits::MIN_BID_PERCENT`] (the ask itself, the default) to
    /// [`crate::limits::MAX_BID_PERCENT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bid_percent: Option<u32>,
}

/// How a job's units are retried. Identities are free, so no policy lets a
/// provider's word alone end a unit: a unit fails for good only on the
/// counted failures (of providers trusted at their grant, believable) the
/// market's rules require, an operator-vouched host among them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Failed runs a unit may have (anyone's) before only the operator's
    /// vouched hosts run it, and the counted failures that fail it for
    /// good: 1 to [`crate::limits::MAX_UNIT_ATTEMPTS`] (3, the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// `false`: a unit that fails on its own (a trap, an error, a limit)
    /// on a vouched host fails for good at once instead of being retried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_own_failures: Option<bool>,
    /// How long a unit waits after a failed run before it is leased again,
    /// doubled with each failure, at most
    /// [`crate::limits::MAX_RETRY_BACKOFF_MS`] (0 when omitted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
}

impl RetryPolicy {
    pub fn is_empty(&self) -> bool {
        *self == RetryPolicy::default()
    }
}

/// What one GPU of a provider must be for a job's units: every field a
/// minimum or an exact match, all met by the same device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct GpuRequirements {
    /// Device memory at least this (only CUDA devices report theirs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// `vulkan`, `metal`, `dx12`, `gl` or `cuda`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// `discrete-gpu`, `integrated-gpu`, `virtual-gpu` or `cpu` (a software
    /// adapter such as llvmpipe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    /// CUDA compute capability at least this (`major.minor`, `8.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_capability: Option<String>,
    /// A measured fp32 matmul speed at least this, in GFLOPS
    /// ([`GpuDevice::gflops`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_gflops: Option<u32>,
}

impl GpuRequirements {
    pub fn is_empty(&self) -> bool {
        *self == GpuRequirements::default()
    }
}

/// The providers a buyer accepts for a job.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ProviderFilter {
    /// Only providers whose reputation (0..1) is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_reputation: Option<f64>,
    /// Only these providers (none: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Never these providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

impl ProviderFilter {
    pub fn is_empty(&self) -> bool {
        *self == ProviderFilter::default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    Running,
    Done,
    Failed,
    Expired,
    /// Its buyer stopped it (`POST /api/v1/jobs/{id}/cancel`): what was
    /// accepted before stays paid, runs stopped are paid their time, and
    /// the rest of the escrow went back to the buyer.
    Cancelled,
}

text_forms!(JobState { Running => "running", Done => "done", Failed => "failed", Expired => "expired", Cancelled => "cancelled" });

/// Where a unit is, as buyers see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum UnitState {
    /// Waiting for a provider.
    Queued,
    /// A provider runs it.
    Running,
    /// A result is in and the market is checking it with the package's
    /// `verify`.
    Verifying,
    /// Its output is decided.
    Verified,
    Failed,
}

text_forms!(UnitState { Queued => "queued", Running => "running", Verifying => "verifying", Verified => "verified", Failed => "failed" });

/// Where a lease is, as the market stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum LeaseState {
    /// The provider runs it.
    Active,
    /// Its result is in, waiting for the unit's decision.
    Submitted,
    /// Its result waits for the market's verifiers (`verify`).
    Verifying,
    /// Its result is the unit's (or agrees with it): paid.
    Accepted,
    /// A failed run billed as the job's own failure, or a run its buyer
    /// stopped by cancelling the job (paid the time it ran): paid.
    Billed,
    /// Its run failed, or the market could not verify its result.
    Failed,
    /// Its output lost the unit's decision or failed `verify`.
    Rejected,
    /// It lapsed, or its job ended first.
    Expired,
    /// A late replica of a unit decided without it.
    Cancelled,
}

text_forms!(LeaseState {
    Active => "active",
    Submitted => "submitted",
    Verifying => "verifying",
    Accepted => "accepted",
    Billed => "billed",
    Failed => "failed",
    Rejected => "rejected",
    Expired => "expired",
    Cancelled => "cancelled",
});

impl LeaseState {
    /// Whether the market pays the lease.
    pub fn is_paid_work(self) -> bool {
        matches!(self, LeaseState::Accepted | LeaseState::Billed)
    }
}

impl UnitState {
    /// Whether the unit's outcome is decided.
    pub fn is_final(self) -> bool {
        matches!(self, UnitState::Verified | UnitState::Failed)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UnitInfo {
    pub index: u32,
    pub state: UnitState,
    pub attempts: u32,
    pub output_digest: Option<String>,
    pub output_bytes: Option<u64>,
    /// The decided result's named outputs (`GET
    /// /api/v1/jobs/{job}/units/{unit}/outputs/{name}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<NamedOutput>,
    pub cost: Option<u64>,
    pub message: Option<String>,
    /// The latest progress a running replica reported.
    #[serde(default)]
    pub progress: Option<Progress>,
}

/// Units a job info carries when the reader does not say: a whole job can
/// have 10,000, and an event stream sends its job info on every change.
pub const UNITS_PER_PAGE: u32 = 100;
/// Most units one job info carries (`?units_limit=`): the rest are read a
/// page at a time, so no read of a job is larger than this.
pub const MAX_UNITS_PER_PAGE: u32 = 1_000;

/// Which page of a job's units to read (`GET /api/v1/jobs/{job}`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitsQuery {
    /// The first unit's index.
    #[serde(default)]
    pub units_from: u32,
    /// How many units, at most; [`UNITS_PER_PAGE`] when not given, never
    /// more than [`MAX_UNITS_PER_PAGE`].
    #[serde(default)]
    pub units_limit: Option<u32>,
}

impl UnitsQuery {
    /// The page starting at unit `from`, as long as the market allows.
    pub fn from(from: u32) -> Self {
        UnitsQuery {
            units_from: from,
            units_limit: Some(MAX_UNITS_PER_PAGE),
        }
    }

    /// How many units the page holds at most.
    pub fn limit(&self) -> u32 {
        self.units_limit
            .unwrap_or(UNITS_PER_PAGE)
            .clamp(1, MAX_UNITS_PER_PAGE)
    }

    /// The query string that asks for this page.
    pub fn to_query(&self) -> String {
        format!(
            "units_from={}&units_limit={}",
            self.units_from,
            self.limit()
        )
    }
}

/// How many of a job's units are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UnitCounts {
    pub total: u32,
    pub queued: u32,
    pub running: u32,
    pub verifying: u32,
    pub verified: u32,
    pub failed: u32,
}

impl UnitCounts {
    /// Units whose outcome is decided.
    pub fn finished(&self) -> u32 {
        self.verified + self.failed
    }

    /// `n` more units in `state`.
    pub fn count(&mut self, state: UnitState, n: u32) {
        self.total += n;
        *match state {
            UnitState::Queued => &mut self.queued,
            UnitState::Running => &mut self.running,
            UnitState::Verifying => &mut self.verifying,
            UnitState::Verified => &mut self.verified,
            UnitState::Failed => &mut self.failed,
        } += n;
    }
}

/// Where a job's credits went.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CostBreakdown {
    pub held: u64,
    pub paid_to_providers: u64,
    pub fees: u64,
    pub refunded: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct JobInfo {
    pub id: String,
    pub buyer: String,
    pub package: String,
    pub version: String,
    pub digest: String,
    pub state: JobState,
    pub replicas: u32,
    pub max_price: u64,
    /// One page of the units, in index order: from `?units_from=` (0 by
    /// default), at most `?units_limit=` ([`UNITS_PER_PAGE`] by default,
    /// [`MAX_UNITS_PER_PAGE`] at most).
    pub units: Vec<UnitInfo>,
    /// How many units the job has in each state, all pages together.
    #[serde(default)]
    pub unit_counts: UnitCounts,
    /// Where the next page of units starts, when there is one.
    #[serde(default)]
    pub units_next: Option<u32>,
    pub cost: CostBreakdown,
    pub created_at_ms: i64,
    /// When the job expires if unfinished (its deadline).
    #[serde(default)]
    pub expires_at_ms: i64,
    /// How its units are retried (every field filled).
    #[serde(default)]
    pub retry: RetryPolicy,
    /// The buyer's bid, in percent of each provider's ask, as submitted.
    #[serde(default = "default_bid_percent")]
    pub bid_percent: u32,
    /// The bid in force, which orders the queue (higher first) and is what
    /// its runs are paid (ask times this, at least the ask): the highest
    /// bid, up to its own, at which its cap paid the median trusted online
    /// provider's ask when it was submitted, or 0 when it paid not even
    /// that ask (it waits behind every unit that can pay).
    #[serde(default = "default_bid_percent")]
    pub priority: u32,
    /// When the job's inputs, outputs and logs were deleted (by its buyer,
    /// or at the end of the market's retention period).
    #[serde(default)]
    pub data_deleted_at_ms: Option<i64>,
    /// When the market deletes them, for a job that has ended.
    #[serde(default)]
    pub data_kept_until_ms: Option<i64>,
    /// The blobs every unit reads by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<SharedBlob>,
}

fn default_bid_percent() -> u32 {
    crate::limits::MIN_BID_PERCENT
}

/// A job in a buyer's list (`GET /api/v1/jobs`): what a line of it shows,
/// read in one query; `GET /api/v1/jobs/{id}` has the rest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct JobSummary {
    pub id: String,
    pub package: String,
    pub version: String,
    pub state: JobState,
    pub units: u32,
    pub units_verified: u32,
    pub max_price: u64,
    pub created_at_ms: i64,
}

/// A job's data deleted (`DELETE /api/v1/jobs/{job}/data`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DataDeleted {
    pub job: String,
    pub deleted_at_ms: i64,
}

/// A unit leased to a provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LeaseGrant {
    pub lease_id: String,
    pub job_id: String,
    pub unit: u32,
    pub package: String,
    pub version: String,
    pub digest: String,
    pub input_digest: String,
    pub limits: UnitLimits,
    pub expires_at_ms: i64,
    /// The job's shared inputs: blobs every unit reads by name, fetched by
    /// digest (`GET /api/v1/blobs/{digest}`) while the lease runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<SharedBlob>,
}

/// A blob every unit of a job reads by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SharedBlob {
    pub name: String,
    pub digest: String,
    pub size: u64,
}

/// A provider's result for a lease. `signature` is the provider's over
/// Which limit stopped a run (the host names it; reputation reads it,
/// never the words of a message).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum LimitKind {
    Fuel,
    Timeout,
    Memory,
    Table,
    Instances,
    Stack,
    Output,
    HostcallData,
    ComponentSize,
    CompileTime,
}

impl LimitKind {
    /// The flag or constant a user looks for.
    pub fn name(self) -> &'static str {
        match self {
            LimitKind::Fuel => "fuel",
            LimitKind::Timeout => "timeout",
            LimitKind::Memory => "max-memory-size",
            LimitKind::Table => "table elements (MAX_TABLE_ELEMENTS)",
            LimitKind::Instances => "instances (MAX_INSTANCES)",
            LimitKind::Stack => "wasm stack (MAX_WASM_STACK_BYTES)",
            LimitKind::Output => "output bytes",
            LimitKind::HostcallData => "host-call data (MAX_HOSTCALL_BYTES)",
            LimitKind::ComponentSize => "component size (MAX_COMPONENT_BYTES)",
            LimitKind::CompileTime => "compile time (COMPILE_TIMEOUT)",
        }
    }
}

/// How a unit's run ended, as its provider reports it. The string forms
/// (`ok`, `job-error`, ...) are what results are signed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum RunOutcome {
    Ok,
    /// `run` returned an error.
    JobError,
    /// A limit stopped the run ([`ResultReport::limit`] says which).
    LimitExceeded,
    Trap,
    /// The component was refused before it ran.
    Refused,
    /// The worker died or was killed (a crash, a hung device).
    WorkerLost,
}

text_forms!(RunOutcome {
    Ok => "ok",
    JobError => "job-error",
    LimitExceeded => "limit-exceeded",
    Trap => "trap",
    Refused => "refused",
    WorkerLost => "worker-lost",
});

/// [`ResultReport::signed_bytes`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ResultReport {
    pub outcome: RunOutcome,
    /// Which limit, when the outcome is `limit-exceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<LimitKind>,
    pub message: Option<String>,
    /// The output (standard base64) when the outcome is ok.
    pub output_base64: Option<String>,
    pub output_digest: Option<String>,
    pub fuel_used: u64,
    pub gpu_time_us: u64,
    pub peak_memory_bytes: u64,
    pub signature: String,
    /// Log lines not yet sent with a heartbeat.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogLine>,
    /// The unit's named outputs (`data.output`), in name order, each
    /// uploaded under the lease like the main output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<NamedOutput>,
}

/// One named output of a result: a blob uploaded under its lease
/// (`PUT /api/v1/leases/{lease}/outputs/{digest}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct NamedOutput {
    pub name: String,
    pub digest: String,
    pub bytes: u64,
}

impl ResultReport {
    /// What the provider signs: the lease, the output digest, its named
    /// outputs (name order) and the usage it is paid for.
    pub fn signed_bytes(
        lease_id: &str,
        outcome: RunOutcome,
        output_digest: Option<&str>,
        outputs: &[NamedOutput],
        fuel_used: u64,
        gpu_time_us: u64,
    ) -> Vec<u8> {
        let mut signed = format!(
            "agora-result-v1\n{lease_id}\n{outcome}\n{}\n{fuel_used}\n{gpu_time_us}",
            output_digest.unwrap_or("-")
        );
        // A result without named outputs signs what it always did.
        for o in outputs {
            signed.push_str(&format!("\noutput {} {} {}", o.name, o.digest, o.bytes));
        }
        signed.into_bytes()
    }
}

/// Live market figures and the suggested price.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct MarketStats {
    pub providers_online: u64,
    pub gpus_online: u64,
    /// Replica slots open across running jobs.
    pub queued_units: u64,
    pub running_units: u64,
    /// Concurrent units the online providers accept.
    pub capacity: u64,
    /// The going rate (the median of recent trades, all classes together,
    /// one reputation-weighted vote per provider; before any trade, the
    /// median ask of the trusted providers online), scaled by utilization
    /// (queue depth against capacity): what a new job should offer to be
    /// picked up soon.
    pub suggested_ask: Ask,
    /// The going rate per device class, from recent trades.
    #[serde(default)]
    pub prices: Vec<ClassPrice>,
}

/// What runs on one class of device cost lately: each rate the median of
/// the trades the market accepted in its price window (what they were
/// paid: asks times bids), one vote per provider weighted by its
/// reputation, and trades of providers not trusted at their grant not
/// counted (a flock of fresh keys moves no price).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ClassPrice {
    /// [`GpuDevice::class`], or `cpu`.
    pub class: String,
    /// The rates paid (asks times bids).
    pub rate: Ask,
    /// Trades counted.
    pub trades: u64,
    /// Providers of this class online now and trusted (fresh keys name
    /// their own class, so they are not counted).
    pub trusted_online: u64,
}

#[cfg(test)]
mod text_form_tests {
    use super::*;

    /// The one table of text forms agrees with serde's, which the wire and
    /// result signatures use.
    fn agrees<
        T: Serialize
            + Copy
            + std::fmt::Display
            + std::str::FromStr<Err = UnknownState>
            + PartialEq
            + std::fmt::Debug,
    >(
        all: &[T],
    ) {
        for v in all {
            assert_eq!(
                serde_json::to_value(v).unwrap(),
                serde_json::Value::String(v.to_string())
            );
            assert_eq!(v.to_string().parse::<T>().unwrap(), *v);
        }
    }

    #[test]
    fn text_forms_are_serde_forms() {
        agrees(TransferState::ALL);
        agrees(JobState::ALL);
        agrees(UnitState::ALL);
        agrees(LeaseState::ALL);
        agrees(UnitKinds::ALL);
        agrees(RunOutcome::ALL);
        assert_eq!(
            "paid".parse::<LeaseState>(),
            Err(UnknownState {
                what: "LeaseState",
                text: "paid".into()
            })
        );
    }
}

/// `GET /api/v1/health`: the market is up, and the origins a signed request
/// to it may name (`agora_wire::auth`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Health {
    pub ok: bool,
    pub origins: Vec<String>,
}
