//! The one error type of the API, mapped to a status and a stable code in one
//! `match`. Internal errors are logged and never leak their text.

use agora_wire::api::{ErrorBody, ErrorDetail, codes};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "insufficient funds: account {account} has {available} available, {requested} requested"
    )]
    InsufficientFunds {
        account: String,
        available: u64,
        requested: u64,
    },
    #[error("transfer id `{0}` was already used for a different transfer")]
    TransferConflict(String),
    #[error("idempotency key `{0}` was already used with a different request")]
    IdempotencyMismatch(String),
    #[error("a request with idempotency key `{0}` is still running: retry for its response")]
    IdempotencyInProgress(String),
    #[error("transfer `{0}` is not a pending hold")]
    NotPending(String),
    /// A transfer id, hold or account in the market's own namespace.
    #[error("{0}")]
    Reserved(String),
    /// A value past one of the named limits (`agora_wire::limits`).
    #[error(transparent)]
    Limit(#[from] agora_wire::limits::LimitError),
    #[error("{0}")]
    VersionExists(String),
    #[error("{0}")]
    NameTaken(String),
    #[error("{0}")]
    BadPackage(String),
    #[error("{0}")]
    BadLog(String),
    /// A job's data asked for before it may go (the job is not settled).
    #[error("{0}")]
    NotYet(String),
    /// Data that was there and was deleted (by its owner or its retention).
    #[error("{0}")]
    Gone(String),
    #[error("the market is busy: retry shortly")]
    Busy,
    /// An upload past the account's storage quota.
    #[error(
        "storage quota: {used} bytes held or being uploaded, {requested} more asked, {quota} allowed (the market's quota per account, or less for an account with few credits)"
    )]
    StorageQuota {
        used: u64,
        requested: u64,
        quota: u64,
    },
    /// A chunk whose bytes are not its upload's.
    #[error("{0}")]
    ChunkMismatch(String),
    /// An upload finished with chunks missing.
    #[error(
        "{missing} chunks of the upload are missing (the first is {first}): send them, then finish it"
    )]
    Incomplete { missing: u64, first: u64 },
    #[error("too many requests: at most {per_second} per second per {per}")]
    RateLimited { per_second: u32, per: &'static str },
    /// Past a cap on what one key or address holds at once (`what`: "event
    /// streams open", "downloads in flight").
    #[error("too many {what}: at most {limit} per {per}")]
    TooManyAtOnce {
        what: &'static str,
        limit: usize,
        per: &'static str,
    },
    /// A job no online provider can run (the message says which of its
    /// requirements nobody meets).
    #[error("{0}")]
    Unsatisfiable(String),
    /// A job that ended before the request could act on it.
    #[error("job {job} already ended: it is {state}")]
    JobEnded {
        job: String,
        state: agora_wire::api::JobState,
    },
    #[error("internal error")]
    Internal(String),
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(format!("database: {e}"))
    }
}

impl ApiError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, codes::UNAUTHENTICATED),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, codes::FORBIDDEN),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, codes::NOT_FOUND),
            ApiError::Invalid(_) => (StatusCode::BAD_REQUEST, codes::INVALID),
            ApiError::InsufficientFunds { .. } => (StatusCode::CONFLICT, codes::INSUFFICIENT_FUNDS),
            ApiError::TransferConflict(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, codes::TRANSFER_CONFLICT)
            }
            ApiError::IdempotencyMismatch(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                codes::IDEMPOTENCY_MISMATCH,
            ),
            ApiError::IdempotencyInProgress(_) => {
                (StatusCode::CONFLICT, codes::IDEMPOTENCY_IN_PROGRESS)
            }
            ApiError::NotPending(_) => (StatusCode::CONFLICT, codes::NOT_PENDING),
            ApiError::Reserved(_) => (StatusCode::FORBIDDEN, codes::RESERVED),
            ApiError::Limit(_) => (StatusCode::BAD_REQUEST, codes::LIMIT),
            ApiError::VersionExists(_) => (StatusCode::CONFLICT, codes::VERSION_EXISTS),
            ApiError::NameTaken(_) => (StatusCode::FORBIDDEN, codes::NAME_TAKEN),
            ApiError::BadPackage(_) => (StatusCode::UNPROCESSABLE_ENTITY, codes::BAD_PACKAGE),
            ApiError::BadLog(_) => (StatusCode::UNPROCESSABLE_ENTITY, codes::BAD_LOG),
            ApiError::NotYet(_) => (StatusCode::CONFLICT, codes::NOT_YET),
            ApiError::Gone(_) => (StatusCode::GONE, codes::GONE),
            ApiError::Busy => (StatusCode::SERVICE_UNAVAILABLE, codes::BUSY),
            ApiError::StorageQuota { .. } => (StatusCode::FORBIDDEN, codes::STORAGE_QUOTA),
            ApiError::ChunkMismatch(_) => (StatusCode::UNPROCESSABLE_ENTITY, codes::CHUNK_MISMATCH),
            ApiError::Incomplete { .. } => (StatusCode::CONFLICT, codes::INCOMPLETE),
            ApiError::RateLimited { .. } | ApiError::TooManyAtOnce { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, codes::RATE_LIMITED)
            }
            ApiError::JobEnded { .. } => (StatusCode::CONFLICT, codes::JOB_ENDED),
            ApiError::Unsatisfiable(_) => (StatusCode::UNPROCESSABLE_ENTITY, codes::UNSATISFIABLE),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL),
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (_, code) = self.status_and_code();
        ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: self.to_string(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!("internal error: {detail}");
        }
        let (status, _) = self.status_and_code();
        (status, Json(self.body())).into_response()
    }
}

/// A JSON error body for errors raised outside handlers (body limits).
pub fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message,
            },
        }),
    )
        .into_response()
}
