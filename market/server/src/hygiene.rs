//! What every mutating request goes through, in order: signature check
//! (key, timestamp, body digest), per-key rate limit, replay refusal (the
//! nonce is stored), idempotency key (the first response is stored and
//! returned again), the handler, and an audit record; and how long the
//! nonces, stored responses and audit records are kept.
//!
//! Design choice: a request that fails authentication (or its key's rate)
//! writes nothing to the database: it is counted
//! (`agora_market_unauthenticated_requests_total`) and refused, so a flood
//! of unsigned, forged or replayed requests costs the market no fsync.
//! Keys are free, addresses are not: before any of this, every request
//! (signed or not, API or web page) counts against its peer address's rate
//! ([`limit_peers`]), so a flood of fresh keys or anonymous reads from one
//! place is refused without touching the database.

use crate::AppState;
use crate::error::ApiError;
use agora_wire::KeyId;
use agora_wire::auth::{self, AuthError};
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sqlx::Row;
use std::future::Future;

/// How long a stored idempotent response answers a retry: clients retry
/// within minutes; a day covers a retry after an outage on either side.
pub const IDEMPOTENCY_RETENTION_MS: i64 = 24 * 3600 * 1000;
/// How long audit records are kept: a quarter for an operator to look
/// back on who did what, bounded so the table does not grow for ever.
pub const AUDIT_RETENTION_MS: i64 = 90 * 24 * 3600 * 1000;

/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;
/// How long a claimed idempotency key may stay "running" before a retry
/// takes it over: past any request's timeout, so only a crashed request's
/// claim is ever taken.
pub const IDEMPOTENCY_CLAIM_MS: i64 = 2 * crate::REQUEST_TIMEOUT.as_millis() as i64;

/// Requests per second one peer address (an IPv6 /64) may make, bursts up
/// to twice that: far above what a buyer's browser, the CLI or a host with
/// dozens of units needs, far below what it takes to keep a market busy.
/// Loopback is exempt: the web pages read the API over it, and a proxy in
/// front of the market (which then sees one address) limits per client.
/// `agora market serve --peer-rate` sets it; 0 turns it off.
pub const PEER_REQUESTS_PER_SECOND: u32 = 100;

/// `per_second` requests a second (at least one), in bursts of up to twice
/// that: the shape of both the per-key and the per-address limits.
pub(crate) fn quota(per_second: u32) -> governor::Quota {
    let rate = std::num::NonZeroU32::new(per_second.max(1)).expect("positive");
    governor::Quota::per_second(rate)
        .allow_burst(rate.saturating_mul(std::num::NonZeroU32::new(2).expect("two")))
}

/// Refuse a request past its peer's rate (429), before anything else runs.
/// The peer is the connection's address ([`crate::edge::peer_of`]); a
/// request without one (in-process) or from loopback passes.
pub async fn limit_peers(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(peer) =
        peer.filter(|p| !p.to_canonical().is_loopback() && state.config.peer_rate_per_second > 0)
        && state
            .peer_limiter
            .check_key(&crate::edge::peer_of(peer))
            .is_err()
    {
        state.metrics.peer_limited.inc();
        return ApiError::RateLimited {
            per_second: state.config.peer_rate_per_second,
            per: "address",
        }
        .into_response();
    }
    next.run(request).await
}

/// Event streams one key may hold open: a buyer's tabs and CLI following a
/// few jobs each. Keys are free, so [`MAX_EVENT_STREAMS`] bounds them all.
pub const MAX_STREAMS_PER_KEY: usize = 8;
/// Event streams open at once on one market process: streams of one job
/// share its poller (`feeds`), which reads the job (O(units + leases)) every
/// `EVENT_POLL_INTERVAL` (250 ms), so this bounds those reads at about
/// 4,000 jobs a second even when every stream watches another job.
pub const MAX_EVENT_STREAMS: usize = 1024;

/// A refused mutation's status and body; an internal error's detail is
/// logged here (the body never carries it).
fn refusal(e: &ApiError) -> (StatusCode, String) {
    if let ApiError::Internal(detail) = e {
        tracing::error!("internal error: {detail}");
    }
    (
        e.status_and_code().0,
        serde_json::to_string(&e.body()).expect("plain JSON"),
    )
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Refuse a mutation whose signature headers are missing, malformed or
/// stale before its body is read (the handler's extractor reads it): an
/// unsigned 64 MiB upload costs the market a header parse, not the upload.
/// Counted like any refusal. Reads carry no body and pass through.
pub async fn signed_before_body(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    if let Err(e) = auth::check_headers(|name| header(request.headers(), name), state.now_ms()) {
        state.metrics.unauthenticated.inc();
        return ApiError::Unauthenticated(e.to_string()).into_response();
    }
    next.run(request).await
}

impl AppState {
    /// Count an event stream for `key` ([`crate::tally`]), or refuse it past
    /// [`MAX_STREAMS_PER_KEY`] or [`MAX_EVENT_STREAMS`]; the operator's are
    /// not counted, so no flock of keys shuts it out. The slot gives the
    /// stream's share back when dropped (it ended or its client went away).
    pub(crate) fn open_stream(
        &self,
        key: &KeyId,
    ) -> Result<Option<crate::tally::Slot<KeyId>>, ApiError> {
        if *key == self.config.operator {
            return Ok(None);
        }
        let slot = self
            .streams
            .enter(key, MAX_STREAMS_PER_KEY, MAX_EVENT_STREAMS)
            .map_err(|refused| match refused {
                crate::tally::Refused::PerKey => ApiError::TooManyAtOnce {
                    what: "event streams open",
                    limit: MAX_STREAMS_PER_KEY,
                    per: "key",
                },
                crate::tally::Refused::InAll => ApiError::TooManyAtOnce {
                    what: "event streams open",
                    limit: MAX_EVENT_STREAMS,
                    per: "market process",
                },
            })?;
        Ok(Some(slot))
    }

    /// Check a request's signature, rate and nonce; the signer's key.
    /// A refusal is counted, and nothing is written for it.
    pub async fn authenticate(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<KeyId, ApiError> {
        let checked = self.check_signer(method, uri, headers, body).await;
        if matches!(
            checked,
            Err(ApiError::Unauthenticated(_) | ApiError::RateLimited { .. })
        ) {
            self.metrics.unauthenticated.inc();
        }
        checked
    }

    async fn check_signer(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<KeyId, ApiError> {
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let now = self.now_ms();
        let signer = auth::verify_request(
            &self.config.public_origins,
            method.as_str(),
            path,
            |name| header(headers, name),
            body,
            now,
        )
        .map_err(|e| ApiError::Unauthenticated(e.to_string()))?;
        if self.limiter.check_key(&signer.key).is_err() {
            return Err(ApiError::RateLimited {
                per_second: self.config.rate_per_second,
                per: "key",
            });
        }
        let inserted =
            sqlx::query("INSERT INTO nonces (key_id, nonce, seen_at_ms) VALUES ($1, $2, $3)")
                .bind(signer.key.as_str())
                .bind(&signer.nonce)
                .bind(now)
                .execute(&self.db.pool)
                .await;
        match inserted {
            Ok(_) => Ok(signer.key),
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                Err(ApiError::Unauthenticated(AuthError::Replayed.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Run a mutation with the full hygiene above; `op` gets the signer.
    ///
    /// The work runs detached ([`crate::detached`]): a client that goes
    /// away mid-request (a dropped connection, a timeout) never leaves a
    /// transaction half-driven; it finishes or fails whole. At most
    /// [`crate::MAX_MUTATIONS_IN_FLIGHT`] run at once.
    pub async fn mutate<T, F, Fut>(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
        op: F,
    ) -> Response
    where
        T: Serialize + Send + 'static,
        F: FnOnce(KeyId, Bytes) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(StatusCode, T), ApiError>> + Send + 'static,
    {
        let Ok(permit) = self.mutations.clone().try_acquire_owned() else {
            return ApiError::Busy.into_response();
        };
        let this = self.clone();
        let task = self.in_flight.run(async move {
            let _permit = permit;
            this.mutate_here(method, uri, headers, body, op).await
        });
        match task.await {
            Ok(response) => response,
            Err(e) => ApiError::Internal(format!("request task: {e}")).into_response(),
        }
    }

    async fn mutate_here<T, F, Fut>(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
        op: F,
    ) -> Response
    where
        T: Serialize,
        F: FnOnce(KeyId, Bytes) -> Fut,
        Fut: Future<Output = Result<(StatusCode, T), ApiError>>,
    {
        let digest = blake3::hash(&body).to_hex().to_string();
        let path = uri.path().to_string();
        let key = match self.authenticate(&method, &uri, &headers, &body).await {
            Ok(key) => key,
            Err(e) => return e.into_response(),
        };
        let idempotency = header(&headers, auth::HEADER_IDEMPOTENCY_KEY).map(str::to_string);
        let (status, json) = match &idempotency {
            Some(idem) => match self
                .idempotent(&key, idem, &digest, op(key.clone(), body))
                .await
            {
                Ok(stored) => stored,
                Err(e) => refusal(&e),
            },
            None => match op(key.clone(), body).await {
                Ok((status, value)) => (status, serde_json::to_string(&value).expect("plain JSON")),
                Err(e) => refusal(&e),
            },
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(%path, "mutation failed: {json}");
        }
        self.audit(key.as_str(), &method, &path, status, &digest)
            .await;
        (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response()
    }

    /// The stored response for (key, idempotency key), or run `op` and store
    /// its response (errors included, except internal ones, so a retry
    /// after a server fault runs again).
    async fn idempotent<T: Serialize>(
        &self,
        key: &KeyId,
        idem: &str,
        digest: &str,
        op: impl Future<Output = Result<(StatusCode, T), ApiError>>,
    ) -> Result<(StatusCode, String), ApiError> {
        if idem.is_empty() || idem.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(ApiError::Invalid(format!(
                "an idempotency key is 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes"
            )));
        }
        // Claim the key first (status 0: running), so two concurrent
        // requests with one key never both run: the second gets the first's
        // response, or 409 while it runs. A claim older than
        // IDEMPOTENCY_CLAIM_MS was left by a crash and is taken over.
        let now = self.now_ms();
        sqlx::query("DELETE FROM idempotency WHERE key_id = $1 AND idem_key = $2 AND status = 0 AND created_at_ms < $3")
            .bind(key.as_str())
            .bind(idem)
            .bind(now - IDEMPOTENCY_CLAIM_MS)
            .execute(&self.db.pool)
            .await?;
        let claimed = sqlx::query(
            "INSERT INTO idempotency (key_id, idem_key, request_digest, status, response, created_at_ms) VALUES ($1, $2, $3, 0, '', $4)
             ON CONFLICT (key_id, idem_key) DO NOTHING",
        )
        .bind(key.as_str())
        .bind(idem)
        .bind(digest)
        .bind(now)
        .execute(&self.db.pool)
        .await?;
        if claimed.rows_affected() != 1 {
            return match self.stored_response(key, idem, digest).await? {
                Some(stored) => Ok(stored),
                None => Err(ApiError::IdempotencyInProgress(idem.into())),
            };
        }
        let (status, json) = match op.await {
            Ok((status, value)) => (status, serde_json::to_string(&value).expect("plain JSON")),
            Err(e @ ApiError::Internal(_)) => {
                // A retry after a server fault runs again.
                let _ = sqlx::query(
                    "DELETE FROM idempotency WHERE key_id = $1 AND idem_key = $2 AND status = 0",
                )
                .bind(key.as_str())
                .bind(idem)
                .execute(&self.db.pool)
                .await;
                return Err(e);
            }
            Err(e) => (
                e.status_and_code().0,
                serde_json::to_string(&e.body()).expect("plain JSON"),
            ),
        };
        sqlx::query(
            "UPDATE idempotency SET status = $1, response = $2 WHERE key_id = $3 AND idem_key = $4",
        )
        .bind(status.as_u16() as i64)
        .bind(&json)
        .bind(key.as_str())
        .bind(idem)
        .execute(&self.db.pool)
        .await?;
        Ok((status, json))
    }

    async fn stored_response(
        &self,
        key: &KeyId,
        idem: &str,
        digest: &str,
    ) -> Result<Option<(StatusCode, String)>, ApiError> {
        let row = sqlx::query("SELECT request_digest, status, response FROM idempotency WHERE key_id = $1 AND idem_key = $2")
            .bind(key.as_str())
            .bind(idem)
            .fetch_optional(&self.db.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        if row.try_get::<String, _>("request_digest")? != digest {
            return Err(ApiError::IdempotencyMismatch(idem.into()));
        }
        if row.try_get::<i64, _>("status")? == 0 {
            return Ok(None); // still running
        }
        let status =
            StatusCode::from_u16(row.try_get::<i64, _>("status")? as u16).unwrap_or(StatusCode::OK);
        Ok(Some((status, row.try_get("response")?)))
    }

    async fn audit(
        &self,
        key: &str,
        method: &Method,
        path: &str,
        status: StatusCode,
        digest: &str,
    ) {
        let result = sqlx::query(
            "INSERT INTO audit (at_ms, key_id, method, path, status, request_digest) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(self.now_ms())
        .bind(key)
        .bind(method.as_str())
        .bind(path)
        .bind(status.as_u16() as i64)
        .bind(digest)
        .execute(&self.db.pool)
        .await;
        if let Err(e) = result {
            tracing::error!("audit record lost: {e}");
        }
    }

    /// Forget nonces older than any acceptable timestamp, stored responses
    /// past [`IDEMPOTENCY_RETENTION_MS`], audit records past
    /// [`AUDIT_RETENTION_MS`], and rate-limiter state of idle keys. Each
    /// delete runs on its time index. Returns the rows deleted.
    pub async fn forget_old_records(&self) -> Result<u64, ApiError> {
        let now = self.now_ms();
        let mut deleted = 0;
        for (sql, cutoff) in [
            (
                "DELETE FROM nonces WHERE seen_at_ms < $1",
                now - 2 * auth::MAX_CLOCK_SKEW_MS,
            ),
            (
                "DELETE FROM idempotency WHERE created_at_ms < $1",
                now - IDEMPOTENCY_RETENTION_MS,
            ),
            (
                "DELETE FROM audit WHERE at_ms < $1",
                now - AUDIT_RETENTION_MS,
            ),
            // Samples of providers that stopped heartbeating (a beating
            // one forgets its own).
            (
                "DELETE FROM provider_samples WHERE at_ms < $1",
                now - crate::jobs::TELEMETRY_KEPT_MS,
            ),
        ] {
            deleted += sqlx::query(sql)
                .bind(cutoff)
                .execute(&self.db.pool)
                .await?
                .rows_affected();
        }
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        self.peer_limiter.retain_recent();
        self.peer_limiter.shrink_to_fit();
        self.metrics
            .limiter_keys
            .set((self.limiter.len() + self.peer_limiter.len()) as i64);
        Ok(deleted)
    }
}
