//! Prometheus metrics (`/metrics`): requests by route and status, request
//! latency, ledger transfers. Also where a body-limit 413 becomes a JSON
//! error like every other.

use crate::AppState;
use agora_wire::api::codes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    /// Body bytes sent, by route: each response's declared or known length
    /// (a download's whole length even when its receiver stops early).
    response_bytes: Family<RouteLabels, Counter>,
    pub transfers: Counter,
    /// Sweep items (a hold, a lease, a job's settlement) that failed and were set aside.
    pub sweep_failures: Counter,
    /// Requests refused before their signer was known (unsigned, stale,
    /// replayed, forged) or past their key's rate: counted, never written.
    pub unauthenticated: Counter,
    /// Keys and peer addresses the rate limiters track (they forget idle
    /// ones each sweep).
    pub limiter_keys: Gauge,
    /// Requests refused past their peer address's rate.
    pub peer_limited: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("agora_market");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let transfers = Counter::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            latency.clone(),
        );
        let response_bytes = Family::<RouteLabels, Counter>::default();
        registry.register(
            "http_response_bytes",
            "Response body bytes by route (each response's whole length)",
            response_bytes.clone(),
        );
        registry.register(
            "ledger_transfers",
            "Transfers applied through the API",
            transfers.clone(),
        );
        let sweep_failures = Counter::default();
        registry.register(
            "sweep_failures",
            "Sweep items that failed and were set aside",
            sweep_failures.clone(),
        );
        let unauthenticated = Counter::default();
        registry.register(
            "unauthenticated_requests",
            "Requests refused by authentication or rate, before any database write",
            unauthenticated.clone(),
        );
        let limiter_keys = Gauge::default();
        registry.register(
            "rate_limiter_keys",
            "Keys and peer addresses the rate limiters track",
            limiter_keys.clone(),
        );
        let peer_limited = Counter::default();
        registry.register(
            "peer_limited_requests",
            "Requests refused past their peer address's rate",
            peer_limited.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            response_bytes,
            transfers,
            sweep_failures,
            unauthenticated,
            limiter_keys,
            peer_limited,
        }
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String");
        text
    }
}

pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let mut response = next.run(request).await;
    let status = response.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE && !is_json(&response) {
        response = crate::error::error_response(
            status,
            codes::TOO_LARGE,
            "the request body is larger than this endpoint accepts".into(),
        );
    }
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route: route.clone(),
            status: status.as_u16(),
        })
        .inc();
    let declared = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let length = declared.or_else(|| axum::body::HttpBody::size_hint(response.body()).exact());
    if let Some(length) = length {
        state
            .metrics
            .response_bytes
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .inc_by(length);
    }
    state
        .metrics
        .latency
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    response
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}
