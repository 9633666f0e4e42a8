//! Integration tests of the market: the router driven with `oneshot`, on a
//! real SQLite file and a real PostgreSQL schema. Every suite runs on both
//! (`both_dbs!`).

mod cancel;
mod edge;
mod hostile;
mod jobs;
mod ledger;
mod lifecycle_sim;
mod outputs;
mod prices;
mod properties;
mod registry;
mod requirements;
mod retention;
mod retries;
mod service;
mod settling;
mod simulation;
mod store;
mod uploads;
mod verifying;
mod views;

use agora_market::store::BlobStore;
use agora_market::{AppState, Config, Db, app};
use agora_wire::Keypair;
use agora_wire::auth::{self, HEADER_IDEMPOTENCY_KEY};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU32, Ordering};
use tower::ServiceExt;

/// The PostgreSQL the tests use (trust auth, database `test`).
pub fn postgres_url() -> String {
    std::env::var("AGORA_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// One market on one fresh database, with an operator key.
pub struct TestMarket {
    pub state: AppState,
    pub operator: Keypair,
    pub url: String,
    schema: Option<String>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The tests' market: no rate limit in the way, no random spot checks (a
/// test that wants them sets the rate), and a due canary always first.
/// The origin test markets answer to, and their clients sign for.
pub const TEST_ORIGIN: &str = "http://market.test";

fn test_config(operator: &Keypair) -> Config {
    let mut config = Config {
        rate_per_second: 10_000,
        public_origins: vec![TEST_ORIGIN.into()],
        ..Config::new(operator.id().clone())
    };
    config.jobs.spot_check_rate = 0.0;
    config.jobs.canary_chance = 1.0;
    config
}

impl TestMarket {
    pub async fn sqlite() -> TestMarket {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("agora-market-it-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("market.db").display());
        Self::open(url, None).await
    }

    pub async fn postgres() -> TestMarket {
        let (url, schema) = Self::postgres_schema().await;
        Self::open(url, Some(schema)).await
    }

    /// A market on a fresh PostgreSQL schema with its blob bytes in `blobs`.
    pub async fn postgres_with(blobs: BlobStore) -> TestMarket {
        let (url, schema) = Self::postgres_schema().await;
        let db = Db::connect_with(&url, blobs)
            .await
            .expect("the database opens");
        let operator = Keypair::generate();
        TestMarket {
            state: AppState::new(db, test_config(&operator)),
            operator,
            url,
            schema: Some(schema),
        }
    }

    async fn postgres_schema() -> (String, String) {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let schema = format!("agora_it_{}_{n}", std::process::id());
        let admin = Db::admin_pool(&postgres_url()).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {} is required for the market tests: {e}",
                postgres_url()
            )
        });
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&admin)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .unwrap();
        let url = format!("{}?options=-c%20search_path%3D{schema}", postgres_url());
        (url, schema)
    }

    async fn open(url: String, schema: Option<String>) -> TestMarket {
        let operator = Keypair::generate();
        // PostgreSQL's test markets keep their blobs in a temporary store.
        let blobs = BlobStore::beside(&url)
            .unwrap()
            .unwrap_or_else(|| BlobStore::temporary().unwrap());
        let db = Db::connect_with(&url, blobs)
            .await
            .expect("the database opens");
        let state = AppState::new(db, test_config(&operator));
        TestMarket {
            state,
            operator,
            url,
            schema,
        }
    }

    /// A second market instance on the same database (another replica).
    pub async fn replica(&self) -> AppState {
        // Replicas share the database and the object store.
        let db = Db::connect_with(&self.url, self.state.db.blobs.clone())
            .await
            .unwrap();
        AppState::new(db, test_config(&self.operator))
    }

    /// This market (same database, same operator) checking results with
    /// `verifier`.
    pub fn with_verifier(
        &self,
        verifier: std::sync::Arc<dyn agora_market::verify::ResultVerifier>,
    ) -> TestMarket {
        let operator = Keypair::from_file_json(&self.operator.to_file_json()).unwrap();
        TestMarket {
            state: self.state.clone().with_verifier(verifier),
            operator,
            url: self.url.clone(),
            schema: None,
        }
    }

    pub async fn cleanup(self) {
        if let Some(schema) = self.schema {
            self.state.db.pool.close().await;
            let admin = Db::admin_pool(&postgres_url()).await.unwrap();
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(&admin)
                .await
                .unwrap();
        }
    }

    /// A request through the router: signed by `key` when given.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        key: Option<&Keypair>,
    ) -> (StatusCode, Value) {
        call_on(
            &self.state,
            method,
            path,
            body.map(|b| serde_json::to_vec(b).unwrap()),
            key,
            None,
        )
        .await
    }

    pub async fn call_idem(
        &self,
        path: &str,
        body: &Value,
        key: &Keypair,
        idem: &str,
    ) -> (StatusCode, Value) {
        call_on(
            &self.state,
            "POST",
            path,
            Some(serde_json::to_vec(body).unwrap()),
            Some(key),
            Some(idem),
        )
        .await
    }

    /// Mint `amount` into `key`'s account.
    pub async fn fund(&self, key: &Keypair, amount: u64) {
        let (status, body) = self
            .call("POST", "/api/v1/mint", Some(&json!({"id": format!("fund-{}-{amount}", key.id()), "account": key.id(), "amount": amount})), Some(&self.operator))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    pub async fn available(&self, key: &Keypair) -> u64 {
        let (status, body) = self
            .call(
                "GET",
                &format!("/api/v1/accounts/{}", key.id()),
                None,
                Some(key),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["available"].as_u64().unwrap()
    }

    /// Assert the books balance (checked through the operator endpoint).
    pub async fn assert_invariants(&self) {
        let (status, report) = self
            .call(
                "GET",
                "/api/v1/operator/invariants",
                None,
                Some(&self.operator),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["ok"], true, "ledger invariants violated: {report}");
    }
}

pub async fn call_on(
    state: &AppState,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
    key: Option<&Keypair>,
    idem: Option<&str>,
) -> (StatusCode, Value) {
    let body = body.unwrap_or_default();
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(key) = key {
        for (name, value) in
            auth::sign_request(key, TEST_ORIGIN, method, path, &body, state.now_ms())
        {
            request = request.header(name, value);
        }
    }
    if let Some(idem) = idem {
        request = request.header(HEADER_IDEMPOTENCY_KEY, idem);
    }
    send(state, request.body(Body::from(body)).unwrap()).await
}

/// A request to `path` signed by `key` for `market` at `at_ms`.
pub fn signed(
    market: &str,
    method: &str,
    path: &str,
    body: &[u8],
    key: &Keypair,
    at_ms: i64,
) -> axum::http::request::Builder {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in auth::sign_request(key, market, method, path, body, at_ms) {
        request = request.header(name, value);
    }
    request
}

pub async fn send(state: &AppState, request: Request<Body>) -> (StatusCode, Value) {
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 256 << 20)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

/// Wait until no request of `state` is still inside the database: a
/// cancelled request's COMMIT may still land after its future was dropped.
pub async fn quiesce(state: &AppState) {
    state.quiesce().await;
}

/// Run a test body on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! both_dbs {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let market = $crate::TestMarket::sqlite().await;
                ($body)(&market).await;
                market.cleanup().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let market = $crate::TestMarket::postgres().await;
                ($body)(&market).await;
                market.cleanup().await;
            }
        }
    };
}

/// A fresh seed, printed so a failure replays with AGORA_SEED.
pub fn seed() -> u64 {
    agora_kernels::rng::Rng::test_seed()
}

pub fn guest(name: &str) -> Vec<u8> {
    let dir = std::env::var("AGORA_GUESTS").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/wasm/wasm32-wasip2/release"
        )
        .into()
    });
    let path = format!("{dir}/{}.wasm", name.replace('-', "_"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}; run `cargo xtask examples`"))
}
