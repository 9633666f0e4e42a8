//! `cargo xtask bench lifecycle`: the job lifecycle under load.
//!
//! 1. Unit throughput: submit (escrow hold) -> lease -> signed result ->
//!    verify -> settle (escrow post, pay, fee, refund), one unit per job,
//!    through [`Jobs`], against a measuring device in the same run on the
//!    same database (SQLite file with synchronous FULL, and PostgreSQL):
//!    the statement sequence the lifecycle used before issue 12, issued
//!    bare, one commit per step as it was (submit with its hold, lease,
//!    result with its decision, mark, escrow post, its flag, pay, paid,
//!    refund, end: ten). Ratio = ours / bare throughput; goal
//!    >= 1.2, at no more than three commits per unit. Commits are counted
//!    on PostgreSQL as transaction ids consumed (only a transaction that
//!    writes takes one); SQLite runs the same transactions.
//! 2. Scale: one market (in-process axum on SQLite) holding 100,000 queued
//!    units while 1,000 simulated providers speak the real HTTP protocol
//!    (signed requests) with trivial work: register, heartbeat, lease,
//!    result. Reports per-call latencies (p50/p99) and errors.

use agora_market::jobs::{Jobs, lease_candidate_sql};
use agora_market::{AppState, Config, Db};
use agora_wire::Keypair;
use agora_wire::api::{
    Ask, Capabilities, GpuDevice, Heartbeat, HeartbeatReply, JobInfo, LeaseGrant, PublishRequest,
    RegisterProvider, ResultReport, SubmitJob, UnitLimits,
};
use agora_wire::client::Client;
use agora_wire::log::{LogAction, LogEntry};
use base64::Engine as _;
use sqlx::{Any, Row, Transaction};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Units per throughput round.
const UNITS: usize = 150;
const SCALE_PROVIDERS: usize = 1000;
/// Queued units of the scale run, and of the run it is compared with: the
/// lease latency at 100,000 stays within [`SCALE_GOAL_RATIO`] of 1,000's.
const SCALE_UNITS: usize = 100_000;
const SCALE_BASELINE_UNITS: usize = 1_000;
const SCALE_GOAL_RATIO: f64 = 1.5;
/// Units of a hostile buyer in the large run: the highest bid with caps
/// that cannot pay it, which must not sit at the head of the queue (every
/// lease would walk past them).
const SCALE_HOSTILE_UNITS: usize = 10_000;
/// Units of a hostile buyer in the large run at the highest bid its caps
/// pay, each requiring a speed only one (idle) provider is rated at: the
/// simulated providers, none of which may take them, are leased past them.
const SCALE_GATED_UNITS: usize = 10_000;
/// Rounds of heartbeat + lease + result by every simulated provider.
const SCALE_ROUNDS: usize = 2;
/// Client threads sharing the simulated providers.
const SCALE_THREADS: usize = 32;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Write transactions committed on PostgreSQL since `before` (each
/// probe takes one id itself); `None` on SQLite.
async fn xids(db: &Db) -> Option<i64> {
    if db.kind != agora_market::db::Kind::Postgres {
        return None;
    }
    Some(
        sqlx::query("SELECT CAST(txid_current() AS BIGINT) AS x")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .try_get("x")
            .unwrap(),
    )
}

fn now() -> i64 {
    agora_wire::auth::now_ms()
}

fn component() -> Vec<u8> {
    let dir = std::env::var("AGORA_GUESTS").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/wasm/wasm32-wasip2/release"
        )
        .into()
    });
    std::fs::read(format!("{dir}/saxpy.wasm")).expect("saxpy.wasm: run `cargo xtask examples`")
}

fn capabilities() -> Capabilities {
    let gpu = GpuDevice {
        name: "simulated".into(),
        backend: "vulkan".into(),
        device_type: "cpu".into(),
        memory_bytes: None,
        compute_capability: None,
        gflops: None,
    };
    Capabilities {
        cpu_cores: 2,
        memory_bytes: 1 << 30,
        gpus: vec![gpu],
        cuda: false,
        kind: "native".into(),
    }
}

fn unit_limits() -> UnitLimits {
    UnitLimits {
        fuel: 1_000_000,
        memory_bytes: 16 << 20,
        timeout_ms: 1000,
        gpu: false,
    }
}

/// A market with the `bench` package, a funded buyer and a trusted provider.
struct Env {
    state: AppState,
    buyer: Keypair,
    provider: Keypair,
}

/// The market at `url` (its database), reached by clients at `origins`.
async fn env(url: &str, origins: Vec<String>) -> Env {
    let operator = Keypair::generate();
    // Benchmarks on PostgreSQL keep their blobs in a temporary store.
    let blobs = agora_market::store::BlobStore::beside(url)
        .unwrap()
        .unwrap_or_else(|| agora_market::store::BlobStore::temporary().unwrap());
    let db = Db::connect_with(url, blobs).await.unwrap();
    let state = AppState::new(
        db,
        Config {
            rate_per_second: 1_000_000,
            public_origins: origins,
            ..Config::new(operator.id().clone())
        },
    );
    let author = Keypair::generate();
    let bytes = component();
    let action = LogAction::Release {
        version: "1.0.0".into(),
        digest: agora_wire::digest_hex(&bytes),
        size: bytes.len() as u64,
    };
    let entry = LogEntry::new_signed(&author, "bench", None, action);
    let request = PublishRequest {
        description: "bench".into(),
        category: "bench".into(),
        tags: vec![],
        component_base64: b64(&bytes),
        entry,
    };
    state
        .registry
        .publish(author.id(), "bench", request, now())
        .await
        .unwrap();
    let buyer = Keypair::generate();
    let mint = agora_market::ledger::Op::Mint {
        account: buyer.id().to_string(),
        amount: 1 << 40,
    };
    state.ledger.execute("fund", &mint, now()).await.unwrap();
    let provider = Keypair::generate();
    let register = RegisterProvider {
        capabilities: capabilities(),
        ask: Ask {
            per_billion_fuel: 10,
            per_gpu_second: 1,
            per_wall_second: 0,
        },
        class_asks: Default::default(),
        max_concurrent: 4,
        accepts: Default::default(),
    };
    state
        .jobs
        .register(provider.id(), register, now())
        .await
        .unwrap();
    // Trusted: one replica per unit, as for an established provider.
    sqlx::query("UPDATE providers SET good = 100, confirmed = 100")
        .execute(&state.db.pool)
        .await
        .unwrap();
    Env {
        state,
        buyer,
        provider,
    }
}

fn submit_request(tag: &str, i: usize, units: usize) -> SubmitJob {
    SubmitJob {
        package: "bench".into(),
        version: None,
        inputs_base64: (0..units)
            .map(|u| b64(format!("{tag}-{i}-{u}").as_bytes()))
            .collect(),
        input_digests: Vec::new(),
        shared: Default::default(),
        limits: unit_limits(),
        max_price: 1000 * units as u64,
        replicas: 1,
        requirements: Default::default(),
        providers: Default::default(),
        deadline_ms: None,
        bid_percent: None,
        retry: Default::default(),
    }
}

fn signed_result(key: &Keypair, lease_id: &str, output: &[u8]) -> ResultReport {
    let digest = agora_wire::digest_hex(output);
    ResultReport {
        outcome: agora_wire::api::RunOutcome::Ok,
        limit: None,
        message: None,
        output_base64: Some(b64(output)),
        signature: key.sign(&ResultReport::signed_bytes(
            lease_id,
            agora_wire::api::RunOutcome::Ok,
            Some(&digest),
            &[],
            500_000,
            0,
        )),
        output_digest: Some(digest),
        fuel_used: 500_000,
        gpu_time_us: 0,
        peak_memory_bytes: 1 << 20,
        logs: vec![],
        outputs: vec![],
    }
}

/// Submit a one-unit job, and lease and answer its unit as the env's
/// trusted provider.
async fn run_one(jobs: &Jobs, env: &Env, tag: &str, i: usize) -> JobInfo {
    let job = jobs
        .submit(env.buyer.id(), submit_request(tag, i, 1), now())
        .await
        .unwrap();
    let grant = jobs
        .lease(env.provider.id(), now())
        .await
        .unwrap()
        .expect("the unit just submitted");
    jobs.submit_result(
        env.provider.id(),
        &grant.lease_id,
        signed_result(&env.provider, &grant.lease_id, b"out"),
        now(),
    )
    .await
    .unwrap();
    job
}

async fn ours(jobs: &Jobs, env: &Env, tag: &str) -> Duration {
    let started = Instant::now();
    for i in 0..UNITS {
        let job = run_one(jobs, env, tag, i).await;
        debug_assert_eq!(
            jobs.info(&job.id).await.unwrap().state,
            agora_wire::api::JobState::Done
        );
    }
    started.elapsed()
}

async fn exec(tx: &mut Transaction<'static, Any>, sql: &str, args: &[&str]) {
    let mut q = sqlx::query(sql);
    for a in args {
        q = q.bind(*a);
    }
    q.execute(&mut **tx).await.unwrap();
}

/// One transfer's core statements: both accounts made if new, debit,
/// credit, record.
async fn bare_transfer(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    debit: &str,
    credit: &str,
    amount: &str,
) {
    for account in [debit, credit] {
        exec(tx, "INSERT INTO accounts (id, kind, created_at_ms) VALUES ($1, 'user', 0) ON CONFLICT (id) DO NOTHING", &[account]).await;
    }
    exec(
        tx,
        "UPDATE accounts SET debits_posted = debits_posted + CAST($1 AS BIGINT) WHERE id = $2",
        &[amount, debit],
    )
    .await;
    exec(
        tx,
        "UPDATE accounts SET credits_posted = credits_posted + CAST($1 AS BIGINT) WHERE id = $2",
        &[amount, credit],
    )
    .await;
    exec(
        tx,
        "INSERT INTO transfers (id, request_digest, debit, credit, amount, kind, state, created_at_ms) VALUES ($1, 'x', $2, $3, CAST($4 AS BIGINT), 'single', 'posted', 0)",
        &[id, debit, credit, amount],
    )
    .await;
}

/// The same work as [`ours`] in bare statements, committed as the
/// lifecycle committed them before issue 12.
async fn bare(db: &Db, env: &Env, tag: &str) -> Duration {
    let buyer = env.buyer.id().to_string();
    let provider = env.provider.id().to_string();
    let candidate = lease_candidate_sql(db.kind);
    let started = Instant::now();
    for i in 0..UNITS {
        let (job, lease) = (format!("bj-{tag}-{i}"), format!("bl-{tag}-{i}"));
        let input = format!("{tag}-{i}-0");
        let input_digest = agora_wire::digest_hex(input.as_bytes());
        let now_s = now().to_string();
        let escrow = format!("job:{job}");
        // Submit: the job, its unit and the hold, one transaction.
        let mut tx = db.write().await.unwrap();
        exec(
            &mut tx,
            "INSERT INTO jobs (id, buyer, package, version, digest, fuel_limit, memory_limit, timeout_ms, needs_gpu, max_price, unit_cap, replicas, state, created_at_ms, expires_at_ms)
             VALUES ($1, $2, 'bench', '1.0.0', 'd', 1000000, 16777216, 1000, 1, 1000, 333, 1, 'running', CAST($3 AS BIGINT), CAST($3 AS BIGINT) + 86400000)",
            &[&job, &buyer, &now_s],
        )
        .await;
        let mut staged = agora_market::blobs::Staged::write(
            &db,
            [(input_digest.clone(), input.clone().into_bytes().into())],
        )
        .await
        .unwrap();
        staged
            .record(&mut tx, agora_market::blobs::Pin::Job)
            .await
            .unwrap();
        exec(&mut tx, "INSERT INTO units (job_id, idx, input_digest, state, wanted, quorum, queued_at_ms) VALUES ($1, 0, $2, 'queued', 1, 1, CAST($3 AS BIGINT))", &[&job, &input_digest, &now_s]).await;
        exec(&mut tx, "INSERT INTO accounts (id, kind, created_at_ms) VALUES ($1, 'escrow', 0) ON CONFLICT (id) DO NOTHING", &[&escrow]).await;
        exec(&mut tx, "UPDATE accounts SET debits_pending = debits_pending + 1000 WHERE id = $1 AND credits_posted - debits_posted - debits_pending >= 1000", &[&buyer]).await;
        exec(
            &mut tx,
            "UPDATE accounts SET credits_pending = credits_pending + 1000 WHERE id = $1",
            &[&escrow],
        )
        .await;
        exec(&mut tx, "INSERT INTO transfers (id, request_digest, debit, credit, amount, kind, state, created_at_ms) VALUES ($1, 'x', $2, $3, 1000, 'hold', 'pending', 0)", &[&format!("{job}:hold"), &buyer, &escrow]).await;
        tx.commit().await.unwrap();
        // Lease.
        let mut tx = db.write().await.unwrap();
        let row = sqlx::query(&candidate)
            .bind(now())
            .bind(1i64)
            .bind(10i64)
            .bind(1i64)
            .bind(&provider)
            .bind(0i64)
            .bind(0i64)
            .bind(0i64)
            .bind(1i64)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        let leased_job: String = row.try_get("job_id").unwrap();
        exec(&mut tx, "INSERT INTO leases (id, job_id, idx, provider, state, expires_at_ms, created_at_ms) VALUES ($1, $2, 0, $3, 'active', CAST($4 AS BIGINT) + 30000, CAST($4 AS BIGINT))", &[&lease, &leased_job, &provider, &now_s]).await;
        tx.commit().await.unwrap();
        // The result and its decision.
        let out_digest = agora_wire::digest_hex(b"out");
        let mut tx = db.write().await.unwrap();
        let mut staged = agora_market::blobs::Staged::write(
            &db,
            [(out_digest.clone(), axum::body::Bytes::from_static(b"out"))],
        )
        .await
        .unwrap();
        staged
            .record(&mut tx, agora_market::blobs::Pin::Job)
            .await
            .unwrap();
        exec(&mut tx, "UPDATE leases SET state = 'accepted', outcome = 'ok', output_digest = $1, cost = 1 WHERE id = $2", &[&out_digest, &lease]).await;
        exec(
            &mut tx,
            "UPDATE units SET state = 'verified', output_digest = $1 WHERE job_id = $2 AND idx = 0",
            &[&out_digest, &job],
        )
        .await;
        tx.commit().await.unwrap();
        // Then, one commit each: the mark, the escrow post and its flag,
        // the payment and its mark, the refund, the job's end.
        let mut tx = db.write().await.unwrap();
        exec(&mut tx, "UPDATE providers SET good = good * 0.99 + 1, units_done = units_done + 1 WHERE id = $1", &[&provider]).await;
        tx.commit().await.unwrap();
        let mut tx = db.write().await.unwrap();
        exec(&mut tx, "UPDATE transfers SET state = 'settled', amount_posted = 1000 WHERE id = $1 AND state = 'pending'", &[&format!("{job}:hold")]).await;
        exec(&mut tx, "UPDATE accounts SET debits_pending = debits_pending - 1000, debits_posted = debits_posted + 1000 WHERE id = $1", &[&buyer]).await;
        exec(&mut tx, "UPDATE accounts SET credits_pending = credits_pending - 1000, credits_posted = credits_posted + 1000 WHERE id = $1", &[&escrow]).await;
        tx.commit().await.unwrap();
        let mut tx = db.write().await.unwrap();
        exec(
            &mut tx,
            "UPDATE jobs SET escrow_posted = 1 WHERE id = $1",
            &[&job],
        )
        .await;
        tx.commit().await.unwrap();
        let mut tx = db.write().await.unwrap();
        bare_transfer(&mut tx, &format!("{lease}:pay"), &escrow, &provider, "1").await;
        tx.commit().await.unwrap();
        let mut tx = db.write().await.unwrap();
        exec(
            &mut tx,
            "UPDATE leases SET paid = 1 WHERE id = $1",
            &[&lease],
        )
        .await;
        tx.commit().await.unwrap();
        let mut tx = db.write().await.unwrap();
        bare_transfer(&mut tx, &format!("{job}:refund"), &escrow, &buyer, "999").await;
        tx.commit().await.unwrap();
        let mut tx = db.write().await.unwrap();
        exec(
            &mut tx,
            "UPDATE jobs SET state = 'done', finished_at_ms = CAST($1 AS BIGINT) WHERE id = $2",
            &[&now_s, &job],
        )
        .await;
        tx.commit().await.unwrap();
    }
    started.elapsed()
}

/// Most commits a unit's lifecycle may take (issue 12).
const MAX_COMMITS_PER_UNIT: f64 = 3.0;
/// The throughput goal against the measuring device.
const GOAL_RATIO: f64 = 1.2;

/// What one database measured: the median round of each, and commits per
/// unit of each (PostgreSQL only).
struct Measured {
    ours: Duration,
    bare: Duration,
    commits: Option<(f64, f64)>,
}

async fn throughput(url: &str) -> Measured {
    let env = env(url, Vec::new()).await;
    // Make sure the accounts the bare statements touch exist (the
    // provider's and the fees' are made by the first payment).
    let jobs = env.state.jobs.clone();
    ours(&jobs, &env, "warm").await;
    let (mut o, mut b) = (Vec::new(), Vec::new());
    let mut commits = None;
    for round in 0..3 {
        let before = xids(&env.state.db).await;
        o.push(ours(&jobs, &env, &format!("o{round}")).await);
        let between = xids(&env.state.db).await;
        b.push(bare(&env.state.db, &env, &format!("b{round}")).await);
        let after = xids(&env.state.db).await;
        if let (Some(before), Some(between), Some(after)) = (before, between, after) {
            let per_unit = |from: i64, to: i64| (to - from - 1) as f64 / UNITS as f64;
            commits = Some((per_unit(before, between), per_unit(between, after)));
        }
    }
    o.sort();
    b.sort();
    Measured {
        ours: o[1],
        bare: b[1],
        commits,
    }
}

fn row(name: &str, m: &Measured) {
    let ratio = m.bare.as_secs_f64() / m.ours.as_secs_f64();
    let commits = m
        .commits
        .map(|(o, b)| format!("{o:.2} / {b:.2}"))
        .unwrap_or_else(|| "(as PostgreSQL)".into());
    let commits_ok = m.commits.is_none_or(|(o, _)| o <= MAX_COMMITS_PER_UNIT);
    println!(
        "{name:<32} {:>8.0} {:>8.0} units/s {ratio:>6.2}x  {GOAL_RATIO:.1}  {commits:>15}  {}",
        UNITS as f64 / m.ours.as_secs_f64(),
        UNITS as f64 / m.bare.as_secs_f64(),
        if ratio >= GOAL_RATIO && commits_ok {
            "ok"
        } else {
            "MISS"
        }
    );
}

fn percentiles(name: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    println!(
        "{name:<12} {:>8} calls  p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
        samples.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3
    );
}

#[derive(Default)]
struct Samples {
    register: Vec<Duration>,
    heartbeat: Vec<Duration>,
    lease: Vec<Duration>,
    result: Vec<Duration>,
    errors: Vec<String>,
}

fn timed<T>(into: &mut Vec<Duration>, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    into.push(t.elapsed());
    out
}

/// A hostile buyer's [`SCALE_GATED_UNITS`] at the highest bid, requiring
/// a speed only an idle provider of the operator's is rated at.
async fn gated_prefix(env: &Env, at: i64) {
    let anchor = Keypair::generate();
    env.state
        .jobs
        .vouch(anchor.id().as_str(), at)
        .await
        .unwrap();
    let mut capabilities = capabilities();
    capabilities.gpus[0].gflops = Some(100);
    let register = RegisterProvider {
        capabilities,
        ask: Ask {
            per_billion_fuel: 10,
            per_gpu_second: 1,
            per_wall_second: 0,
        },
        class_asks: Default::default(),
        max_concurrent: 1,
        accepts: Default::default(),
    };
    env.state
        .jobs
        .register(anchor.id(), register, at)
        .await
        .unwrap();
    let jobs = submit_chunked(env, SCALE_GATED_UNITS, at, |i, n| SubmitJob {
        bid_percent: Some(agora_wire::limits::MAX_BID_PERCENT),
        max_price: 100_000 * n as u64,
        requirements: agora_wire::api::GpuRequirements {
            min_gflops: Some(100),
            ..Default::default()
        },
        ..submit_request("gated", i, n)
    })
    .await;
    assert!(
        jobs.iter().all(|j| j.priority > 100),
        "at the head of the queue"
    );
}

/// Submit `units` units as jobs of at most `MAX_UNITS`, the `i`th job of
/// `n` units as `request(i, n)` says.
async fn submit_chunked(
    env: &Env,
    units: usize,
    at: i64,
    request: impl Fn(usize, usize) -> SubmitJob,
) -> Vec<agora_wire::api::JobInfo> {
    let mut jobs = Vec::new();
    for i in 0..units.div_ceil(agora_market::jobs::MAX_UNITS) {
        let n = agora_market::jobs::MAX_UNITS.min(units - i * agora_market::jobs::MAX_UNITS);
        let job = env
            .state
            .jobs
            .submit(env.buyer.id(), request(i, n), at)
            .await
            .unwrap();
        jobs.push(job);
    }
    jobs
}

/// The scale run with `units` queued (plus what the run leases, so the
/// queue never runs short) and, when `hostile`, a hostile buyer's
/// [`SCALE_HOSTILE_UNITS`] at the highest bid with caps that cannot pay
/// it; the lease latencies.
fn scale(
    runtime: &tokio::runtime::Runtime,
    url: &str,
    units: usize,
    hostile: bool,
) -> Vec<Duration> {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let origin = agora_wire::auth::origin_of(&base).expect("an http URL");
    let env = runtime.block_on(env(url, vec![origin]));
    let started = Instant::now();
    let leased = SCALE_PROVIDERS * SCALE_ROUNDS;
    runtime.block_on(async {
        // The env's provider, trusted and online, is the ask bids are
        // weighed against.
        let at = now();
        if hostile {
            // Units of 100 s: a run costs up to 100 credits at the trusted
            // provider's ask; the cap pays 9.
            let jobs = submit_chunked(&env, SCALE_HOSTILE_UNITS, at, |i, n| SubmitJob {
                bid_percent: Some(agora_wire::limits::MAX_BID_PERCENT),
                max_price: 9 * 3 * n as u64,
                limits: UnitLimits {
                    timeout_ms: 100_000,
                    ..unit_limits()
                },
                ..submit_request("hostile", i, n)
            })
            .await;
            assert!(
                jobs.iter().all(|j| j.priority == 0),
                "a bid its cap cannot pay is not served first"
            );
            gated_prefix(&env, at).await;
        }
        submit_chunked(&env, units + leased, at, |i, n| {
            submit_request("scale", i, n)
        })
        .await;
    });
    let queued = runtime.block_on(async {
        sqlx::query("SELECT COUNT(*) AS n FROM units WHERE state = 'queued'")
            .fetch_one(&env.state.db.pool)
            .await
            .unwrap()
            .try_get::<i64, _>("n")
            .unwrap()
    });
    println!(
        "\nscale: {queued} units queued ({} leased during the run{}) in {:.1} s",
        leased,
        if hostile {
            format!(
                ", {SCALE_HOSTILE_UNITS} of them a hostile buyer's at the highest bid its caps cannot pay, {SCALE_GATED_UNITS} at the highest bid requiring a speed no leasing provider has"
            )
        } else {
            String::new()
        },
        started.elapsed().as_secs_f64()
    );
    runtime.spawn(agora_market::serve(
        listener,
        env.state.clone(),
        std::future::pending(),
    ));
    let providers: Vec<Keypair> = (0..SCALE_PROVIDERS).map(|_| Keypair::generate()).collect();
    let samples = Arc::new(Mutex::new(Samples::default()));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for chunk in providers.chunks(SCALE_PROVIDERS / SCALE_THREADS + 1) {
            let (base, samples) = (base.clone(), samples.clone());
            scope.spawn(move || {
                let clients: Vec<Client> = chunk
                    .iter()
                    .map(|k| {
                        Client::new(
                            &base,
                            Some(Keypair::from_file_json(&k.to_file_json()).unwrap()),
                        )
                    })
                    .collect();
                let mut mine = Samples::default();
                let register = RegisterProvider {
                    capabilities: capabilities(),
                    ask: Ask {
                        per_billion_fuel: 10,
                        per_gpu_second: 1,
                        per_wall_second: 0,
                    },
                    class_asks: Default::default(),
                    max_concurrent: 4,
                    accepts: Default::default(),
                };
                for c in &clients {
                    if let Err(e) = timed(&mut mine.register, || {
                        c.post::<_, serde_json::Value>("/api/v1/providers", &register, None)
                    }) {
                        mine.errors.push(format!("register: {e}"));
                    }
                }
                for _ in 0..SCALE_ROUNDS {
                    for c in &clients {
                        let beat = Heartbeat {
                            running_units: 0,
                            free_cpu_cores: 2.0,
                            gpu_memory_used_bytes: None,
                            devices: Vec::new(),
                            leases: vec![],
                            keeps: None,
                        };
                        if let Err(e) = timed(&mut mine.heartbeat, || {
                            c.post::<_, HeartbeatReply>("/api/v1/providers/heartbeat", &beat, None)
                        }) {
                            mine.errors.push(format!("heartbeat: {e}"));
                        }
                        match timed(&mut mine.lease, || {
                            c.post::<_, Option<LeaseGrant>>(
                                "/api/v1/leases",
                                &serde_json::json!({}),
                                None,
                            )
                        }) {
                            Ok(Some(grant)) => {
                                let report =
                                    signed_result(c.key().unwrap(), &grant.lease_id, b"out");
                                let path = format!("/api/v1/leases/{}/result", grant.lease_id);
                                if let Err(e) = timed(&mut mine.result, || {
                                    c.post::<_, serde_json::Value>(&path, &report, None)
                                }) {
                                    mine.errors.push(format!("result: {e}"));
                                }
                            }
                            Ok(None) => mine
                                .errors
                                .push("lease: no unit although thousands are queued".into()),
                            Err(e) => mine.errors.push(format!("lease: {e}")),
                        }
                    }
                }
                let mut all = samples.lock().unwrap();
                all.register.extend(mine.register);
                all.heartbeat.extend(mine.heartbeat);
                all.lease.extend(mine.lease);
                all.result.extend(mine.result);
                all.errors.extend(mine.errors);
            });
        }
    });
    let elapsed = started.elapsed();
    let mut s = samples.lock().unwrap();
    let calls = s.register.len() + s.heartbeat.len() + s.lease.len() + s.result.len();
    println!(
        "scale: {SCALE_PROVIDERS} providers x {SCALE_ROUNDS} rounds over HTTP, {SCALE_THREADS} client threads: {calls} calls in {:.1} s ({:.0}/s), {} errors",
        elapsed.as_secs_f64(),
        calls as f64 / elapsed.as_secs_f64(),
        s.errors.len()
    );
    for e in s.errors.iter().take(5) {
        println!("  error: {e}");
    }
    percentiles("register", &mut s.register);
    percentiles("heartbeat", &mut s.heartbeat);
    percentiles("lease", &mut s.lease);
    percentiles("result", &mut s.result);
    let lease = s.lease.clone();
    let (online, report) = runtime.block_on(async {
        let stats = env.state.jobs.stats(now()).await.unwrap();
        (
            stats.providers_online,
            env.state.ledger.check_invariants().await.unwrap(),
        )
    });
    println!(
        "scale: {online} providers online at the end; ledger invariants {}",
        if report.ok { "hold" } else { "VIOLATED" }
    );
    assert!(report.ok, "{:?}", report.violations);
    lease
}

/// The lease latency with [`SCALE_UNITS`] queued (and a hostile prefix)
/// against [`SCALE_BASELINE_UNITS`] queued, each a fresh market.
fn scale_ratio(runtime: &tokio::runtime::Runtime, dir: &std::path::Path) {
    let url = |name: &str| format!("sqlite://{}?mode=rwc", dir.join(name).display());
    let small = scale(runtime, &url("scale-small.db"), SCALE_BASELINE_UNITS, false);
    let large = scale(runtime, &url("scale-large.db"), SCALE_UNITS, true);
    let at = |v: &[Duration], q: f64| v[((v.len() as f64 - 1.0) * q) as usize].as_secs_f64();
    let ratio = |q: f64| at(&large, q) / at(&small, q);
    println!(
        "\nscale: lease latency with {SCALE_UNITS} queued (and {SCALE_HOSTILE_UNITS} hostile) vs {SCALE_BASELINE_UNITS}: p50 {:.2}x, p99 {:.2}x (goal <= {SCALE_GOAL_RATIO:.1}x): {}",
        ratio(0.5),
        ratio(0.99),
        if ratio(0.5) <= SCALE_GOAL_RATIO {
            "ok"
        } else {
            "MISS"
        }
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let only_scale = std::env::args().any(|a| a == "scale");
    let dir = std::env::temp_dir().join(format!("agora-bench-lifecycle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    if !only_scale {
        println!(
            "\nagora lifecycle benchmarks (throughput: ours, bare SQL; ratio = ours / bare)\n"
        );
        println!(
            "{:<32} {:>8} {:>8} {:<7} {:>7} {:>4}  {:>15}",
            "case", "ours", "bare", "unit", "ratio", "goal", "commits/unit"
        );
        let m = runtime.block_on(throughput(&format!(
            "sqlite://{}?mode=rwc",
            dir.join("throughput.db").display()
        )));
        row("unit lifecycle, SQLite file", &m);
        let pg = std::env::var("AGORA_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!("agora_bench_lc_{}", std::process::id());
        let measured = runtime.block_on(async {
            let admin = Db::admin_pool(&pg).await?;
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&admin)
                .await?;
            let measured = throughput(&format!("{pg}?options=-c%20search_path%3D{schema}")).await;
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&admin)
                .await?;
            Ok::<_, sqlx::Error>(measured)
        });
        match measured {
            Ok(m) => row("unit lifecycle, PostgreSQL", &m),
            Err(e) => println!("unit lifecycle, PostgreSQL: skipped, no database at {pg}: {e}"),
        }
    }
    if !std::env::args().any(|a| a == "throughput") {
        scale_ratio(&runtime, &dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
