//! A buyer cancels a job: accepted results stay paid, stopped runs are paid
//! their time, the rest comes back at once, providers hear it in their
//! heartbeats, and nobody else can cancel it.

use crate::jobs::{
    answer, job, lease, publish, run_all, submit, trusted_provider, untrusted_provider,
};
use crate::*;
use std::time::Duration;

/// A provider the operator vouches for and trusts, asking per wall second.
async fn trusted_with_wall_ask(m: &TestMarket, per_wall_second: u64) -> Keypair {
    let key = trusted_provider(m, 10).await;
    register_wall_ask(m, &key, per_wall_second).await;
    key
}

async fn register_wall_ask(m: &TestMarket, key: &Keypair, per_wall_second: u64) {
    let caps = json!({"cpu_cores": 2, "memory_bytes": 1u64 << 30, "gpus": [{"name": "llvmpipe", "backend": "vulkan", "device_type": "cpu"}],
                      "cuda": false, "kind": "native"});
    let body = json!({"capabilities": caps, "ask": {"per_billion_fuel": 10, "per_gpu_second": 1, "per_wall_second": per_wall_second}, "max_concurrent": 4});
    let (status, reply) = m
        .call("POST", "/api/v1/providers", Some(&body), Some(key))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
}

async fn cancel(m: &TestMarket, key: &Keypair, id: &str) -> (StatusCode, Value) {
    m.call(
        "POST",
        &format!("/api/v1/jobs/{id}/cancel"),
        None,
        Some(key),
    )
    .await
}

/// What a provider hears back from a heartbeat naming `leases`.
async fn beat_naming(m: &TestMarket, key: &Keypair, leases: &[&Value]) -> Value {
    let named: Vec<Value> = leases
        .iter()
        .map(|g| json!({"lease_id": g["lease_id"]}))
        .collect();
    let body = json!({"running_units": named.len(), "free_cpu_cores": 1.0, "leases": named});
    let (status, reply) = m
        .call(
            "POST",
            "/api/v1/providers/heartbeat",
            Some(&body),
            Some(key),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    reply
}

both_dbs!(
    a_cancelled_job_pays_what_was_accepted_and_what_ran_and_refunds_the_rest,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 10_000).await;
        // 3 units x (2 + 1) replicas: a unit's cap is 1,000.
        let id = submit(m, &buyer, "saxpy", &[b"u0", b"u1", b"u2"], 9_000, 1).await;
        let (p, newcomer) = (
            trusted_with_wall_ask(m, 20).await,
            untrusted_provider(m, 10).await,
        );
        register_wall_ask(m, &newcomer, 30).await;
        let accepted = lease(m, &p).await.expect("unit 0");
        assert_eq!(
            answer(m, &p, &accepted, Ok(b"out-0")).await.0,
            StatusCode::OK
        );
        let running = lease(m, &p).await.expect("unit 1");
        // The newcomer's result waits for a trusted confirmation.
        let waiting = lease(m, &newcomer).await.expect("a unit for the newcomer");
        m.state.advance_clock(Duration::from_secs(2));
        assert_eq!(
            answer(m, &newcomer, &waiting, Ok(b"out-x")).await.0,
            StatusCode::OK
        );
        m.state.advance_clock(Duration::from_secs(8));

        let stranger = Keypair::generate();
        assert_eq!(cancel(m, &stranger, &id).await.0, StatusCode::NOT_FOUND);
        let (status, info) = cancel(m, &buyer, &id).await;
        assert_eq!(status, StatusCode::OK, "{info}");
        assert_eq!(info["state"], "cancelled", "{info}");
        let units = info["units"].as_array().unwrap();
        assert_eq!(units[0]["state"], "verified", "accepted work stays: {info}");
        for unit in &units[1..] {
            assert_eq!(unit["state"], "failed", "{info}");
            assert_eq!(unit["message"], "the buyer cancelled the job", "{info}");
        }
        // Each stopped run is paid its time at its lease's wall ask (the
        // running one's grant was 10 s ago, the waiting result ran 2 s).
        let stopped = sqlx::query("SELECT id, state, cost, wall_ms, ask_per_wall_second FROM leases WHERE job_id = $1 AND id <> $2")
            .bind(&id)
            .bind(accepted["lease_id"].as_str().unwrap())
            .fetch_all(&m.state.db.pool)
            .await
            .unwrap();
        assert_eq!(stopped.len(), 2);
        let mut billed = 0;
        for row in &stopped {
            use sqlx::Row;
            let (state, cost, wall_ms, ask): (String, i64, i64, i64) = (
                row.get("state"),
                row.get("cost"),
                row.get("wall_ms"),
                row.get("ask_per_wall_second"),
            );
            if row.get::<String, _>("id") == waiting["lease_id"].as_str().unwrap() {
                // A fresh key's stopped run is paid nothing: nobody
                // trusted confirmed it.
                assert_eq!((state.as_str(), cost), ("cancelled", 0));
                continue;
            }
            billed += 1;
            assert_eq!(state, "billed");
            // The trusted run still going: time only, at most the unit's
            // 10 s timeout.
            assert_eq!(
                cost as u64,
                (wall_ms.min(10_000) as u64 * ask as u64).div_ceil(1000),
                "{wall_ms} ms at {ask}"
            );
            assert!(cost > 0);
            if row.get::<String, _>("id") == running["lease_id"].as_str().unwrap() {
                assert!(
                    wall_ms >= 10_000,
                    "the running unit ran until the cancel: {wall_ms}"
                );
            }
        }
        assert_eq!(billed, 1);
        let info = job(m, &buyer, &id).await;
        assert_eq!(info["cost"]["held"], 0, "{info}");
        crate::jobs::assert_conserved(m, &buyer, 10_000, &info, &[&p, &newcomer]).await;
        let refunded = info["cost"]["refunded"].as_u64().unwrap();
        assert!(refunded > 8_000, "the rest comes back at once: {info}");

        // The provider hears it, and its late result is refused.
        let reply = beat_naming(m, &p, &[&running]).await;
        assert_eq!(reply["stop"], json!([running["lease_id"]]), "{reply}");
        let (status, late) = answer(m, &p, &running, Ok(b"out-1")).await;
        assert_eq!(status, StatusCode::CONFLICT, "{late}");
        assert!(lease(m, &p).await.is_none(), "nothing of the job is leased");

        // Again: the same answer, nothing moves.
        let before = m.available(&buyer).await;
        let (status, again) = cancel(m, &buyer, &id).await;
        assert_eq!(
            (status, again["state"].clone()),
            (StatusCode::OK, json!("cancelled"))
        );
        assert_eq!(m.available(&buyer).await, before);
        m.assert_invariants().await;
    }
);

both_dbs!(
    a_job_that_ended_cannot_be_cancelled,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1_000).await;
        let id = submit(m, &buyer, "saxpy", &[b"only"], 600, 1).await;
        let p = trusted_provider(m, 10).await;
        run_all(m, &p, |_| b"out".to_vec()).await;
        let before = m.available(&buyer).await;
        let (status, reply) = cancel(m, &buyer, &id).await;
        assert_eq!(status, StatusCode::CONFLICT, "{reply}");
        assert_eq!(reply["error"]["code"], "job_ended", "{reply}");
        assert_eq!(job(m, &buyer, &id).await["state"], "done");
        assert_eq!(m.available(&buyer).await, before);
        m.assert_invariants().await;
    }
);

both_dbs!(
    a_queued_job_cancelled_at_once_costs_nothing,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 5_000).await;
        let inputs: Vec<Vec<u8>> = (0..5).map(|i| vec![i]).collect();
        let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
        let id = submit(m, &buyer, "saxpy", &refs, 4_500, 1).await;
        assert_eq!(m.available(&buyer).await, 500, "the cap is held");
        let (status, info) = cancel(m, &buyer, &id).await;
        assert_eq!(status, StatusCode::OK, "{info}");
        assert_eq!(info["state"], "cancelled");
        assert_eq!(m.available(&buyer).await, 5_000, "the whole cap back");
        let p = trusted_provider(m, 10).await;
        assert!(lease(m, &p).await.is_none());
        m.assert_invariants().await;
    }
);

both_dbs!(
    a_cancel_bills_the_failed_runs_an_expiry_would,
    async |m: &TestMarket| {
        use crate::jobs::{answer_using, provider};
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "saxpy", &[b"u"], 600, 1).await;
        // The job fails a different way on each of the market's own hosts
        // (it could have logged its answer first): cancelling it then must
        // not make that work free.
        let (a, b) = (provider(m, 10).await, provider(m, 10).await);
        let g = lease(m, &a).await.unwrap();
        answer_using(m, &a, &g, Err("trap"), 1_000_000_000, 0).await;
        let g = lease(m, &b).await.unwrap();
        answer_using(m, &b, &g, Err("job-error"), 3_000_000_000, 0).await;
        let (status, info) = cancel(m, &buyer, &id).await;
        assert_eq!(
            (status, info["state"].clone()),
            (StatusCode::OK, json!("cancelled")),
            "{info}"
        );
        assert_eq!(
            (m.available(&a).await, m.available(&b).await),
            (10, 29),
            "paid as at the job's expiry"
        );
        crate::jobs::assert_conserved(m, &buyer, 1000, &info, &[&a, &b]).await;
    }
);
