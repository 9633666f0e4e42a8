//! The JSON types of the market's HTTP API (`/api/v1`), and its errors.
//!
//! Amounts are integer credits (`u64` on the wire, never floats).

use crate::keys::KeyId;
use crate::log::LogEntry;
use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

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
    pub const INSUFFICIENT_FUNDS: &str = "insufficient_funds";
    pub const TRANSFER_CONFLICT: &str = "transfer_conflict";
    pub const IDEMPOTENCY_MISMATCH: &str = "idempotency_mismatch";
    pub const NOT_PENDING: &str = "not_pending";
    pub const VERSION_EXISTS: &str = "version_exists";
    pub const NAME_TAKEN: &str = "name_taken";
    pub const BAD_PACKAGE: &str = "bad_package";
    pub const BAD_LOG: &str = "bad_log";
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
