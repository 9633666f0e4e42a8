//! The job lifecycle through the API, with providers simulated by signed
//! requests: escrow, leases, replication and quorum, settlement, refunds.

use crate::*;
use agora_market::verify::{VerifyFailure, VerifyLimits};
use agora_wire::api::{ResultReport, RunOutcome};
use agora_wire::log::{LogAction, LogEntry};
use base64::Engine as _;
use std::time::Duration;

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub async fn publish(m: &TestMarket, name: &str) -> Keypair {
    publish_guest(m, name, "saxpy").await
}

pub async fn publish_guest(m: &TestMarket, name: &str, guest_name: &str) -> Keypair {
    let author = Keypair::generate();
    let bytes = guest(guest_name);
    let action = LogAction::Release {
        version: "1.0.0".into(),
        digest: agora_wire::digest_hex(&bytes),
        size: bytes.len() as u64,
    };
    let entry = LogEntry::new_signed(&author, name, None, action);
    let body = json!({"description": "d", "category": "c", "tags": [], "component_base64": b64(&bytes), "entry": entry});
    let (status, reply) = m
        .call(
            "POST",
            &format!("/api/v1/packages/{name}/versions"),
            Some(&body),
            Some(&author),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    author
}

/// A canary of the package `saxpy` (published as such) and its answer:
/// saxpy of small integers is exact everywhere, so it has one answer.
pub fn saxpy_canary() -> (Value, Vec<u8>) {
    let floats = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (input, expected) = (
        floats(&[2.0, 1.0, 2.0, 3.0, 10.0, 20.0, 30.0]),
        floats(&[12.0, 24.0, 36.0]),
    );
    let canary = json!({"package": "saxpy", "version": "1.0.0", "input_base64": b64(&input), "expected_output_base64": b64(&expected),
                        "limits": {"fuel": 1_000_000_000u64, "memory_bytes": 64u64 << 20, "timeout_ms": 10_000, "gpu": false}});
    (canary, expected)
}

/// A provider the operator vouches for (trusted from the start, as the
/// operator's own hosts are).
pub async fn provider(m: &TestMarket, per_billion_fuel: u64) -> Keypair {
    let key = untrusted_provider(m, per_billion_fuel).await;
    vouch(m, &key).await;
    key
}

/// The operator vouches for `key`.
pub async fn vouch(m: &TestMarket, key: &Keypair) {
    let (status, body) = m
        .call(
            "POST",
            "/api/v1/operator/vouch",
            Some(&json!({"provider": key.id()})),
            Some(&m.operator),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A fresh key: its results count only with independent evidence.
pub async fn untrusted_provider(m: &TestMarket, per_billion_fuel: u64) -> Keypair {
    let key = Keypair::generate();
    let gpu = json!({"name": "llvmpipe", "backend": "vulkan", "device_type": "cpu"});
    let register = json!({"capabilities": {"cpu_cores": 2, "memory_bytes": 1u64 << 30, "gpus": [gpu], "cuda": false, "kind": "native"},
                          "ask": {"per_billion_fuel": per_billion_fuel, "per_gpu_second": 1}, "max_concurrent": 4});
    assert_eq!(
        m.call("POST", "/api/v1/providers", Some(&register), Some(&key))
            .await
            .0,
        StatusCode::OK
    );
    heartbeat(m, &key).await;
    key
}

/// A provider with a record that makes it trusted (set directly: earning
/// trust is tested on its own).
pub async fn trusted_provider(m: &TestMarket, per_billion_fuel: u64) -> Keypair {
    let key = provider(m, per_billion_fuel).await;
    sqlx::query("UPDATE providers SET good = 20, bad = 0 WHERE id = $1")
        .bind(key.id().as_str())
        .execute(&m.state.db.pool)
        .await
        .unwrap();
    key
}

pub async fn heartbeat(m: &TestMarket, key: &Keypair) {
    let (status, body) = m
        .call(
            "POST",
            "/api/v1/providers/heartbeat",
            Some(&json!({"running_units": 0, "free_cpu_cores": 2.0})),
            Some(key),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A heartbeat of `key` with these device readings, taken.
pub async fn heartbeat_with(m: &TestMarket, key: &Keypair, devices: Value) {
    let beat = json!({"running_units": 0, "free_cpu_cores": 2.0, "devices": devices});
    let (status, body) = m
        .call(
            "POST",
            "/api/v1/providers/heartbeat",
            Some(&beat),
            Some(key),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

pub async fn submit(
    m: &TestMarket,
    buyer: &Keypair,
    package: &str,
    inputs: &[&[u8]],
    max_price: u64,
    replicas: u32,
) -> String {
    let body = json!({"package": package, "inputs_base64": inputs.iter().map(|i| b64(i)).collect::<Vec<_>>(),
                      "limits": {"fuel": 4_000_000_000u64, "memory_bytes": 64u64 << 20, "timeout_ms": 10_000, "gpu": false},
                      "max_price": max_price, "replicas": replicas});
    let (status, job) = m
        .call("POST", "/api/v1/jobs", Some(&body), Some(buyer))
        .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    job["id"].as_str().unwrap().to_string()
}

pub async fn lease(m: &TestMarket, p: &Keypair) -> Option<Value> {
    let (status, grant) = m
        .call("POST", "/api/v1/leases", Some(&json!({})), Some(p))
        .await;
    assert_eq!(status, StatusCode::OK, "{grant}");
    (!grant.is_null()).then_some(grant)
}

pub async fn answer(
    m: &TestMarket,
    p: &Keypair,
    grant: &Value,
    output: Result<&[u8], &str>,
) -> (StatusCode, Value) {
    answer_using(m, p, grant, output, 2_000_000_000, 0).await
}

/// [`answer`], claiming `fuel` and `gpu_us` of usage.
pub async fn answer_using(
    m: &TestMarket,
    p: &Keypair,
    grant: &Value,
    output: Result<&[u8], &str>,
    fuel: u64,
    gpu_us: u64,
) -> (StatusCode, Value) {
    let lease_id = grant["lease_id"].as_str().unwrap();
    let (outcome, digest, body) = match output {
        Ok(bytes) => ("ok", Some(agora_wire::digest_hex(bytes)), Some(b64(bytes))),
        Err(kind) => (kind, None, None),
    };
    let typed: RunOutcome = serde_json::from_value(json!(outcome)).expect("an outcome's wire form");
    let signature = p.sign(&ResultReport::signed_bytes(
        lease_id,
        typed,
        digest.as_deref(),
        &[],
        fuel,
        gpu_us,
    ));
    let report = json!({"outcome": outcome, "message": output.err(), "output_base64": body, "output_digest": digest,
                        "fuel_used": fuel, "gpu_time_us": gpu_us, "peak_memory_bytes": 1024, "signature": signature});
    m.call(
        "POST",
        &format!("/api/v1/leases/{lease_id}/result"),
        Some(&report),
        Some(p),
    )
    .await
}

/// `key`'s reputation in a `GET /api/v1/providers` listing.
pub fn reputation(providers: &Value, key: &Keypair) -> f64 {
    providers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == key.id().as_str())
        .unwrap()["reputation"]
        .as_f64()
        .unwrap()
}

/// Lease and answer every queued unit with `output(input)`.
pub async fn run_all(m: &TestMarket, p: &Keypair, output: impl Fn(usize) -> Vec<u8>) {
    let mut i = 0;
    while let Some(grant) = lease(m, p).await {
        assert_eq!(answer(m, p, &grant, Ok(&output(i))).await.0, StatusCode::OK);
        i += 1;
    }
}

pub async fn job(m: &TestMarket, buyer: &Keypair, id: &str) -> Value {
    let (status, job) = m
        .call("GET", &format!("/api/v1/jobs/{id}"), None, Some(buyer))
        .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    job
}

/// Credits never appear or vanish: the buyer's loss is the providers' and
/// the market's gain.
pub async fn assert_conserved(
    m: &TestMarket,
    buyer: &Keypair,
    funded: u64,
    job: &Value,
    providers: &[&Keypair],
) {
    let cost = &job["cost"];
    let spent = cost["paid_to_providers"].as_u64().unwrap() + cost["fees"].as_u64().unwrap();
    assert_eq!(
        spent + cost["refunded"].as_u64().unwrap() + cost["held"].as_u64().unwrap(),
        job["max_price"].as_u64().unwrap(),
        "{cost}"
    );
    assert_eq!(
        m.available(buyer).await,
        funded - spent - cost["held"].as_u64().unwrap()
    );
    let mut earned = 0;
    for p in providers {
        earned += m.available(p).await;
    }
    assert_eq!(earned, cost["paid_to_providers"].as_u64().unwrap());
    m.assert_invariants().await;
}

both_dbs!(
    a_new_provider_is_confirmed_by_a_trusted_one_and_both_are_paid,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "saxpy", &[b"unit-0"], 600, 1).await;
        assert_eq!(m.available(&buyer).await, 400, "the cap is held");
        let (p1, p2) = (untrusted_provider(m, 10).await, provider(m, 30).await);
        // Past the market's prices as the submit read them (a replica
        // reads them once per 10 s).
        m.state.advance_clock(Duration::from_secs(11));
        let (_, stats) = m.call("GET", "/api/v1/stats", None, None).await;
        assert_eq!(stats["providers_online"], 2, "{stats}");
        assert_eq!(stats["capacity"], 8);
        assert_eq!(stats["queued_units"], 1);
        assert!(
            stats["suggested_ask"]["per_billion_fuel"].as_u64().unwrap() >= 30,
            "the median ask, raised by the queue: {stats}"
        );
        let g1 = lease(m, &p1).await.expect("a unit for p1");
        assert!(
            lease(m, &p1).await.is_none(),
            "never two replicas of a unit on one provider"
        );
        let g2 = lease(m, &p2)
            .await
            .expect("a new provider is confirmed by a trusted second replica");
        assert_eq!(answer(m, &p1, &g1, Ok(b"out")).await.0, StatusCode::OK);
        assert_eq!(
            job(m, &buyer, &id).await["state"],
            "running",
            "one untrusted result is not enough"
        );
        assert_eq!(answer(m, &p2, &g2, Ok(b"out")).await.0, StatusCode::OK);
        let done = job(m, &buyer, &id).await;
        assert_eq!(done["state"], "done", "{done}");
        assert_eq!(done["units"][0]["state"], "verified");
        // 2e9 fuel at 10 and 30 per billion = 20 and 60; fee 5% = 1 and 3.
        assert_eq!(done["cost"]["paid_to_providers"], 76);
        assert_eq!(done["cost"]["fees"], 4);
        assert_eq!(done["cost"]["refunded"], 520);
        assert_conserved(m, &buyer, 1000, &done, &[&p1, &p2]).await;
        let (status, out) = call_on(
            &m.state,
            "GET",
            &format!("/api/v1/jobs/{id}/units/0/output"),
            None,
            Some(&buyer),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(out, Value::String("out".into()));
        // Each provider's activity shows its result and what it earned.
        let (status, activity) = m
            .call(
                "GET",
                &format!(
                    "/api/v1/providers/{}/activity?bucket_s=3600&buckets=24",
                    p1.id()
                ),
                None,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{activity}");
        let buckets = activity["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), 24);
        let sum = |field: &str| {
            buckets
                .iter()
                .map(|b| b[field].as_u64().unwrap())
                .sum::<u64>()
        };
        assert_eq!((sum("units"), sum("earned")), (1, 19), "{activity}");
        assert!(buckets.last().unwrap()["utilization"].as_f64().unwrap() >= 0.0);
        let (status, _) = m
            .call("GET", "/api/v1/providers/nobody/activity", None, None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // Settling again pays nothing twice.
        m.state.jobs.settle(&id, m.state.now_ms()).await.unwrap();
        assert_conserved(m, &buyer, 1000, &job(m, &buyer, &id).await, &[&p1, &p2]).await;
    }
);

both_dbs!(
    a_cheater_loses_the_quorum_and_is_not_paid,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "saxpy", &[b"u"], 900, 2).await;
        let (honest, cheat, third) = (
            provider(m, 10).await,
            provider(m, 10).await,
            provider(m, 10).await,
        );
        let (g1, g2) = (
            lease(m, &honest).await.unwrap(),
            lease(m, &cheat).await.unwrap(),
        );
        answer(m, &honest, &g1, Ok(b"right")).await;
        answer(m, &cheat, &g2, Ok(b"wrong")).await;
        assert_eq!(
            job(m, &buyer, &id).await["state"],
            "running",
            "a tie needs a tie-breaker"
        );
        let g3 = lease(m, &third).await.expect("a third replica");
        answer(m, &third, &g3, Ok(b"right")).await;
        let done = job(m, &buyer, &id).await;
        assert_eq!(done["state"], "done");
        assert_eq!(m.available(&cheat).await, 0, "the cheater is not paid");
        assert!(m.available(&honest).await > 0);
        let (_, providers) = m.call("GET", "/api/v1/providers", None, None).await;
        let rep = |k: &Keypair| reputation(&providers, k);
        assert!(rep(&cheat) < rep(&honest), "the cheater is down-ranked");
        assert_conserved(m, &buyer, 1000, &done, &[&honest, &cheat, &third]).await;
    }
);

both_dbs!(
    a_lost_lease_expires_and_the_unit_runs_elsewhere,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "saxpy", &[b"u"], 600, 2).await;
        let (gone, p2, p3) = (
            provider(m, 10).await,
            provider(m, 10).await,
            provider(m, 10).await,
        );
        let lost = lease(m, &gone).await.unwrap();
        let g2 = lease(m, &p2).await.unwrap();
        answer(m, &p2, &g2, Ok(b"x")).await;
        assert!(lease(m, &p3).await.is_none(), "both replicas are taken");
        m.state.advance_clock(Duration::from_secs(31));
        heartbeat(m, &p3).await;
        m.state.sweep().await.unwrap();
        let (status, body) = answer(m, &gone, &lost, Ok(b"x")).await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "a result for an expired lease is refused: {body}"
        );
        let g3 = lease(m, &p3).await.expect("the unit is leased again");
        answer(m, &p3, &g3, Ok(b"x")).await;
        let done = job(m, &buyer, &id).await;
        assert_eq!(done["state"], "done");
        assert_eq!(m.available(&gone).await, 0);
        assert_conserved(m, &buyer, 1000, &done, &[&gone, &p2, &p3]).await;
    }
);

both_dbs!(
    a_result_from_another_provider_is_refused,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        submit(m, &buyer, "saxpy", &[b"u"], 600, 1).await;
        let (p1, p2) = (provider(m, 10).await, provider(m, 10).await);
        let grant = lease(m, &p1).await.unwrap();
        let (status, body) = answer(m, &p2, &grant, Ok(b"x")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
);

both_dbs!(
    a_unit_that_traps_everywhere_fails_is_billed_and_refunded_the_rest,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "saxpy", &[b"u"], 600, 1).await;
        // Two trusted providers (the operator's hosts; the second with a long
        // record) trap the same way, to the instruction: the job's own doing.
        let providers = [provider(m, 10).await, trusted_provider(m, 10).await];
        for p in &providers {
            let grant = lease(m, p)
                .await
                .expect("the unit is leased again after a failure");
            assert_eq!(answer(m, p, &grant, Err("trap")).await.0, StatusCode::OK);
        }
        let failed = job(m, &buyer, &id).await;
        assert_eq!(failed["state"], "failed", "{failed}");
        assert!(
            lease(m, &provider(m, 10).await).await.is_none(),
            "a failed unit is not leased again"
        );
        // The job's own failure is billed: two runs of 2e9 fuel at 10 per
        // billion, 20 each (19 to the provider, 1 fee); the rest comes back.
        assert_eq!(failed["cost"]["paid_to_providers"], 38, "{failed}");
        assert_eq!(failed["cost"]["refunded"], 560);
        assert_eq!(m.available(&buyer).await, 960);
        let refs: Vec<&Keypair> = providers.iter().collect();
        assert_conserved(m, &buyer, 1000, &failed, &refs).await;
        // A trap is the job's doing: nobody's reputation moved.
        let (_, listed) = m.call("GET", "/api/v1/providers", None, None).await;
        let trusted = providers[1].id().to_string();
        for p in listed.as_array().unwrap() {
            let unchanged = if p["id"] == trusted.as_str() {
                21.0 / 22.0
            } else {
                0.5
            };
            assert_eq!(p["reputation"].as_f64().unwrap(), unchanged, "{p}");
        }
    }
);

both_dbs!(
    a_cap_below_every_ask_waits_then_expires_refunded,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "saxpy", &[b"u"], 30, 1).await;
        let pricey = provider(m, 1000).await;
        assert!(
            lease(m, &pricey).await.is_none(),
            "the ask does not fit the cap"
        );
        m.state.advance_clock(Duration::from_secs(25 * 3600));
        m.state.sweep().await.unwrap();
        let expired = job(m, &buyer, &id).await;
        assert_eq!(expired["state"], "expired", "{expired}");
        assert_eq!(m.available(&buyer).await, 1000);
        m.assert_invariants().await;
    }
);

both_dbs!(
    two_replicas_leasing_one_queue_never_double_lease,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 100_000).await;
        let inputs: Vec<Vec<u8>> = (0..6).map(|i| vec![i as u8]).collect();
        let refs: Vec<&[u8]> = inputs.iter().map(|v| v.as_slice()).collect();
        submit(m, &buyer, "saxpy", &refs, 60_000, 2).await;
        let replicas = [m.state.clone(), m.replica().await];
        let mut providers = Vec::new();
        for _ in 0..6 {
            providers.push(provider(m, 10).await);
        }
        let mut tasks = Vec::new();
        for (i, p) in providers.iter().enumerate() {
            for round in 0..3 {
                let state = replicas[(i + round) % 2].clone();
                let id = p.id().clone();
                tasks.push(tokio::spawn(async move {
                    state.jobs.lease(&id, state.now_ms()).await
                }));
            }
        }
        let mut grants = Vec::new();
        for t in tasks {
            if let Some(g) = t.await.unwrap().unwrap() {
                grants.push(g);
            }
        }
        assert!(
            grants.len() <= 12,
            "never more leases than replica slots: {}",
            grants.len()
        );
        // A request that lost a race gets nothing and asks again: drain.
        for p in &providers {
            while let Some(g) = m.state.jobs.lease(p.id(), m.state.now_ms()).await.unwrap() {
                grants.push(g);
            }
        }
        // Each unit wants 2 replicas: 12 leases, none lost,
        // never two on one provider for one unit.
        assert_eq!(grants.len(), 12, "every replica slot was leased once");
        let mut seen = std::collections::BTreeSet::new();
        for g in &grants {
            let provider: String =
                sqlx::query_scalar::<_, String>("SELECT provider FROM leases WHERE id = $1")
                    .bind(&g.lease_id)
                    .fetch_one(&m.state.db.pool)
                    .await
                    .unwrap();
            assert!(
                seen.insert((g.job_id.clone(), g.unit, provider)),
                "a provider got two replicas of one unit"
            );
        }
    }
);

both_dbs!(
    running_units_stream_progress_and_logs,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "saxpy", &[b"unit-0"], 600, 2).await;
        let (p1, p2) = (provider(m, 10).await, provider(m, 10).await);
        let (g1, g2) = (lease(m, &p1).await.unwrap(), lease(m, &p2).await.unwrap());
        let beat = |lease: &Value, done: u64, lines: &[&str]| {
            json!({"running_units": 1, "free_cpu_cores": 1.0, "leases": [{"lease_id": lease["lease_id"], "progress": {"done": done, "total": 4},
               "logs": lines.iter().map(|l| json!({"level": "info", "message": l})).collect::<Vec<_>>()}]})
        };
        let (status, body) = m
            .call(
                "POST",
                "/api/v1/providers/heartbeat",
                Some(&beat(&g1, 3, &["starting", "half way"])),
                Some(&p1),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // A provider cannot write into another's lease.
        let (status, _) = m
            .call(
                "POST",
                "/api/v1/providers/heartbeat",
                Some(&beat(&g1, 4, &["forged"])),
                Some(&p2),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let running = job(m, &buyer, &id).await;
        assert_eq!(running["units"][0]["state"], "running");
        assert_eq!(
            running["units"][0]["progress"],
            json!({"done": 3, "total": 4}),
            "{running}"
        );
        let (status, logs) = m
            .call(
                "GET",
                &format!("/api/v1/jobs/{id}/logs"),
                None,
                Some(&buyer),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{logs}");
        let messages: Vec<&str> = logs["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["message"].as_str().unwrap())
            .collect();
        assert_eq!(messages, ["starting", "half way"]);
        let (status, _) = m
            .call("GET", &format!("/api/v1/jobs/{id}/logs"), None, Some(&p1))
            .await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "only the buyer reads a job's logs (to anyone else it does not exist)"
        );
        // The result carries the lines not sent yet.
        let lease_id = g1["lease_id"].as_str().unwrap();
        let signature = p1.sign(&ResultReport::signed_bytes(
            lease_id,
            RunOutcome::Ok,
            Some(&agora_wire::digest_hex(b"out")),
            &[],
            10,
            0,
        ));
        let report = json!({"outcome": "ok", "output_base64": b64(b"out"), "output_digest": agora_wire::digest_hex(b"out"), "fuel_used": 10,
                        "gpu_time_us": 0, "peak_memory_bytes": 1, "signature": signature, "logs": [{"level": "stdout", "message": "done"}]});
        assert_eq!(
            m.call(
                "POST",
                &format!("/api/v1/leases/{lease_id}/result"),
                Some(&report),
                Some(&p1)
            )
            .await
            .0,
            StatusCode::OK
        );
        let after = logs["next"].as_i64().unwrap();
        let (_, more) = m
            .call(
                "GET",
                &format!("/api/v1/jobs/{id}/logs?after={after}"),
                None,
                Some(&buyer),
            )
            .await;
        assert_eq!(more["lines"][0]["message"], "done", "{more}");
        assert_eq!(more["lines"].as_array().unwrap().len(), 1);
        // The same fuel as p1's: replicas that differ in fuel get a third.
        assert_eq!(
            answer_using(m, &p2, &g2, Ok(b"out"), 10, 0).await.0,
            StatusCode::OK
        );
        // The event stream of a finished job: every log line, then the final
        // job, then the end.
        let (status, text) = m
            .call(
                "GET",
                &format!("/api/v1/jobs/{id}/events"),
                None,
                Some(&buyer),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let text = text.as_str().unwrap().to_string();
        assert_eq!(text.matches("event: log").count(), 3, "{text}");
        assert_eq!(text.matches("event: job").count(), 1, "{text}");
        let job_data = text
            .lines()
            .skip_while(|l| *l != "event: job")
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(job_data).unwrap()["state"],
            "done"
        );
    }
);

/// Stands in for a package's `verify` to test what the market does with
/// each verdict (the real export runs in `tests/it/lifecycle.rs`): `right`
/// passes, `verify` traps on `boom`, anything else fails.
struct OutputIsRight;

impl agora_market::verify::ResultVerifier for OutputIsRight {
    fn verify(
        &self,
        component: &[u8],
        input: &[u8],
        output: &[u8],
        limits: &agora_market::verify::VerifyLimits,
    ) -> Result<bool, VerifyFailure> {
        assert_eq!(
            agora_wire::digest_hex(component),
            agora_wire::digest_hex(&guest("matmul")),
            "the job's own component"
        );
        assert_eq!(input, b"unit-0");
        assert_eq!(
            *limits,
            VerifyLimits::for_run(4_000_000_000, 64 << 20, 10_000),
            "the market's share of the job's limits"
        );
        assert_eq!(limits.fuel, 1_000_000_000);
        match output {
            b"boom" => Err(VerifyFailure {
                outcome: RunOutcome::Trap,
                message: "unreachable".into(),
            }),
            _ => Ok(output == b"right"),
        }
    }
}

both_dbs!(
    verify_checks_each_result_instead_of_a_second_replica,
    async |m: &TestMarket| {
        let m = &m.with_verifier(std::sync::Arc::new(OutputIsRight));
        publish_guest(m, "matmul", "matmul").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "matmul", &[b"unit-0"], 600, 1).await;
        let (cheat, broken, honest) = (
            provider(m, 10).await,
            provider(m, 10).await,
            provider(m, 10).await,
        );
        let g1 = lease(m, &cheat).await.expect("a unit");
        assert!(
            lease(m, &honest).await.is_none(),
            "a checked unit needs no confirming replica"
        );
        assert_eq!(answer(m, &cheat, &g1, Ok(b"wrong")).await.0, StatusCode::OK);
        // The result is taken at once and checked after the request.
        let waiting = job(m, &buyer, &id).await;
        assert_eq!(waiting["units"][0]["state"], "verifying", "{waiting}");
        assert!(
            lease(m, &honest).await.is_none(),
            "a unit being verified is not leased again"
        );
        assert_eq!(m.state.verify_due().await.unwrap().len(), 1);
        let after = job(m, &buyer, &id).await;
        assert_eq!(after["state"], "running");
        assert!(
            after["units"][0]["message"]
                .as_str()
                .unwrap()
                .contains("verify rejected"),
            "{after}"
        );
        let g2 = lease(m, &broken).await.expect("the unit is leased again");
        assert_eq!(answer(m, &broken, &g2, Ok(b"boom")).await.0, StatusCode::OK);
        m.state.verify_due().await.unwrap();
        assert!(
            job(m, &buyer, &id).await["units"][0]["message"]
                .as_str()
                .unwrap()
                .contains("verify failed on the output")
        );
        let g3 = lease(m, &honest).await.expect("and again");
        assert_eq!(
            answer(m, &honest, &g3, Ok(b"right")).await.0,
            StatusCode::OK
        );
        m.state.verify_due().await.unwrap();
        let done = job(m, &buyer, &id).await;
        assert_eq!(done["state"], "done", "{done}");
        assert_eq!(done["units"][0]["attempts"], 3);
        assert_eq!(
            done["cost"]["paid_to_providers"], 19,
            "only the honest provider is paid: {done}"
        );
        assert_conserved(m, &buyer, 1000, &done, &[&cheat, &broken, &honest]).await;
        assert_eq!(m.available(&cheat).await, 0);
        let (_, providers) = m.call("GET", "/api/v1/providers", None, None).await;
        let reputation = |k: &Keypair| {
            providers
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["id"] == k.id().as_str())
                .unwrap()["reputation"]
                .as_f64()
                .unwrap()
        };
        // An output `verify` fails on is not accepted, like one it rejects:
        // once the right answer passes, both were wrong.
        assert_eq!(reputation(&cheat), reputation(&broken));
        assert!(reputation(&broken) < reputation(&honest));
    }
);

both_dbs!(
    browser_providers_start_untrusted_and_lease_only_browser_capable_packages,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 5000).await;
        let register = |kind: &str| {
            json!({"capabilities": {"cpu_cores": 4, "memory_bytes": 0, "gpus": [{"name": "swiftshader", "backend": "webgpu", "device_type": "cpu"}],
                                "cuda": false, "kind": kind},
               "ask": {"per_billion_fuel": 0, "per_gpu_second": 1}, "max_concurrent": 1})
        };
        let (tab, native) = (Keypair::generate(), Keypair::generate());
        assert_eq!(
            m.call(
                "POST",
                "/api/v1/providers",
                Some(&register("browser")),
                Some(&tab)
            )
            .await
            .0,
            StatusCode::OK
        );
        assert_eq!(
            m.call(
                "POST",
                "/api/v1/providers",
                Some(&register("native")),
                Some(&native)
            )
            .await
            .0,
            StatusCode::OK
        );
        let (status, body) = m
            .call(
                "POST",
                "/api/v1/providers",
                Some(&register("toaster")),
                Some(&Keypair::generate()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        heartbeat(m, &tab).await;
        heartbeat(m, &native).await;
        let (_, providers) = m.call("GET", "/api/v1/providers", None, None).await;
        let reputation = |key: &Keypair| {
            providers
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["id"] == key.id().as_str())
                .unwrap()["reputation"]
                .as_f64()
                .unwrap()
        };
        assert!(
            reputation(&tab) < reputation(&native),
            "a tab starts lower: {providers}"
        );

        // saxpy has a browser bundle: the tab may lease it. Without one (a
        // package published before bundles, or one that imports what a browser
        // lacks) it may not, and a native provider still does.
        let job = submit(m, &buyer, "saxpy", &[&[0u8; 12], &[0u8; 12]], 1000, 1).await;
        let grant = lease(m, &tab).await.expect("a browser-capable unit");
        assert_eq!(grant["job_id"], job.as_str());
        sqlx::query("DELETE FROM browser_bundles")
            .execute(&m.state.db.pool)
            .await
            .unwrap();
        let other = Keypair::generate();
        assert_eq!(
            m.call(
                "POST",
                "/api/v1/providers",
                Some(&register("browser")),
                Some(&other)
            )
            .await
            .0,
            StatusCode::OK
        );
        heartbeat(m, &other).await;
        assert!(
            lease(m, &other).await.is_none(),
            "no bundle, no lease for a browser"
        );
        assert!(
            lease(m, &native).await.is_some(),
            "native providers are not affected"
        );
    }
);

both_dbs!(
    canaries_measure_a_new_providers_honesty_before_buyers_units,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let (canary, expected) = saxpy_canary();
        let (status, body) = m
            .call(
                "POST",
                "/api/v1/operator/canaries",
                Some(&canary),
                Some(&Keypair::generate()),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, added) = m
            .call(
                "POST",
                "/api/v1/operator/canaries",
                Some(&canary),
                Some(&m.operator),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{added}");
        assert_eq!(
            added["output_digest"],
            agora_wire::digest_hex(&expected).as_str()
        );
        let (_, again) = m
            .call(
                "POST",
                "/api/v1/operator/canaries",
                Some(&canary),
                Some(&m.operator),
            )
            .await;
        assert_eq!(
            again["id"], added["id"],
            "the same canary twice is one canary"
        );

        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let job_id = submit(m, &buyer, "saxpy", &[b"a buyer's unit"], 600, 1).await;
        let (honest, cheat) = (
            untrusted_provider(m, 10).await,
            untrusted_provider(m, 10).await,
        );
        // A new provider's first lease is the canary, shaped like any unit.
        let grant = lease(m, &honest).await.expect("a canary");
        assert_ne!(grant["job_id"], job_id.as_str());
        assert!(
            grant["job_id"].as_str().unwrap().starts_with('j')
                && grant["lease_id"].as_str().unwrap().starts_with('l'),
            "{grant}"
        );
        assert_eq!(
            (grant["package"].as_str(), grant["input_digest"].as_str()),
            (Some("saxpy"), added["input_digest"].as_str())
        );
        assert_eq!(
            answer(m, &honest, &grant, Ok(&expected)).await.0,
            StatusCode::OK
        );
        let (status, _) = answer(m, &honest, &grant, Ok(&expected)).await;
        assert_ne!(status, StatusCode::OK, "a canary is answered once");
        let wrong = lease(m, &cheat).await.expect("a canary");
        assert_ne!(wrong["job_id"], job_id.as_str());
        let (status, body) = answer(m, &cheat, &wrong, Ok(b"not the answer")).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "the provider cannot tell it was a canary: {body}"
        );

        let (_, providers) = m.call("GET", "/api/v1/providers", None, None).await;
        let rep = |k: &Keypair| reputation(&providers, k);
        assert!(rep(&honest) > 0.5 && rep(&cheat) < 0.5, "{providers}");
        assert_eq!(m.available(&honest).await, 0, "canaries are not paid");
        // The one canary is run: the buyer's unit comes next.
        let next = lease(m, &honest).await.expect("the buyer's unit");
        assert_eq!(next["job_id"], job_id.as_str());
        m.assert_invariants().await;
    }
);

both_dbs!(
    a_heartbeat_carries_each_gpus_readings_within_what_a_device_can_read,
    async |m: &TestMarket| {
        let p = untrusted_provider(m, 10).await;
        let beat =
            |devices: Value| json!({"running_units": 0, "free_cpu_cores": 2.0, "devices": devices});
        let card = json!({"name": "card0 amdgpu", "utilization_percent": 37.0, "memory_used_bytes": 1u64 << 30, "celsius": 61.5, "watts": 150.0});
        heartbeat_with(m, &p, json!([card])).await;
        let (_, providers) = m.call("GET", "/api/v1/providers", None, None).await;
        let listed = providers
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == p.id().as_str())
            .unwrap();
        assert_eq!(listed["telemetry"]["devices"], json!([card]), "{listed}");
        // Kept as a sample a minute at most, for the provider's dashboard.
        let second = json!({"name": "card1 amdgpu", "utilization_percent": 63.0, "celsius": 70.0, "watts": 50.0});
        let samples = |t: Value| t["samples"].as_array().unwrap().clone();
        heartbeat_with(m, &p, json!([card, second])).await;
        let path = format!("/api/v1/providers/{}/telemetry", p.id());
        let (status, first) = m.call("GET", &path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        assert_eq!(samples(first.clone()).len(), 1, "one a minute: {first}");
        m.state.advance_clock(Duration::from_secs(61));
        heartbeat_with(m, &p, json!([card, second])).await;
        let (_, later) = m.call("GET", &path, None, None).await;
        let later = samples(later);
        assert_eq!(later.len(), 2, "{later:?}");
        assert_eq!(
            later[1],
            json!({"at_ms": later[1]["at_ms"], "free_cpu_cores": 2.0, "gpu_utilization_percent": 50.0,
                   "gpu_celsius": 70.0, "gpu_watts": 200.0, "gpu_memory_used_bytes": 1u64 << 30})
        );
        // A provider that beat once and went quiet.
        let quiet = untrusted_provider(m, 10).await;
        // A day later the first ones are gone: a beating provider's at its
        // heartbeat, a quiet one's by the market's hygiene sweep.
        m.state.advance_clock(Duration::from_secs(24 * 3600 + 1));
        m.state.forget_old_records().await.unwrap();
        let quiet_left: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM provider_samples WHERE provider = $1")
                .bind(quiet.id().as_str())
                .fetch_one(&m.state.db.pool)
                .await
                .unwrap();
        assert_eq!(quiet_left, 0);
        heartbeat_with(m, &p, json!([])).await;
        let (_, day) = m.call("GET", &path, None, None).await;
        assert_eq!(samples(day.clone()).len(), 1, "{day}");
        assert_eq!(
            m.call("GET", "/api/v1/providers/nobody/telemetry", None, None)
                .await
                .0,
            StatusCode::NOT_FOUND
        );
        let (status, _) = m
            .call(
                "POST",
                "/api/v1/providers/heartbeat",
                Some(&json!({"running_units": 0, "free_cpu_cores": -1.0})),
                Some(&p),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "free cores a machine cannot have"
        );
        let many: Vec<Value> = (0..17)
            .map(|i| json!({"name": format!("card{i}")}))
            .collect();
        for bad in [
            json!([{"name": "card0", "utilization_percent": 150.0}]),
            json!([{"name": "card0", "celsius": -5.0}]),
            json!([{"name": "card0\u{202e}evil"}]),
            json!(many),
        ] {
            let (status, reply) = m
                .call(
                    "POST",
                    "/api/v1/providers/heartbeat",
                    Some(&beat(bad.clone())),
                    Some(&p),
                )
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} -> {reply}");
        }
    }
);
