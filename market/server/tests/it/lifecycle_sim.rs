//! A seeded, replayable simulation of the whole job lifecycle under attack,
//! through the API: honest and hostile buyers (resolving their own holds,
//! taking the market's ids, absurd limits, racing retries) and honest and
//! hostile providers (a sybil pair answering garbage, an inflater, an error
//! spammer, a hoarder), with the market restarted, requests dropped
//! mid-flight and the clock moved between any two steps. After every step
//! the market's own invariant check (the books and every job's escrow
//! equation) must pass and no garbage may have been verified; at the end,
//! once time has run out, every job is finished and honest work that could
//! finish did. A failure prints the seed; `AGORA_SEED=N` replays it, and
//! `AGORA_SIM_STEPS` runs longer (`cargo xtask sim`).

use crate::jobs::{b64, provider, publish, untrusted_provider};
use crate::*;
use agora_kernels::rng::Rng;
use agora_wire::api::{ResultReport, RunOutcome};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Behaviour {
    /// Trusted (vouched), right answers, true usage.
    Honest,
    /// A fresh key, right answers.
    Newcomer,
    /// A fresh key answering garbage (two of them: a sybil pair).
    Sybil,
    /// Right answers, absurd usage claims.
    Inflater,
    /// Reports an error for every unit.
    Failer,
    /// Leases and never answers, heartbeating to keep what it holds.
    Hoarder,
}

struct Actor {
    key: Keypair,
    behaviour: Behaviour,
    /// Grants it holds and has not answered.
    held: Vec<Value>,
}

/// The one right output of a unit: every honest provider computes it.
fn right(input_digest: &str) -> Vec<u8> {
    format!("out:{input_digest}").into_bytes()
}

async fn report(
    state: &AppState,
    actor: &Actor,
    grant: &Value,
    cut: Option<Duration>,
) -> Option<(StatusCode, Value)> {
    let lease_id = grant["lease_id"].as_str().unwrap();
    let input = grant["input_digest"].as_str().unwrap();
    let (outcome, output) = match actor.behaviour {
        Behaviour::Sybil => (RunOutcome::Ok, Some(b"garbage".to_vec())),
        Behaviour::Failer => (RunOutcome::JobError, None),
        _ => (RunOutcome::Ok, Some(right(input))),
    };
    let (fuel, gpu) = if actor.behaviour == Behaviour::Inflater {
        (u64::MAX, u64::MAX)
    } else {
        (1_000_000_000, 1_000)
    };
    let digest = output.as_deref().map(agora_wire::digest_hex);
    let signature = actor.key.sign(&ResultReport::signed_bytes(
        lease_id,
        outcome,
        digest.as_deref(),
        &[],
        fuel,
        gpu,
    ));
    let body = json!({"outcome": outcome, "message": null, "output_base64": output.as_deref().map(b64), "output_digest": digest,
                      "fuel_used": fuel, "gpu_time_us": gpu, "peak_memory_bytes": 1, "signature": signature});
    let path = format!("/api/v1/leases/{lease_id}/result");
    let call = call_on(
        state,
        "POST",
        &path,
        Some(serde_json::to_vec(&body).unwrap()),
        Some(&actor.key),
        None,
    );
    match cut {
        Some(cut) => tokio::time::timeout(cut, call).await.ok(),
        None => Some(call.await),
    }
}

async fn check(state: &AppState, m: &TestMarket, seed: u64, step: usize) {
    if let Err(e) = state.jobs.check_escrows().await {
        panic!("seed {seed} step {step}: the escrow check failed: {e:?}");
    }
    if let Err(e) = state.ledger.check_invariants().await {
        panic!("seed {seed} step {step}: the ledger check failed: {e:?}");
    }
    let (status, report) = call_on(
        state,
        "GET",
        "/api/v1/operator/invariants",
        None,
        Some(&m.operator),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "seed {seed} step {step}: {report}");
    assert_eq!(report["ok"], true, "seed {seed} step {step}: {report}");
    // Garbage is never the verified output of a unit.
    let garbage = agora_wire::digest_hex(b"garbage");
    let verified: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM units WHERE output_digest = $1")
        .bind(&garbage)
        .fetch_one(&state.db.pool)
        .await
        .unwrap();
    assert_eq!(
        verified, 0,
        "seed {seed} step {step}: a sybil pair had garbage verified"
    );
}

/// A hostile buyer's move against its own job: every one is refused.
async fn hostile_buyer(state: &AppState, buyer: &Keypair, job: &str, rng: &mut Rng, seed: u64) {
    let body = match rng.range(0, 3) {
        0 => {
            json!({"id": format!("x-{}", rng.next_u64()), "kind": "post", "pending_id": format!("job:{job}:hold"), "amount": 0})
        }
        1 => {
            json!({"id": format!("x-{}", rng.next_u64()), "kind": "void", "pending_id": format!("job:{job}:hold")})
        }
        2 => {
            json!({"id": format!("job:{job}:refund"), "debit": buyer.id(), "credit": buyer.id(), "amount": 1, "kind": "single"})
        }
        _ => {
            json!({"id": format!("x-{}", rng.next_u64()), "debit": format!("job:{job}"), "credit": buyer.id(), "amount": 1, "kind": "single"})
        }
    };
    let (status, reply) = call_on(
        state,
        "POST",
        "/api/v1/transfers",
        Some(serde_json::to_vec(&body).unwrap()),
        Some(buyer),
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "seed {seed}: {body} -> {reply}"
    );
}

/// Another buyer tries to cancel job `job` of buyer `b` (refused as if
/// the job did not exist), then its buyer cancels it, the request maybe
/// cut off and sent again: a cancelled job answers the same, one that
/// ended otherwise is refused.
async fn cancel(
    state: &AppState,
    buyers: &[Keypair],
    b: usize,
    job: &str,
    rng: &mut Rng,
    seed: u64,
) {
    let path = format!("/api/v1/jobs/{job}/cancel");
    let stranger = &buyers[(b + 1) % buyers.len()];
    let (status, reply) = call_on(state, "POST", &path, None, Some(stranger), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "seed {seed}: {reply}");
    let send = call_on(state, "POST", &path, None, Some(&buyers[b]), None);
    let first = match rng.range(0, 3) {
        0 => tokio::time::timeout(Duration::from_micros(rng.range(0, 3000) as u64), send)
            .await
            .ok(),
        _ => Some(send.await),
    };
    quiesce(state).await;
    for (status, reply) in
        first
            .into_iter()
            .chain([call_on(state, "POST", &path, None, Some(&buyers[b]), None).await])
    {
        match status {
            StatusCode::OK => assert!(
                ["cancelled", "running", "done"].contains(&reply["state"].as_str().unwrap()),
                "seed {seed}: {reply}"
            ),
            StatusCode::CONFLICT => assert_eq!(reply["error"]["code"], "job_ended", "seed {seed}"),
            other => panic!("seed {seed}: cancelling answered {other}: {reply}"),
        }
    }
}

async fn submit_job(
    state: &AppState,
    buyer: &Keypair,
    rng: &mut Rng,
    absurd: bool,
) -> Option<String> {
    let units = rng.range(1, 3) as usize;
    let inputs: Vec<String> = (0..units)
        .map(|_| b64(&rng.next_u64().to_le_bytes()))
        .collect();
    let fuel = if absurd { u64::MAX } else { 4_000_000_000 };
    let replicas = rng.range(1, 2);
    let body = json!({"package": "saxpy", "inputs_base64": inputs, "replicas": replicas, "max_price": 400 * units as u64 * 3,
                      "limits": {"fuel": fuel, "memory_bytes": 1 << 20, "timeout_ms": 10_000, "gpu": false}});
    let (status, job) = call_on(
        state,
        "POST",
        "/api/v1/jobs",
        Some(serde_json::to_vec(&body).unwrap()),
        Some(buyer),
        None,
    )
    .await;
    if absurd {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{job}");
        return None;
    }
    assert_eq!(status, StatusCode::OK, "{job}");
    Some(job["id"].as_str().unwrap().to_string())
}

async fn beat(state: &AppState, actor: &Actor) {
    let named: Vec<Value> = actor
        .held
        .iter()
        .map(|g| json!({"lease_id": g["lease_id"]}))
        .collect();
    let body = json!({"running_units": named.len(), "free_cpu_cores": 1.0, "leases": named});
    let (status, reply) = call_on(
        state,
        "POST",
        "/api/v1/providers/heartbeat",
        Some(serde_json::to_vec(&body).unwrap()),
        Some(&actor.key),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
}

async fn simulate(m: &TestMarket, seed: u64, steps: usize) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("agora_market=warn")
        .with_test_writer()
        .try_init();
    println!("seed {seed} (replay with AGORA_SEED={seed})");
    let mut rng = Rng::new(seed);
    publish(m, "saxpy").await;
    let buyers: Vec<Keypair> = (0..3).map(|_| Keypair::generate()).collect();
    for b in &buyers {
        m.fund(b, 1_000_000).await;
    }
    let mut actors = Vec::new();
    for behaviour in [
        Behaviour::Honest,
        Behaviour::Honest,
        Behaviour::Newcomer,
        Behaviour::Sybil,
        Behaviour::Sybil,
        Behaviour::Inflater,
        Behaviour::Failer,
        Behaviour::Hoarder,
    ] {
        let key = match behaviour {
            Behaviour::Honest | Behaviour::Inflater => provider(m, 10).await,
            _ => untrusted_provider(m, 10).await,
        };
        actors.push(Actor {
            key,
            behaviour,
            held: Vec::new(),
        });
    }
    let mut state = m.state.clone();
    let mut jobs: Vec<(usize, String)> = Vec::new();
    for step in 0..steps {
        match rng.range(0, 11) {
            0 | 1 => {
                let b = rng.range(0, 2) as usize;
                let absurd = rng.range(0, 9) == 0;
                if let Some(id) = submit_job(&state, &buyers[b], &mut rng, absurd).await {
                    jobs.push((b, id));
                }
            }
            2 if !jobs.is_empty() => {
                let (b, id) = jobs[rng.range(0, jobs.len() as u32 - 1) as usize].clone();
                if rng.range(0, 2) == 0 {
                    cancel(&state, &buyers, b, &id, &mut rng, seed).await;
                } else {
                    hostile_buyer(&state, &buyers[b], &id, &mut rng, seed).await;
                }
            }
            // Time passes: providers answer what they hold first (all but
            // the hoarder), everyone heartbeats every few seconds, the
            // sweeper runs.
            3 => {
                for a in actors
                    .iter_mut()
                    .filter(|a| a.behaviour != Behaviour::Hoarder)
                {
                    for grant in std::mem::take(&mut a.held) {
                        report(&state, a, &grant, None).await;
                    }
                }
                for _ in 0..rng.range(1, 4) {
                    state.advance_clock(Duration::from_millis(rng.range(0, 10_000) as u64));
                    for a in &actors {
                        beat(&state, a).await;
                    }
                    state.sweep().await.unwrap();
                }
            }
            // The market restarts on the same database.
            4 => {
                let clock = state.now_ms() - agora_wire::auth::now_ms();
                state = m.replica().await;
                state.advance_clock(Duration::from_millis(clock.max(0) as u64));
            }
            // A provider answers one of its leases: once, twice, or cut off.
            5..=7 => {
                let a = rng.range(0, actors.len() as u32 - 1) as usize;
                if actors[a].behaviour == Behaviour::Hoarder || actors[a].held.is_empty() {
                    continue;
                }
                let grant = actors[a].held.remove(0);
                let cut = (rng.range(0, 7) == 0)
                    .then(|| Duration::from_micros(rng.range(0, 3000) as u64));
                let first = report(&state, &actors[a], &grant, cut).await;
                quiesce(&state).await;
                if rng.range(0, 3) == 0 || first.is_none() {
                    // A retry (or a duplicate racing the first): never two effects.
                    let again = report(&state, &actors[a], &grant, None).await.unwrap();
                    if first.as_ref().is_some_and(|(s, _)| *s == StatusCode::OK) {
                        assert_ne!(
                            again.0,
                            StatusCode::OK,
                            "seed {seed}: a result accepted twice"
                        );
                    }
                }
            }
            // A provider leases.
            _ => {
                let a = rng.range(0, actors.len() as u32 - 1) as usize;
                beat(&state, &actors[a]).await;
                let (status, grant) = call_on(
                    &state,
                    "POST",
                    "/api/v1/leases",
                    Some(b"{}".to_vec()),
                    Some(&actors[a].key),
                    None,
                )
                .await;
                assert_eq!(status, StatusCode::OK, "seed {seed}: {grant}");
                if !grant.is_null() {
                    actors[a].held.push(grant);
                }
            }
        }
        check(&state, m, seed, step).await;
    }
    // The end: honest providers drain the queue, then time runs out.
    // (Units others hold are free once their leases lapse: a few empty
    // rounds in a row mean nothing is left.)
    let mut empty_rounds = 0;
    for _ in 0..1000 {
        let mut leased = false;
        for a in actors
            .iter_mut()
            .filter(|a| a.behaviour == Behaviour::Honest)
        {
            beat(&state, a).await;
            for _ in 0..4 {
                let (_, grant) = call_on(
                    &state,
                    "POST",
                    "/api/v1/leases",
                    Some(b"{}".to_vec()),
                    Some(&a.key),
                    None,
                )
                .await;
                if grant.is_null() {
                    break;
                }
                a.held.push(grant);
                leased = true;
            }
        }
        for a in actors
            .iter_mut()
            .filter(|a| a.behaviour == Behaviour::Honest)
        {
            for grant in std::mem::take(&mut a.held) {
                report(&state, a, &grant, None).await;
            }
        }
        state.advance_clock(Duration::from_secs(40));
        state.sweep().await.unwrap();
        empty_rounds = if leased { 0 } else { empty_rounds + 1 };
        if empty_rounds == 3 {
            break;
        }
    }
    state.advance_clock(Duration::from_secs(2 * 24 * 3600));
    for _ in 0..3 {
        state.sweep().await.unwrap();
    }
    check(&state, m, seed, steps).await;
    let running: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state = 'running'")
        .fetch_one(&state.db.pool)
        .await
        .unwrap();
    assert_eq!(
        running, 0,
        "seed {seed}: every job finished once its time ran out"
    );
    // A cancelled job's units were withdrawn, and nothing else.
    let withdrawn: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM units u JOIN jobs j ON j.id = u.job_id
         WHERE (j.state = 'cancelled') <> (u.message IS NOT NULL AND u.message = 'the buyer cancelled the job')
           AND u.state <> 'verified'",
    )
    .fetch_one(&state.db.pool)
    .await
    .unwrap();
    assert_eq!(
        withdrawn, 0,
        "seed {seed}: units withdrawn are a cancelled job's"
    );
    // Honest work that could finish did: with two trusted honest providers
    // leasing until nothing was left, every unit of a job its buyer did not
    // cancel is verified.
    let unverified: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM units u JOIN jobs j ON j.id = u.job_id WHERE u.state <> 'verified' AND j.state <> 'cancelled'")
            .fetch_one(&state.db.pool)
            .await
            .unwrap();
    if unverified > 0 {
        let rows: Vec<(String, i64, String, i64, i64, Option<String>)> =
            sqlx::query_as("SELECT u.job_id, u.idx, u.state, u.wanted, u.quorum, u.message FROM units u JOIN jobs j ON j.id = u.job_id WHERE u.state <> 'verified' AND j.state <> 'cancelled' LIMIT 5").fetch_all(&state.db.pool).await.unwrap();
        for (job, idx, st, wanted, quorum, message) in rows {
            let leases: Vec<(String, String, i64, Option<String>)> = sqlx::query_as("SELECT provider, state, trusted, output_digest FROM leases WHERE job_id = $1 AND idx = $2")
                .bind(&job).bind(idx).fetch_all(&state.db.pool).await.unwrap();
            let who = |p: &str| {
                actors
                    .iter()
                    .find(|a| a.key.id().as_str() == p)
                    .map(|a| a.behaviour)
            };
            let leases: Vec<_> = leases
                .iter()
                .map(|(p, s, t, d)| (who(p), s, t, d.as_deref().map(|d| &d[..8])))
                .collect();
            eprintln!("{job}/{idx} {st} wanted {wanted} quorum {quorum} {message:?}: {leases:?}");
        }
        for a in &actors {
            let row: (f64, f64, f64, i64, i64) = sqlx::query_as("SELECT good, bad, confirmed, last_heartbeat_ms, (SELECT COUNT(*) FROM leases l WHERE l.provider = p.id AND l.state = 'active') FROM providers p WHERE id = $1")
                .bind(a.key.id().as_str()).fetch_one(&state.db.pool).await.unwrap();
            eprintln!("{:?}: {row:?}", a.behaviour);
        }
    }
    assert_eq!(
        unverified, 0,
        "seed {seed}: honest providers could finish every unit"
    );
    println!("seed {seed}: {steps} steps, {} jobs", jobs.len());
}

/// The seeds to run: `AGORA_SEED` when set (a replay), a fixed set in CI,
/// else one fresh seed.
fn seeds() -> Vec<u64> {
    match std::env::var("AGORA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => vec![seed],
        None if std::env::var("CI").is_ok_and(|v| v == "true") => CI_SEEDS.to_vec(),
        None => vec![agora_kernels::rng::Rng::fresh_seed()],
    }
}

/// Fixed seeds CI runs (the order of concurrent requests still varies).
const CI_SEEDS: [u64; 2] = [20261202, 1796150243445951158];

fn steps(default: usize) -> usize {
    std::env::var("AGORA_SIM_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_under_attack_sqlite() {
    for seed in seeds() {
        let m = TestMarket::sqlite().await;
        simulate(&m, seed, steps(300)).await;
        m.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_under_attack_postgres() {
    for seed in seeds() {
        let m = TestMarket::postgres().await;
        simulate(&m, seed, steps(200)).await;
        m.cleanup().await;
    }
}
