//! The HTTP API (`/api/v1`): handlers, and the OpenAPI document generated
//! from them (utoipa).

use crate::AppState;
use crate::error::ApiError;
use crate::ledger::{self, Op};
use agora_wire::KeyId;
use agora_wire::api::{
    ActivityBucket, AddCanary, AppendLogRequest, Ask, Balance, BrowserBundle, BundleFile,
    CanaryInfo, Capabilities, Category, ChunkReceived, CostBreakdown, DataDeleted, ErrorBody,
    GpuDevice, Heartbeat, HeartbeatReply, HeldBlob, InvariantReport, JobInfo, JobLogLine, JobLogs,
    JobState, JobSummary, LeaseGrant, LeaseProgress, LogLine, MarketStats, MintRequest, NewUpload,
    PackageInfo, PackageSummary, Page, Progress, ProviderActivity, ProviderInfo, PublishRequest,
    RegisterProvider, ResultReport, Storage, SubmitJob, Transfer, TransferKind, TransferRequest,
    UnitCounts, UnitInfo, UnitLimits, UnitsQuery, UploadInfo, VersionInfo, Vouch,
};
use agora_wire::log::LogEntry;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Agora market API", description = "Identities, credits ledger with escrow, and the signed package registry."),
    paths(
        health, openapi_json, metrics, transfer, mint, balance, history, invariants, search, info, publish, log,
        append_log, download, browser_manifest, browser_file, register_provider, providers, heartbeat, lease, result, lease_output, submit, my_jobs, job, cancel_job, delete_job_data, unit_output, unit_named_output,
        blob, stats, job_logs, job_events, provider_activity, provider_telemetry, categories, add_canary, vouch,
        begin_upload, upload_chunk, complete_upload, cancel_upload, release_blob, storage
    ),
    components(schemas(
        ErrorBody, Balance, Transfer, TransferRequest, TransferKind, MintRequest, InvariantReport, PublishRequest,
        AppendLogRequest, VersionInfo, PackageSummary, PackageInfo, LogEntry, Page<Transfer>, Page<PackageSummary>,
        Capabilities, GpuDevice, Ask, RegisterProvider, Heartbeat, HeartbeatReply, ProviderInfo, UnitLimits, SubmitJob,
        agora_wire::api::GpuRequirements, agora_wire::api::ProviderFilter, agora_wire::api::WorkFilter, agora_wire::api::UnitKinds, agora_wire::api::DeviceTelemetry, agora_wire::api::ClassPrice, agora_wire::api::RetryPolicy, agora_wire::api::ProviderTelemetry, agora_wire::api::TelemetrySample,
        JobState, UnitInfo, UnitCounts, CostBreakdown, JobInfo, LeaseGrant, ResultReport, agora_wire::api::NamedOutput, MarketStats, JobLogs, JobLogLine,
        LeaseProgress, LogLine, Progress, ProviderActivity, ActivityBucket, Category, BrowserBundle, BundleFile,
        AddCanary, CanaryInfo, Vouch, DataDeleted, JobSummary, Page<JobSummary>, agora_wire::api::Health,
        NewUpload, UploadInfo, ChunkReceived, Storage, HeldBlob
    ))
)]
pub struct ApiDoc;

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::Invalid(format!("request body: {e}")))
}

/// A user-facing account id: a key id.
fn user_account(text: &str, what: &str) -> Result<String, ApiError> {
    KeyId::parse(text)
        .map(|k| k.to_string())
        .map_err(|e| ApiError::Invalid(format!("{what}: {e}")))
}

/// The market is up, and the origins a signed request to it may name.
#[utoipa::path(get, path = "/api/v1/health", responses((status = 200, body = agora_wire::api::Health)))]
pub async fn health(State(state): State<AppState>) -> Json<agora_wire::api::Health> {
    Json(agora_wire::api::Health {
        ok: true,
        origins: state.config.public_origins.clone(),
    })
}

#[utoipa::path(get, path = "/api/openapi.json", responses((status = 200, description = "This document")))]
pub async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        ApiDoc::openapi()
            .to_json()
            .expect("the document serializes"),
    )
        .into_response()
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.encode(),
    )
        .into_response()
}

/// Move, hold, post or void credits. The caller must own the debited
/// account (for post and void: the hold's), or be the operator.
#[utoipa::path(post, path = "/api/v1/transfers", request_body = TransferRequest,
    params(("idempotency-key" = Option<String>, Header, description = "Stored first response")),
    responses((status = 200, body = Transfer), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "insufficient funds or not pending"),
        (status = 422, body = ErrorBody, description = "id or idempotency key reused with another request")))]
pub async fn transfer(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = state.clone();
    state
        .mutate(method, uri, headers, body, |caller, body| async move {
            let request: TransferRequest = parse(&body)?;
            ledger::client_id(&request.id, "transfer id")?;
            let operator = caller == s.config.operator;
            let op = match &request.kind {
                TransferKind::Single | TransferKind::Hold { .. } => {
                    let debit = request
                        .debit
                        .clone()
                        .ok_or_else(|| ApiError::Invalid("`debit` is required".into()))?;
                    let credit = request
                        .credit
                        .clone()
                        .ok_or_else(|| ApiError::Invalid("`credit` is required".into()))?;
                    let amount = request
                        .amount
                        .ok_or_else(|| ApiError::Invalid("`amount` is required".into()))?;
                    ledger::client_id(&debit, "account")?;
                    ledger::client_id(&credit, "account")?;
                    if !operator {
                        if debit != caller.as_str() {
                            return Err(ApiError::Forbidden(
                                "you can only debit your own account".into(),
                            ));
                        }
                        user_account(&credit, "credit")?;
                    }
                    match request.kind {
                        TransferKind::Hold { timeout_ms } => Op::Hold {
                            debit,
                            credit,
                            amount,
                            timeout_ms,
                        },
                        _ => Op::Single {
                            debit,
                            credit,
                            amount,
                        },
                    }
                }
                TransferKind::Post { pending_id } | TransferKind::Void { pending_id } => {
                    ledger::client_id(pending_id, "hold")?;
                    let hold =
                        s.ledger.get(pending_id).await?.ok_or_else(|| {
                            ApiError::NotFound(format!("no transfer `{pending_id}`"))
                        })?;
                    if !operator && hold.debit != caller.as_str() {
                        return Err(ApiError::Forbidden(
                            "only the hold's debit account or the operator resolves it".into(),
                        ));
                    }
                    match &request.kind {
                        TransferKind::Post { .. } => Op::Post {
                            pending_id: pending_id.clone(),
                            amount: request.amount,
                        },
                        _ => Op::Void {
                            pending_id: pending_id.clone(),
                        },
                    }
                }
            };
            let transfer = s.ledger.execute(&request.id, &op, s.now_ms()).await?;
            s.metrics.transfers.inc();
            Ok((StatusCode::OK, transfer))
        })
        .await
}

/// Create credits (operator only), recorded as a transfer from `mint`.
#[utoipa::path(post, path = "/api/v1/mint", request_body = MintRequest,
    responses((status = 200, body = Transfer), (status = 403, body = ErrorBody)))]
pub async fn mint(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = state.clone();
    state
        .mutate(method, uri, headers, body, |caller, body| async move {
            operator_only(&s, &caller, "minting is for the operator key only")?;
            let request: MintRequest = parse(&body)?;
            ledger::client_id(&request.id, "transfer id")?;
            let account = user_account(&request.account, "account")?;
            let transfer = s
                .ledger
                .execute(
                    &request.id,
                    &Op::Mint {
                        account,
                        amount: request.amount,
                    },
                    s.now_ms(),
                )
                .await?;
            Ok((StatusCode::OK, transfer))
        })
        .await
}

/// Add a canary unit: known-answer work for new providers (operator only).
#[utoipa::path(post, path = "/api/v1/operator/canaries", request_body = AddCanary,
    responses((status = 200, body = CanaryInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn add_canary(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = state.clone();
    state
        .mutate(method, uri, headers, body, |caller, body| async move {
            operator_only(&s, &caller, "canaries are for the operator key only")?;
            let request: AddCanary = parse(&body)?;
            Ok((
                StatusCode::OK,
                s.jobs.add_canary(request, s.now_ms()).await?,
            ))
        })
        .await
}

/// Vouch for a provider key: the operator's own host, trusted from the
/// start (operator only).
#[utoipa::path(post, path = "/api/v1/operator/vouch", request_body = Vouch,
    responses((status = 200, description = "Vouched"), (status = 403, body = ErrorBody)))]
pub async fn vouch(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = state.clone();
    state
        .mutate(method, uri, headers, body, |caller, body| async move {
            operator_only(&s, &caller, "vouching is for the operator key only")?;
            let request: Vouch = parse(&body)?;
            let provider = user_account(&request.provider, "provider")?;
            s.jobs.vouch(&provider, s.now_ms()).await?;
            Ok((StatusCode::OK, serde_json::json!({ "vouched": provider })))
        })
        .await
}

/// Refuse anyone but the operator key, with `refusal` as the message.
fn operator_only(state: &AppState, caller: &KeyId, refusal: &str) -> Result<(), ApiError> {
    if *caller != state.config.operator {
        return Err(ApiError::Forbidden(refusal.into()));
    }
    Ok(())
}

/// A signed read: the caller, who must be `account`'s owner or the operator.
async fn owner_read(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    account: &str,
) -> Result<(), ApiError> {
    let caller = state.authenticate(method, uri, headers, &[]).await?;
    if caller.as_str() != account && caller != state.config.operator {
        return Err(ApiError::Forbidden(
            "only the account's owner or the operator can read it".into(),
        ));
    }
    Ok(())
}

/// Check a signed read of job `job`: by its buyer or the operator.
///
/// The caller is authenticated before the job is looked up, and a job that
/// is not the caller's answers exactly like one that does not exist, so no
/// probe tells a buyer's job from a canary's made-up id (or from nothing).
async fn job_read(
    state: &AppState,
    job: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<KeyId, ApiError> {
    let caller = state.authenticate(method, uri, headers, &[]).await?;
    let hidden = || ApiError::NotFound(format!("no job `{job}`"));
    let buyer = state.jobs.buyer_of(job).await.map_err(|e| {
        if matches!(e, ApiError::NotFound(_)) {
            hidden()
        } else {
            e
        }
    })?;
    if caller.as_str() != buyer && caller != state.config.operator {
        return Err(hidden());
    }
    Ok(caller)
}

/// An account's balances (signed GET by the owner or the operator).
#[utoipa::path(get, path = "/api/v1/accounts/{account}", params(("account" = String, Path)),
    responses((status = 200, body = Balance), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn balance(
    State(state): State<AppState>,
    Path(account): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Balance>, ApiError> {
    owner_read(&state, &method, &uri, &headers, &account).await?;
    let balance = state.ledger.balance(&account).await?.unwrap_or(Balance {
        account: account.clone(),
        credits_posted: 0,
        debits_posted: 0,
        credits_pending: 0,
        debits_pending: 0,
        available: 0,
    });
    Ok(Json(balance))
}

#[derive(Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    page: u32,
    #[serde(default = "default_per_page")]
    per_page: u32,
}

fn default_per_page() -> u32 {
    50
}

/// An account's transfers, newest first, paged.
#[utoipa::path(get, path = "/api/v1/accounts/{account}/transfers",
    params(("account" = String, Path), ("page" = Option<u32>, Query), ("per_page" = Option<u32>, Query)),
    responses((status = 200, body = Page<Transfer>), (status = 403, body = ErrorBody)))]
pub async fn history(
    State(state): State<AppState>,
    Path(account): Path<String>,
    Query(q): Query<PageQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Page<Transfer>>, ApiError> {
    owner_read(&state, &method, &uri, &headers, &account).await?;
    Ok(Json(
        state.ledger.history(&account, q.page, q.per_page).await?,
    ))
}

/// The ledger invariants, recomputed now (operator only).
#[utoipa::path(get, path = "/api/v1/operator/invariants", responses((status = 200, body = InvariantReport), (status = 403, body = ErrorBody)))]
pub async fn invariants(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<InvariantReport>, ApiError> {
    let caller = state.authenticate(&method, &uri, &headers, &[]).await?;
    operator_only(&state, &caller, "operator only")?;
    let mut report = state.ledger.check_invariants().await?;
    report.violations.extend(state.jobs.check_escrows().await?);
    report
        .violations
        .extend(state.jobs.check_verifications().await?);
    report.ok = report.violations.is_empty();
    Ok(Json(report))
}

#[derive(Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
    category: Option<String>,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    page: u32,
    #[serde(default = "default_per_page")]
    per_page: u32,
}

/// Search packages by name, description and tags.
#[utoipa::path(get, path = "/api/v1/packages",
    params(("q" = Option<String>, Query), ("category" = Option<String>, Query),
        ("sort" = Option<String>, Query, description = "downloads, recent or name"), ("page" = Option<u32>, Query), ("per_page" = Option<u32>, Query)),
    responses((status = 200, body = Page<PackageSummary>)))]
pub async fn search(
    State(state): State<AppState>,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Page<PackageSummary>>, ApiError> {
    Ok(Json(
        state
            .registry
            .search(
                q.q.as_deref(),
                q.category.as_deref(),
                &q.sort,
                q.page,
                q.per_page,
            )
            .await?,
    ))
}

/// A package: versions, digests, publisher key, WIT world summary.
#[utoipa::path(get, path = "/api/v1/packages/{name}", params(("name" = String, Path)),
    responses((status = 200, body = PackageInfo), (status = 404, body = ErrorBody)))]
pub async fn info(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<PackageInfo>, ApiError> {
    Ok(Json(state.registry.info(&name).await?))
}

/// Publish a version: the component and its signed `release` log entry.
#[utoipa::path(post, path = "/api/v1/packages/{name}/versions", params(("name" = String, Path)), request_body = PublishRequest,
    responses((status = 200, body = VersionInfo), (status = 403, body = ErrorBody, description = "name owned by another key"),
        (status = 409, body = ErrorBody, description = "version exists"), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "bad component, digest or log entry")))]
pub async fn publish(
    State(state): State<AppState>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = state.clone();
    state
        .mutate(method, uri, headers, body, |caller, body| async move {
            let request: PublishRequest = parse(&body)?;
            Ok((
                StatusCode::OK,
                s.registry
                    .publish(&caller, &name, request, s.now_ms())
                    .await?,
            ))
        })
        .await
}

/// The package's signed, hash-chained log.
#[utoipa::path(get, path = "/api/v1/packages/{name}/log", params(("name" = String, Path)),
    responses((status = 200, body = Vec<LogEntry>), (status = 404, body = ErrorBody)))]
pub async fn log(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<LogEntry>>, ApiError> {
    let log = state.registry.log(&name).await?;
    if log.is_empty() {
        return Err(ApiError::NotFound(format!("no package `{name}`")));
    }
    Ok(Json(log))
}

/// Append a yank or a key rotation, signed by the package's key.
#[utoipa::path(post, path = "/api/v1/packages/{name}/log", params(("name" = String, Path)), request_body = AppendLogRequest,
    responses((status = 200, body = LogEntry), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn append_log(
    State(state): State<AppState>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = state.clone();
    state
        .mutate(method, uri, headers, body, |caller, body| async move {
            let request: AppendLogRequest = parse(&body)?;
            Ok((
                StatusCode::OK,
                s.registry.append(&caller, &name, request.entry).await?,
            ))
        })
        .await
}

/// Download a version's component (counted).
#[utoipa::path(get, path = "/api/v1/packages/{name}/versions/{version}/component",
    params(("name" = String, Path), ("version" = String, Path)),
    responses((status = 200, description = "application/wasm; header agora-digest: blake3 hex"), (status = 404, body = ErrorBody)))]
pub async fn download(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    connection: Option<Connection>,
) -> Result<Response, ApiError> {
    let digest = state.registry.download(&name, &version).await?;
    let mut response = state
        .downloads
        .serve(
            &state.db,
            &digest,
            &headers,
            peer(connection),
            "application/wasm",
        )
        .await?;
    response.headers_mut().insert(
        header::HeaderName::from_static("agora-digest"),
        header::HeaderValue::from_str(&digest).expect("hex"),
    );
    Ok(response)
}

// ---------------------------------------------------------------- jobs

/// Register (or update) this provider: capabilities, asks, concurrency.
#[utoipa::path(post, path = "/api/v1/providers", request_body = RegisterProvider,
    responses((status = 200, description = "Registered"), (status = 401, body = ErrorBody)))]
pub async fn register_provider(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = state.clone();
    state
        .mutate(method, uri, headers, body, |caller, body| async move {
            let request: RegisterProvider = parse(&body)?;
            s.jobs.register(&caller, request, s.now_ms()).await?;
            Ok((StatusCode::OK, serde_json::json!({ "provider": caller })))
        })
        .await
}

/// Providers, online or not, with hardware, reputation and price.
#[utoipa::path(get, path = "/api/v1/providers", responses((status = 200, body = Vec<ProviderInfo>)))]
pub async fn providers(State(state): State<AppState>) -> Result<Json<Vec<ProviderInfo>>, ApiError> {
    Ok(Json(state.jobs.providers(state.now_ms()).await?))
}

/// A provider's heartbeat: telemetry in, its leases extended.
#[utoipa::path(post, path = "/api/v1/providers/heartbeat", request_body = Heartbeat,
    responses((status = 200, body = HeartbeatReply), (status = 404, body = ErrorBody)))]
pub async fn heartbeat(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = state.clone();
    state
        .mutate(method, uri, headers, body, |caller, body| async move {
            let beat: Heartbeat = parse(&body)?;
            let reply = s.jobs.heartbeat(&caller, beat, s.now_ms()).await?;
            Ok((StatusCode::OK, reply))
        })
        .await
}

/// Lease a unit this provider can run; `null` when there is none.
#[utoipa::path(post, path = "/api/v1/leases", responses((status = 200, body = Option<LeaseGrant>), (status = 400, body = ErrorBody)))]
pub async fn lease(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = state.clone();
    state
        .mutate(method, uri, headers, body, |caller, _| async move {
            Ok((StatusCode::OK, s.jobs.lease(&caller, s.now_ms()).await?))
        })
        .await
}

/// A provider's signed result for its lease.
#[utoipa::path(post, path = "/api/v1/leases/{lease}/result", params(("lease" = String, Path)), request_body = ResultReport,
    responses((status = 200, description = "Recorded"), (status = 403, body = ErrorBody, description = "not this provider's lease"),
        (status = 409, body = ErrorBody, description = "lease expired or answered")))]
pub async fn result(
    State(state): State<AppState>,
    Path(lease): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = state.clone();
    state
        .mutate(method, uri, headers, body, |caller, body| async move {
            let report: ResultReport = parse(&body)?;
            s.jobs
                .submit_result(&caller, &lease, report, s.now_ms())
                .await?;
            Ok((StatusCode::OK, serde_json::json!({ "lease": lease })))
        })
        .await
}

/// Submit a job: its cap is held in escrow until it settles.
#[utoipa::path(post, path = "/api/v1/jobs", request_body = SubmitJob,
    responses((status = 200, body = JobInfo), (status = 409, body = ErrorBody, description = "insufficient funds")))]
pub async fn submit(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = state.clone();
    state
        .mutate(method, uri, headers, body, |caller, body| async move {
            let request: SubmitJob = parse(&body)?;
            Ok((
                StatusCode::OK,
                s.jobs.submit(&caller, request, s.now_ms()).await?,
            ))
        })
        .await
}

/// The caller's jobs, newest first, paged (signed GET).
#[utoipa::path(get, path = "/api/v1/jobs", params(("page" = Option<u32>, Query), ("per_page" = Option<u32>, Query, description = "at most 100")),
    responses((status = 200, body = Page<JobSummary>), (status = 401, body = ErrorBody)))]
pub async fn my_jobs(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Page<JobSummary>>, ApiError> {
    let caller = state.authenticate(&method, &uri, &headers, &[]).await?;
    Ok(Json(
        state
            .jobs
            .jobs_of(caller.as_str(), q.page, q.per_page)
            .await?,
    ))
}

/// A job: units, states, cost breakdown (signed GET by its buyer or the operator).
#[utoipa::path(get, path = "/api/v1/jobs/{job}",
    params(("job" = String, Path), ("units_from" = Option<u32>, Query, description = "the page's first unit (0)"),
        ("units_limit" = Option<u32>, Query, description = "units in the page: 100 by default, at most 1,000")),
    responses((status = 200, body = JobInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn job(
    State(state): State<AppState>,
    Path(job): Path<String>,
    Query(page): Query<UnitsQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<JobInfo>, ApiError> {
    job_read(&state, &job, &method, &uri, &headers).await?;
    Ok(Json(state.jobs.info_page(&job, page).await?))
}

/// Cancel a job (signed by its buyer): its queued units are withdrawn, its
/// runs stopped (their providers hear it in their next heartbeat and are
/// paid the time each ran), and what it did not spend is refunded at once.
/// Cancelling a cancelled job answers the same.
#[utoipa::path(post, path = "/api/v1/jobs/{job}/cancel", params(("job" = String, Path)),
    responses((status = 200, body = JobInfo), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`job_ended`: the job is done, failed or expired")))]
pub async fn cancel_job(
    State(state): State<AppState>,
    Path(job): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = state.clone();
    state
        .mutate(method, uri, headers, body, |caller, _| async move {
            s.jobs.cancel(&caller, &job, s.now_ms()).await?;
            Ok((StatusCode::OK, s.jobs.info(&job).await?))
        })
        .await
}

/// Delete a job's inputs, outputs and logs now (signed by its buyer or the
/// operator): once the job has ended and its results are checked and paid.
/// What money needs stays: the job, its units' digests and costs.
#[utoipa::path(delete, path = "/api/v1/jobs/{job}/data", params(("job" = String, Path)),
    responses((status = 200, body = DataDeleted), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`not_yet`: the job is running or its results are still checked or paid")))]
pub async fn delete_job_data(
    State(state): State<AppState>,
    Path(job): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = state.clone();
    state
        .mutate(method, uri, headers, body, |caller, _| async move {
            // Another buyer's job answers like one that does not exist.
            let hidden = || ApiError::NotFound(format!("no job `{job}`"));
            let buyer = s.jobs.buyer_of(&job).await.map_err(|e| {
                if matches!(e, ApiError::NotFound(_)) {
                    hidden()
                } else {
                    e
                }
            })?;
            if caller.as_str() != buyer && caller != s.config.operator {
                return Err(hidden());
            }
            let deleted_at_ms = s.jobs.delete_data(&job, s.now_ms()).await?;
            Ok((StatusCode::OK, DataDeleted { job, deleted_at_ms }))
        })
        .await
}

/// Package categories with their sizes.
#[utoipa::path(get, path = "/api/v1/categories", responses((status = 200, body = Vec<Category>)))]
pub async fn categories(State(state): State<AppState>) -> Result<Json<Vec<Category>>, ApiError> {
    Ok(Json(state.registry.categories().await?))
}

#[derive(Deserialize)]
pub struct ActivityQuery {
    /// Bucket length in seconds (60 to 7 days).
    #[serde(default = "default_bucket_s")]
    bucket_s: i64,
    /// Buckets, up to now (1 to 200).
    #[serde(default = "default_buckets")]
    buckets: usize,
}

fn default_bucket_s() -> i64 {
    3600
}

fn default_buckets() -> usize {
    24
}

/// A provider's machine over its last day: free cores and its GPUs'
/// readings, a sample a minute at most.
#[utoipa::path(get, path = "/api/v1/providers/{provider}/telemetry", params(("provider" = String, Path)),
    responses((status = 200, body = agora_wire::api::ProviderTelemetry), (status = 404, body = ErrorBody)))]
pub async fn provider_telemetry(
    State(state): State<AppState>,
    Path(provider): Path<String>,
) -> Result<Json<agora_wire::api::ProviderTelemetry>, ApiError> {
    Ok(Json(state.jobs.telemetry(&provider, state.now_ms()).await?))
}

/// What a provider did over time: results, earnings, utilization.
#[utoipa::path(get, path = "/api/v1/providers/{provider}/activity", params(("provider" = String, Path), ("bucket_s" = Option<i64>, Query), ("buckets" = Option<usize>, Query)),
    responses((status = 200, body = ProviderActivity), (status = 404, body = ErrorBody)))]
pub async fn provider_activity(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    Query(q): Query<ActivityQuery>,
) -> Result<Json<ProviderActivity>, ApiError> {
    Ok(Json(
        state
            .jobs
            .activity(
                &provider,
                q.bucket_s.saturating_mul(1000),
                q.buckets,
                state.now_ms(),
            )
            .await?,
    ))
}

#[derive(Deserialize)]
pub struct LogQuery {
    /// Lines after this `seq` (0: from the start).
    #[serde(default)]
    after: i64,
    #[serde(default = "default_log_limit")]
    limit: u32,
}

fn default_log_limit() -> u32 {
    500
}

/// A job's log lines after `after` (signed GET by the buyer or the operator).
#[utoipa::path(get, path = "/api/v1/jobs/{job}/logs", params(("job" = String, Path), ("after" = Option<i64>, Query), ("limit" = Option<u32>, Query)),
    responses((status = 200, body = JobLogs), (status = 404, body = ErrorBody)))]
pub async fn job_logs(
    State(state): State<AppState>,
    Path(job): Path<String>,
    Query(q): Query<LogQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<JobLogs>, ApiError> {
    job_read(&state, &job, &method, &uri, &headers).await?;
    Ok(Json(state.jobs.logs(&job, q.after, q.limit).await?))
}

/// A job as server-sent events (signed GET by the buyer or the operator):
/// `log` events (data: a `JobLogLine`, id: its seq) and `job` events (data:
/// the `JobInfo`, sent when it changes). The stream ends after the job
/// reaches a final state. All streams of one job share its poller
/// ([`crate::feeds`]).
#[utoipa::path(get, path = "/api/v1/jobs/{job}/events", params(("job" = String, Path), ("after" = Option<i64>, Query)),
    responses((status = 200, description = "text/event-stream of `log` and `job` events"), (status = 404, body = ErrorBody)))]
pub async fn job_events(
    State(state): State<AppState>,
    Path(job): Path<String>,
    Query(q): Query<LogQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = job_read(&state, &job, &method, &uri, &headers).await?;
    let slot = state.open_stream(&caller)?;
    let feed = state.feeds.watch(&state.jobs, &job);
    let stream = crate::feeds::events(feed, state.jobs.clone(), job, q.after, slot);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// A unit's verified output (signed GET by the job's buyer or the operator).
#[utoipa::path(get, path = "/api/v1/jobs/{job}/units/{unit}/output", params(("job" = String, Path), ("unit" = u32, Path)),
    responses((status = 200, description = "The output bytes"), (status = 404, body = ErrorBody)))]
pub async fn unit_output(
    State(state): State<AppState>,
    Path((job, unit)): Path<(String, u32)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    connection: Option<Connection>,
) -> Result<Response, ApiError> {
    job_read(&state, &job, &method, &uri, &headers).await?;
    let digest = state.jobs.output_digest(&job, unit, None).await?;
    serve_output(&state, &digest, &headers, connection).await
}

/// A unit's verified named output (signed GET by the job's buyer or the
/// operator), streamed like the main one.
#[utoipa::path(get, path = "/api/v1/jobs/{job}/units/{unit}/outputs/{name}", params(("job" = String, Path), ("unit" = u32, Path), ("name" = String, Path)),
    responses((status = 200, description = "The output bytes"), (status = 404, body = ErrorBody)))]
pub async fn unit_named_output(
    State(state): State<AppState>,
    Path((job, unit, name)): Path<(String, u32, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    connection: Option<Connection>,
) -> Result<Response, ApiError> {
    job_read(&state, &job, &method, &uri, &headers).await?;
    let digest = state.jobs.output_digest(&job, unit, Some(&name)).await?;
    serve_output(&state, &digest, &headers, connection).await
}

async fn serve_output(
    state: &AppState,
    digest: &str,
    headers: &HeaderMap,
    connection: Option<Connection>,
) -> Result<Response, ApiError> {
    private(
        state
            .downloads
            .serve(
                &state.db,
                digest,
                headers,
                peer(connection),
                "application/octet-stream",
            )
            .await,
    )
}

/// An output of a lease its provider runs, uploaded before the result that
/// names it (signed by the provider; the body is the raw bytes, whose
/// blake3 is `digest`).
#[utoipa::path(put, path = "/api/v1/leases/{lease}/outputs/{digest}", params(("lease" = String, Path), ("digest" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, description = "Stored"),
        (status = 400, body = ErrorBody, description = "`limit_exceeded`: past MAX_UNIT_BYTES or MAX_LEASE_UPLOADS; `invalid_request`: the bytes are not the digest's"),
        (status = 403, body = ErrorBody, description = "not this provider's lease"),
        (status = 409, body = ErrorBody, description = "lease expired or answered")))]
pub async fn lease_output(
    State(state): State<AppState>,
    Path((lease, digest)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = state.clone();
    state
        .mutate(method, uri, headers, body, |caller, body| async move {
            let stored = s
                .jobs
                .put_lease_output(&caller, &lease, &digest, body, s.now_ms())
                .await?;
            Ok((StatusCode::OK, stored))
        })
        .await
}

/// The connection a request came on (absent when the router is called in
/// process).
type Connection = axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>;

/// The peer a download counts against (an IPv6 /64 is one; loopback,
/// IPv4-mapped or not, is loopback).
fn peer(connection: Option<Connection>) -> Option<std::net::IpAddr> {
    connection.map(|c| c.0.0.ip().to_canonical()).map(|ip| {
        if ip.is_loopback() {
            ip
        } else {
            crate::edge::peer_of(ip)
        }
    })
}

/// A buyer's bytes: no shared cache in front of the market keeps them
/// (signatures travel in headers of our own, which caches do not know).
fn private(response: Result<Response, ApiError>) -> Result<Response, ApiError> {
    let mut response = response?;
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("private, no-store"),
    );
    Ok(response)
}

/// A unit's input (signed GET): readable by the job's buyer, by a provider
/// holding a live lease on a unit with that input, and by the operator. For
/// anyone else it does not exist, whether it does or not.
#[utoipa::path(get, path = "/api/v1/blobs/{digest}", params(("digest" = String, Path)),
    responses((status = 200, description = "The bytes"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn blob(
    State(state): State<AppState>,
    Path(digest): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    connection: Option<Connection>,
) -> Result<Response, ApiError> {
    let caller = state.authenticate(&method, &uri, &headers, &[]).await?;
    if caller != state.config.operator {
        state
            .jobs
            .may_read_input(&caller, &digest, state.now_ms())
            .await?;
    }
    private(
        state
            .downloads
            .serve(
                &state.db,
                &digest,
                &headers,
                peer(connection),
                "application/octet-stream",
            )
            .await,
    )
}

/// The browser bundle made from a component at publish time.
#[utoipa::path(get, path = "/api/v1/browser/{digest}", params(("digest" = String, Path, description = "the component's blake3")),
    responses((status = 200, body = BrowserBundle), (status = 404, body = ErrorBody)))]
pub async fn browser_manifest(
    State(state): State<AppState>,
    Path(digest): Path<String>,
) -> Result<Json<BrowserBundle>, ApiError> {
    Ok(Json(state.registry.browser_bundle(&digest).await?))
}

/// One file of a browser bundle (the ES module or a core wasm module).
/// Immutable: its name is fixed within the bundle of one component digest.
#[utoipa::path(get, path = "/api/v1/browser/{digest}/{file}", params(("digest" = String, Path), ("file" = String, Path)),
    responses((status = 200, description = "text/javascript or application/wasm"), (status = 404, body = ErrorBody)))]
pub async fn browser_file(
    State(state): State<AppState>,
    Path((digest, file)): Path<(String, String)>,
    headers: HeaderMap,
    connection: Option<Connection>,
) -> Result<Response, ApiError> {
    let (content_type, file_digest) = state.registry.browser_file(&digest, &file).await?;
    let mut response = state
        .downloads
        .serve(
            &state.db,
            &file_digest,
            &headers,
            peer(connection),
            content_type,
        )
        .await?;
    if response.status().is_success() {
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("public, max-age=31536000, immutable"),
        );
    }
    Ok(response)
}

/// Providers and GPUs online, queue depth, capacity and the suggested price.
#[utoipa::path(get, path = "/api/v1/stats", responses((status = 200, body = MarketStats)))]
pub async fn stats(State(state): State<AppState>) -> Result<Json<MarketStats>, ApiError> {
    Ok(Json(state.jobs.stats(state.now_ms()).await?))
}

/// Begin uploading a blob, or resume its upload (signed): its digest,
/// size and chunk values. A blob the caller holds already is not sent
/// again (`stored`).
#[utoipa::path(post, path = "/api/v1/uploads", request_body = NewUpload,
    responses((status = 200, body = UploadInfo), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "`storage_quota`: past the account's quota")))]
pub async fn begin_upload(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = state.clone();
    state
        .mutate(method, uri, headers, body, |caller, body| async move {
            let request: NewUpload = parse(&body)?;
            Ok((
                StatusCode::OK,
                s.uploads.begin(&caller, request, s.now_ms()).await?,
            ))
        })
        .await
}

/// One chunk of an upload (not signed: its bytes must be exactly the ones
/// its upload declared, so only the uploader's blob can be sent).
#[utoipa::path(put, path = "/api/v1/uploads/{upload}/chunks/{index}", params(("upload" = String, Path), ("index" = u64, Path)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = ChunkReceived), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "`chunk_mismatch`: not the declared bytes; nothing was written"),
        (status = 429, body = ErrorBody, description = "too many chunks in flight from this address"),
        (status = 503, body = ErrorBody, description = "`busy`: too many chunks in flight; retry")))]
pub async fn upload_chunk(
    State(state): State<AppState>,
    Path((upload, index)): Path<(String, u64)>,
    headers: HeaderMap,
    connection: Option<Connection>,
    body: axum::body::Body,
) -> Result<Json<ChunkReceived>, ApiError> {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    Ok(Json(
        state
            .uploads
            .put_chunk(
                &upload,
                index,
                peer(connection),
                length,
                body,
                state.now_ms(),
            )
            .await?,
    ))
}

/// Finish an upload once every chunk is in (signed by its uploader): the
/// blob is stored and held by the caller.
#[utoipa::path(post, path = "/api/v1/uploads/{upload}/complete", params(("upload" = String, Path)),
    responses((status = 200, body = UploadInfo), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`incomplete`: chunks are missing")))]
pub async fn complete_upload(
    State(state): State<AppState>,
    Path(upload): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = state.clone();
    state
        .mutate(method, uri, headers, body, |caller, _| async move {
            Ok((
                StatusCode::OK,
                s.uploads.complete(&caller, &upload, s.now_ms()).await?,
            ))
        })
        .await
}

/// Cancel an upload (signed by its uploader): its chunks are dropped and
/// its bytes given back to the quota.
#[utoipa::path(delete, path = "/api/v1/uploads/{upload}", params(("upload" = String, Path)),
    responses((status = 200), (status = 404, body = ErrorBody)))]
pub async fn cancel_upload(
    State(state): State<AppState>,
    Path(upload): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = state.clone();
    state
        .mutate(method, uri, headers, body, |caller, _| async move {
            s.uploads.cancel(&caller, &upload, s.now_ms()).await?;
            Ok((StatusCode::OK, serde_json::json!({ "cancelled": upload })))
        })
        .await
}

/// Let a held blob go (signed): it no longer counts against the caller's
/// quota, and it is deleted once no kept job names it.
#[utoipa::path(delete, path = "/api/v1/blobs/{digest}", params(("digest" = String, Path)),
    responses((status = 200), (status = 404, body = ErrorBody)))]
pub async fn release_blob(
    State(state): State<AppState>,
    Path(digest): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = state.clone();
    state
        .mutate(method, uri, headers, body, |caller, _| async move {
            s.uploads.release(&caller, &digest).await?;
            Ok((StatusCode::OK, serde_json::json!({ "released": digest })))
        })
        .await
}

/// What the caller stores: bytes used, the quota, and a page of the blobs
/// it holds, newest first (signed GET).
#[utoipa::path(get, path = "/api/v1/storage", params(("page" = Option<u32>, Query)),
    responses((status = 200, body = Storage), (status = 401, body = ErrorBody)))]
pub async fn storage(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Storage>, ApiError> {
    let caller = state.authenticate(&method, &uri, &headers, &[]).await?;
    Ok(Json(state.uploads.storage(&caller, q.page).await?))
}
