//! # agora-market: the market service
//!
//! An axum application over SQLite or PostgreSQL: signed identities
//! ([`hygiene`]), the credits ledger with escrow ([`ledger`]), the signed
//! package registry ([`registry`]). [`app`] builds the router; [`serve`]
//! runs it with the background sweeper (hold expiry, old nonces) and the
//! verifiers (results of jobs checked by the package's `verify`).
//!
//! Errors: every handler returns [`error::ApiError`], one `match` maps it to
//! a status and a stable code.

pub mod blobs;
pub mod browser;
pub mod db;
mod detached;
pub mod edge;
pub mod error;
pub mod feeds;
pub mod hygiene;
pub mod jobs;
pub mod ledger;
mod metrics;
pub mod registry;
pub mod routes;
pub mod store;
mod tally;
pub mod uploads;
pub mod verify;

use agora_wire::KeyId;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use governor::{DefaultKeyedRateLimiter, RateLimiter};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use db::Db;
pub use ledger::Ledger;
pub use registry::Registry;

/// Body limit of every request but a publish.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Body limit of a provider's result: a unit's output in base64, and logs.
pub const MAX_RESULT_BODY_BYTES: usize = jobs::MAX_UNIT_BYTES / 3 * 4 + (2 << 20);
/// Longest a request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Mutations running at once: each runs to its end in its own task even
/// when its caller goes away, so without a bound a flock of callers could
/// pile up work; past it, a mutation is refused with 503 `busy`.
pub const MAX_MUTATIONS_IN_FLIGHT: usize = 256;
/// How often expired holds and old nonces are swept.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How often an idle verifier looks for results queued on other replicas
/// (results queued on its own wake it at once).
pub const VERIFY_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What an operator chooses.
#[derive(Clone, Debug)]
pub struct Config {
    /// The key allowed to mint credits and read the invariants.
    pub operator: KeyId,
    /// The origins clients reach this market at (`https://market.example.org`,
    /// normalized by `agora_wire::auth::origin_of`): a signed request must
    /// name one of them, so one made for another market is refused here.
    pub public_origins: Vec<String>,
    /// Signed requests per second per key (bursts up to twice that).
    pub rate_per_second: u32,
    /// Requests per second per peer address, signed or not (bursts up to
    /// twice that): [`hygiene::PEER_REQUESTS_PER_SECOND`].
    pub peer_rate_per_second: u32,
    pub jobs: jobs::JobsConfig,
    pub storage: uploads::StorageConfig,
}

impl Config {
    /// The defaults, with `operator`.
    pub fn new(operator: KeyId) -> Self {
        Config {
            operator,
            // `agora market serve` sets them (`--public-url`, or its listen address).
            public_origins: Vec::new(),
            rate_per_second: 50,
            peer_rate_per_second: hygiene::PEER_REQUESTS_PER_SECOND,
            jobs: jobs::JobsConfig::default(),
            storage: uploads::StorageConfig::default(),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub ledger: Ledger,
    pub registry: Registry,
    pub jobs: jobs::Jobs,
    /// Uploads by content and what accounts hold.
    pub uploads: uploads::Uploads,
    pub config: Arc<Config>,
    limiter: Arc<DefaultKeyedRateLimiter<KeyId>>,
    /// Requests per peer address ([`hygiene::limit_peers`]).
    peer_limiter: Arc<DefaultKeyedRateLimiter<std::net::IpAddr>>,
    /// The pollers of watched jobs, shared by their event streams.
    pub feeds: feeds::Feeds,
    /// Blob downloads and their shared memory budget.
    pub downloads: blobs::Downloads,
    /// Event streams open, per key ([`AppState::open_stream`]).
    streams: Arc<tally::Tally<KeyId>>,
    metrics: Arc<metrics::Metrics>,
    /// Added to the wall clock: tests move time forward with it.
    clock_offset_ms: Arc<AtomicI64>,
    /// Mutations whose task has not finished (see [`AppState::mutate`]).
    in_flight: detached::Detached,
    /// Room for mutations at once ([`MAX_MUTATIONS_IN_FLIGHT`]).
    mutations: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    pub fn new(db: Db, config: Config) -> Self {
        let limiter = Arc::new(RateLimiter::keyed(hygiene::quota(config.rate_per_second)));
        let peer_limiter = Arc::new(RateLimiter::keyed(hygiene::quota(
            config.peer_rate_per_second,
        )));
        let ledger = Ledger::new(db.clone());
        let registry = Registry::new(db.clone());
        AppState {
            jobs: jobs::Jobs::new(
                db.clone(),
                ledger.clone(),
                registry.clone(),
                config.jobs.clone(),
            ),
            uploads: uploads::Uploads::new(db.clone(), ledger.clone(), config.storage.clone()),
            ledger,
            registry,
            db,
            config: Arc::new(config),
            limiter,
            peer_limiter,
            downloads: blobs::Downloads::default(),
            feeds: feeds::Feeds::default(),
            streams: Arc::default(),
            metrics: Arc::new(metrics::Metrics::new()),
            clock_offset_ms: Arc::default(),
            in_flight: Default::default(),
            mutations: Arc::new(tokio::sync::Semaphore::new(MAX_MUTATIONS_IN_FLIGHT)),
        }
    }

    /// Wait until every mutation and ledger operation started on this state
    /// has finished (a cancelled request's work goes on in its own task).
    pub async fn quiesce(&self) {
        self.in_flight.quiesce().await;
        self.ledger.quiesce().await;
    }

    pub fn now_ms(&self) -> i64 {
        agora_wire::auth::now_ms() + self.clock_offset_ms.load(Ordering::Relaxed)
    }

    /// Check results of packages that export `verify` with `verifier`.
    pub fn with_verifier(mut self, verifier: Arc<dyn verify::ResultVerifier>) -> Self {
        self.jobs.set_verifier(verifier);
        self
    }

    /// Run due verifications until none is left: what the background
    /// verifiers of [`serve`] do (tests call it to step them).
    pub async fn verify_due(&self) -> Result<Vec<jobs::Verified>, error::ApiError> {
        let mut done = Vec::new();
        while let Some(verified) = self.jobs.verify_next(|| self.now_ms()).await? {
            done.push(verified);
        }
        Ok(done)
    }

    /// One background verifier: runs due verifications, then waits for
    /// the next result.
    async fn verifier_loop(self) {
        loop {
            match self.verify_due().await {
                Ok(_) => {}
                Err(e) => tracing::warn!("a verification failed: {e}"),
            }
            self.jobs.verification_wanted(VERIFY_POLL_INTERVAL).await;
        }
    }

    /// Move the market's clock forward (tests of expiry).
    pub fn advance_clock(&self, by: Duration) {
        self.clock_offset_ms
            .fetch_add(by.as_millis() as i64, Ordering::Relaxed);
    }

    /// One sweep: expire due holds and lost leases, settle due jobs,
    /// collect the data of jobs past its retention, forget old nonces. Each part and each item runs on its own: a failure
    /// is logged, counted in `agora_market_sweep_failures_total`, and the
    /// sweep goes on. Returns the holds expired.
    pub async fn sweep(&self) -> Result<u64, error::ApiError> {
        let mut failures = 0;
        let (expired, failed) = self
            .ledger
            .expire_due(self.now_ms())
            .await
            .unwrap_or_else(|e| {
                tracing::warn!("expiring holds failed: {e}");
                (0, 1)
            });
        failures += failed;
        match self.jobs.sweep(self.now_ms()).await {
            Ok(report) => failures += report.failures,
            Err(e) => {
                tracing::warn!("sweeping jobs failed: {e}");
                failures += 1;
            }
        }
        match self.jobs.collect_expired_data(self.now_ms()).await {
            Ok((_, failed)) => failures += failed,
            Err(e) => {
                tracing::warn!("collecting old jobs' data failed: {e}");
                failures += 1;
            }
        }
        if let Err(e) = self.uploads.drop_idle(self.now_ms()).await {
            tracing::warn!("dropping idle uploads failed: {e}");
            failures += 1;
        }
        if let Err(e) = self.forget_old_records().await {
            tracing::warn!("pruning old nonces, stored responses and audit records failed: {e}");
            failures += 1;
        }
        self.metrics.sweep_failures.inc_by(failures);
        Ok(expired)
    }
}

/// The market's router.
pub fn app(state: AppState) -> Router {
    let large = Router::new()
        .route("/api/v1/packages/{name}/versions", post(routes::publish))
        .route("/api/v1/jobs", get(routes::my_jobs).post(routes::submit))
        .layer(DefaultBodyLimit::max(registry::MAX_PUBLISH_BODY_BYTES))
        .route("/api/v1/leases/{lease}/result", post(routes::result))
        .layer(DefaultBodyLimit::max(MAX_RESULT_BODY_BYTES))
        .route(
            "/api/v1/leases/{lease}/outputs/{digest}",
            axum::routing::put(routes::lease_output),
        )
        .layer(DefaultBodyLimit::max(jobs::MAX_UNIT_BYTES));
    // An upload's chunks are checked against their declared values, not
    // signed (see `uploads`); each body is read once there is room for it.
    let chunks = Router::new()
        .route(
            "/api/v1/uploads/{upload}/chunks/{index}",
            axum::routing::put(routes::upload_chunk),
        )
        .layer(DefaultBodyLimit::max(
            agora_wire::chunks::UPLOAD_CHUNK_BYTES as usize,
        ));
    // Streams live as long as their job: no request timeout.
    let streams = Router::new().route("/api/v1/jobs/{job}/events", get(routes::job_events));
    let api = Router::new()
        .route("/api/v1/health", get(routes::health))
        .route("/api/openapi.json", get(routes::openapi_json))
        .route("/metrics", get(routes::metrics))
        .route("/api/v1/transfers", post(routes::transfer))
        .route("/api/v1/mint", post(routes::mint))
        .route("/api/v1/accounts/{account}", get(routes::balance))
        .route("/api/v1/accounts/{account}/transfers", get(routes::history))
        .route("/api/v1/operator/invariants", get(routes::invariants))
        .route("/api/v1/operator/canaries", post(routes::add_canary))
        .route("/api/v1/operator/vouch", post(routes::vouch))
        .route("/api/v1/packages", get(routes::search))
        .route("/api/v1/categories", get(routes::categories))
        .route("/api/v1/packages/{name}", get(routes::info))
        .route(
            "/api/v1/packages/{name}/log",
            get(routes::log).post(routes::append_log),
        )
        .route(
            "/api/v1/packages/{name}/versions/{version}/component",
            get(routes::download),
        )
        .route(
            "/api/v1/providers",
            get(routes::providers).post(routes::register_provider),
        )
        .route("/api/v1/providers/heartbeat", post(routes::heartbeat))
        .route(
            "/api/v1/providers/{provider}/activity",
            get(routes::provider_activity),
        )
        .route(
            "/api/v1/providers/{provider}/telemetry",
            get(routes::provider_telemetry),
        )
        .route("/api/v1/leases", post(routes::lease))
        .route("/api/v1/jobs/{job}", get(routes::job))
        .route("/api/v1/jobs/{job}/logs", get(routes::job_logs))
        .route("/api/v1/jobs/{job}/cancel", post(routes::cancel_job))
        .route(
            "/api/v1/jobs/{job}/data",
            axum::routing::delete(routes::delete_job_data),
        )
        .route(
            "/api/v1/jobs/{job}/units/{unit}/output",
            get(routes::unit_output),
        )
        .route(
            "/api/v1/jobs/{job}/units/{unit}/outputs/{name}",
            get(routes::unit_named_output),
        )
        .route(
            "/api/v1/blobs/{digest}",
            get(routes::blob).delete(routes::release_blob),
        )
        .route("/api/v1/uploads", post(routes::begin_upload))
        .route(
            "/api/v1/uploads/{upload}",
            axum::routing::delete(routes::cancel_upload),
        )
        .route(
            "/api/v1/uploads/{upload}/complete",
            post(routes::complete_upload),
        )
        .route("/api/v1/storage", get(routes::storage))
        .route("/api/v1/browser/{digest}", get(routes::browser_manifest))
        .route("/api/v1/browser/{digest}/{file}", get(routes::browser_file))
        .route("/api/v1/stats", get(routes::stats))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .merge(large)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            hygiene::signed_before_body,
        ))
        .merge(chunks)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .merge(streams)
        .layer(TraceLayer::new_for_http())
        .with_state(state.clone());
    with_peer_limit(with_security_headers(api), state)
}

/// Every request, the API's and the web pages' alike, counted against its
/// peer's rate ([`hygiene::limit_peers`]).
pub fn with_peer_limit(router: Router, state: AppState) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        state,
        hygiene::limit_peers,
    ))
}

/// The headers every response of the market carries, its API and its web
/// pages alike: no page of it may be framed by another site (clickjacking
/// a buyer's key into a transfer), and no response is sniffed into another
/// content type than the one it declares.
pub fn with_security_headers(router: Router) -> Router {
    use axum::http::{HeaderValue, header};
    use tower_http::set_header::SetResponseHeaderLayer;
    router
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'none'"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
}

/// Serve on `listener` until `shutdown` resolves, sweeping in the background.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, Router::new(), None, shutdown).await
}

/// [`serve`], with `extra` routes beside the API (the web pages), over
/// HTTPS when given a TLS configuration ([`edge::tls_config`]).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: AppState,
    extra: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sweeper = state.clone();
    let sweep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tick.tick().await;
            match sweeper.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::info!("expired {n} holds"),
                Err(e) => tracing::warn!("sweep failed: {e}"),
            }
        }
    });
    let verifiers: Vec<_> = (0..state.jobs.verify_parallelism())
        .map(|_| tokio::spawn(state.clone().verifier_loop()))
        .collect();
    let notices = state.feeds.listen(&state.db).await.unwrap_or_else(|e| {
        tracing::warn!(
            "job notices are unavailable ({e}): event streams poll every {:?}",
            feeds::EVENT_POLL_INTERVAL
        );
        None
    });
    let router = app(state.clone()).merge(with_peer_limit(with_security_headers(extra), state));
    let result = edge::serve(listener, router, tls, shutdown).await;
    sweep.abort();
    verifiers.iter().for_each(|v| v.abort());
    notices.iter().for_each(|n| n.abort());
    result
}
