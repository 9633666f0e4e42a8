//! Attacks on the market's promise (a buyer pays only for verified work, a
//! provider is paid for every accepted result, credits are never created,
//! lost or paid twice), each as a hostile buyer, provider or caller would
//! try it, on SQLite and PostgreSQL.

use crate::jobs::{
    answer, answer_using, assert_conserved, job, lease, provider, publish, reputation, submit,
    untrusted_provider,
};
use crate::*;
use std::time::Duration;

async fn transfer(m: &TestMarket, key: &Keypair, body: Value) -> (StatusCode, Value) {
    m.call("POST", "/api/v1/transfers", Some(&body), Some(key))
        .await
}

both_dbs!(
    a_buyer_cannot_resolve_its_jobs_escrow_hold,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let (buyer, other) = (Keypair::generate(), Keypair::generate());
        m.fund(&buyer, 1000).await;
        m.fund(&other, 1000).await;
        let id = submit(m, &buyer, "saxpy", &[b"unit-0"], 600, 2).await;
        let _theirs = submit(m, &other, "saxpy", &[b"unit-0"], 600, 1).await;
        let hold = format!("job:{id}:hold");
        // Post for 0 (the cap back to the buyer) or void before any result.
        for body in [
            json!({"id": "mine-1", "kind": "post", "pending_id": hold, "amount": 0}),
            json!({"id": "mine-2", "kind": "post", "pending_id": hold}),
            json!({"id": "mine-3", "kind": "void", "pending_id": hold}),
        ] {
            let (status, reply) = transfer(m, &buyer, body.clone()).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{body}: {reply}");
            assert_eq!(reply["error"]["code"], "reserved", "{reply}");
            let (status, reply) = transfer(m, &m.operator, body.clone()).await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "not even the operator resolves a market hold: {reply}"
            );
        }
        assert_eq!(m.available(&buyer).await, 400, "the cap stays held");
        // The job still runs and pays its providers from its own escrow.
        let (p1, p2) = (provider(m, 10).await, provider(m, 30).await);
        let g1 = lease(m, &p1).await.unwrap();
        let g2 = lease(m, &p2).await.unwrap();
        let mine = |g: &Value| g["job_id"] == id.as_str();
        assert!(mine(&g1) && mine(&g2), "the oldest job first");
        answer(m, &p1, &g1, Ok(b"out")).await;
        answer(m, &p2, &g2, Ok(b"out")).await;
        let done = job(m, &buyer, &id).await;
        assert_eq!(done["state"], "done", "{done}");
        assert_conserved(m, &buyer, 1000, &done, &[&p1, &p2]).await;
        assert_eq!(
            m.available(&other).await,
            400,
            "the other buyer's cap is untouched"
        );
    }
);

both_dbs!(
    market_transfer_ids_and_accounts_are_reserved,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let p = provider(m, 10).await;
        m.fund(&p, 100).await;
        let id = submit(m, &buyer, "saxpy", &[b"unit-0"], 600, 1).await;
        let grant = lease(m, &p).await.unwrap();
        let lease_id = grant["lease_id"].as_str().unwrap();
        // A provider takes the id of the market's own fee transfer first.
        for tid in [
            format!("lease:{lease_id}:fee"),
            format!("lease:{lease_id}:pay"),
            format!("job:{id}:refund"),
            "market:x".into(),
        ] {
            let body = json!({"id": tid, "debit": p.id(), "credit": buyer.id(), "amount": 1, "kind": "single"});
            let (status, reply) = transfer(m, &p, body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{tid}: {reply}");
            assert_eq!(reply["error"]["code"], "reserved");
            let mint = json!({"id": tid, "account": p.id(), "amount": 1});
            let (status, reply) = m
                .call("POST", "/api/v1/mint", Some(&mint), Some(&m.operator))
                .await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "the operator's mint cannot take it either: {reply}"
            );
        }
        // Nor can anyone move credits into or out of a market account.
        for account in ["escrow".to_string(), format!("job:{id}")] {
            let body = json!({"id": "steal", "debit": account, "credit": m.operator.id(), "amount": 1, "kind": "single"});
            let (status, reply) = transfer(m, &m.operator, body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{account}: {reply}");
            let body = json!({"id": "stuff", "debit": m.operator.id(), "credit": account, "amount": 1, "kind": "single"});
            assert_eq!(
                transfer(m, &m.operator, body).await.0,
                StatusCode::FORBIDDEN
            );
        }
        assert_eq!(answer(m, &p, &grant, Ok(b"out")).await.0, StatusCode::OK);
        m.assert_invariants().await;
    }
);

both_dbs!(
    the_invariant_check_sees_a_job_spending_past_its_hold,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "saxpy", &[b"unit-0"], 600, 2).await;
        let (p1, p2) = (provider(m, 10).await, provider(m, 10).await);
        let (g1, g2) = (lease(m, &p1).await.unwrap(), lease(m, &p2).await.unwrap());
        answer(m, &p1, &g1, Ok(b"out")).await;
        answer(m, &p2, &g2, Ok(b"out")).await;
        m.assert_invariants().await;
        // A bug that records a lease cost the ledger never paid is seen.
        sqlx::query("UPDATE leases SET cost = cost + 7 WHERE job_id = $1 AND paid = 1")
            .bind(&id)
            .execute(&m.state.db.pool)
            .await
            .unwrap();
        let (_, report) = m
            .call(
                "GET",
                "/api/v1/operator/invariants",
                None,
                Some(&m.operator),
            )
            .await;
        assert_eq!(report["ok"], false, "{report}");
        assert!(report["violations"].to_string().contains(&id), "{report}");
    }
);

both_dbs!(
    one_failing_job_does_not_stop_the_sweep,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let broken = submit(m, &buyer, "saxpy", &[b"a"], 300, 1).await;
        let fine = submit(m, &buyer, "saxpy", &[b"b"], 300, 1).await;
        assert_eq!(m.available(&buyer).await, 400);
        // The broken job's hold disappears from under it (a damaged row).
        sqlx::query("UPDATE transfers SET id = 'lost-hold' WHERE id = $1")
            .bind(format!("job:{broken}:hold"))
            .execute(&m.state.db.pool)
            .await
            .unwrap();
        m.call("GET", "/api/v1/stats", None, Some(&buyer)).await; // a nonce to prune
        m.state.advance_clock(Duration::from_secs(24 * 3600 + 60));
        // The sweep goes on past the broken job, more than once.
        for _ in 0..2 {
            m.state
                .sweep()
                .await
                .expect("a failing job does not fail the sweep");
        }
        assert_eq!(job(m, &buyer, &fine).await["state"], "expired");
        assert_eq!(
            job(m, &buyer, &broken).await["state"],
            "running",
            "set aside, not finished"
        );
        assert_eq!(m.available(&buyer).await, 700, "the fine job is refunded");
        let cutoff = m.state.now_ms() - 2 * agora_wire::auth::MAX_CLOCK_SKEW_MS;
        let old: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM nonces WHERE seen_at_ms < $1")
            .bind(cutoff)
            .fetch_one(&m.state.db.pool)
            .await
            .unwrap();
        assert_eq!(old, 0, "old nonces are pruned");
        let (_, metrics) = m.call("GET", "/metrics", None, None).await;
        let text = metrics.as_str().unwrap();
        assert!(
            text.contains("agora_market_sweep_failures_total 1"),
            "counted once, then set aside: {text}"
        );
        let set_aside: i64 = sqlx::query_scalar("SELECT settle_failures FROM jobs WHERE id = $1")
            .bind(&broken)
            .fetch_one(&m.state.db.pool)
            .await
            .unwrap();
        assert_eq!(set_aside, 1, "the failure is recorded on the job");
    }
);

/// A provider registered with its own asks (fuel, GPU, wall).
/// A vouched provider registered with its own asks (fuel, GPU, wall).
async fn provider_asking(m: &TestMarket, fuel: u64, gpu: u64, wall: u64) -> Keypair {
    let key = Keypair::generate();
    register(m, &key, fuel, gpu, wall).await;
    assert_eq!(
        m.call(
            "POST",
            "/api/v1/operator/vouch",
            Some(&json!({"provider": key.id()})),
            Some(&m.operator)
        )
        .await
        .0,
        StatusCode::OK
    );
    key
}

async fn register(m: &TestMarket, key: &Keypair, fuel: u64, gpu: u64, wall: u64) {
    let caps = json!({"cpu_cores": 2, "memory_bytes": 1u64 << 30, "gpus": [{"name": "llvmpipe", "backend": "vulkan", "device_type": "cpu"}],
                      "cuda": false, "kind": "native"});
    let body = json!({"capabilities": caps, "ask": {"per_billion_fuel": fuel, "per_gpu_second": gpu, "per_wall_second": wall}, "max_concurrent": 4});
    let (status, reply) = m
        .call("POST", "/api/v1/providers", Some(&body), Some(key))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
}

both_dbs!(
    an_inflated_usage_claim_is_paid_what_the_replicas_agree_on,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 10_000).await;
        // Five replicas: three matching outputs decide the unit.
        let id = submit(m, &buyer, "saxpy", &[b"u"], 9_000, 5).await;
        let (honest, also_honest, inflater) = (
            provider(m, 10).await,
            provider(m, 10).await,
            provider(m, 10).await,
        );
        let grants = [
            lease(m, &honest).await.unwrap(),
            lease(m, &also_honest).await.unwrap(),
            lease(m, &inflater).await.unwrap(),
        ];
        // The inflater claims 10^15 fuel and a day of GPU time for the same output.
        answer_using(
            m,
            &inflater,
            &grants[2],
            Ok(b"out"),
            1_000_000_000_000_000,
            86_400_000_000,
        )
        .await;
        answer_using(m, &honest, &grants[0], Ok(b"out"), 2_000_000_000, 0).await;
        assert_eq!(job(m, &buyer, &id).await["state"], "running");
        answer_using(m, &also_honest, &grants[1], Ok(b"out"), 2_000_000_000, 0).await;
        let done = job(m, &buyer, &id).await;
        assert_eq!(done["state"], "done", "{done}");
        // 2e9 fuel at 10 per billion = 20 each (19 after the 5% fee); the inflater gets nothing.
        assert_eq!(m.available(&honest).await, 19);
        assert_eq!(m.available(&also_honest).await, 19);
        assert_eq!(
            m.available(&inflater).await,
            0,
            "its usage contradicts its replicas'"
        );
        let (_, providers) = m.call("GET", "/api/v1/providers", None, None).await;
        assert!(
            reputation(&providers, &inflater) < 0.5,
            "marked as a mismatch: {providers}"
        );
        assert_conserved(
            m,
            &buyer,
            10_000,
            &done,
            &[&honest, &also_honest, &inflater],
        )
        .await;
    }
);

both_dbs!(
    a_disputed_fuel_claim_gets_a_third_replica_that_outvotes_it,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "saxpy", &[b"u"], 600, 2).await;
        let (honest, inflater, third) = (
            provider(m, 10).await,
            provider(m, 10).await,
            provider(m, 10).await,
        );
        let (g1, g2) = (
            lease(m, &honest).await.unwrap(),
            lease(m, &inflater).await.unwrap(),
        );
        answer_using(m, &honest, &g1, Ok(b"out"), 2_000_000_000, 0).await;
        // The same output, another fuel: one of the two misreports.
        answer_using(m, &inflater, &g2, Ok(b"out"), u64::MAX, u64::MAX).await;
        assert_eq!(
            job(m, &buyer, &id).await["state"],
            "running",
            "a fuel dispute is not a verdict"
        );
        let g3 = lease(m, &third)
            .await
            .expect("a replica to settle the dispute");
        answer_using(m, &third, &g3, Ok(b"out"), 2_000_000_000, 0).await;
        let done = job(m, &buyer, &id).await;
        assert_eq!(done["state"], "done", "{done}");
        assert_eq!(
            m.available(&inflater).await,
            0,
            "outvoted: rejected and unpaid"
        );
        assert_eq!(
            (m.available(&honest).await, m.available(&third).await),
            (19, 19)
        );
        let (_, providers) = m.call("GET", "/api/v1/providers", None, None).await;
        assert!(reputation(&providers, &inflater) < 0.5, "{providers}");
        assert_conserved(m, &buyer, 1000, &done, &[&honest, &inflater, &third]).await;
    }
);

both_dbs!(
    a_zero_fuel_report_cannot_cut_a_peers_pay,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "saxpy", &[b"u"], 600, 2).await;
        let (honest, griefer, third) = (
            provider(m, 10).await,
            provider(m, 10).await,
            provider(m, 10).await,
        );
        let (g1, g2) = (
            lease(m, &honest).await.unwrap(),
            lease(m, &griefer).await.unwrap(),
        );
        answer_using(m, &honest, &g1, Ok(b"out"), 2_000_000_000, 0).await;
        answer_using(m, &griefer, &g2, Ok(b"out"), 0, 0).await;
        let g3 = lease(m, &third)
            .await
            .expect("a replica to settle the dispute");
        answer_using(m, &third, &g3, Ok(b"out"), 2_000_000_000, 0).await;
        assert_eq!(job(m, &buyer, &id).await["state"], "done");
        assert_eq!(
            m.available(&honest).await,
            19,
            "paid the fuel the majority reports"
        );
        assert_eq!(m.available(&griefer).await, 0);
    }
);

both_dbs!(
    a_timeout_claimed_too_soon_is_a_false_report,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 2000).await;
        // Two units: on one the claim comes at once, on the other after the
        // unit's 10 s timeout really passed.
        let id = submit(m, &buyer, "saxpy", &[b"a", b"b"], 1200, 1).await;
        let (liar, slow) = (
            untrusted_provider(m, 10).await,
            untrusted_provider(m, 10).await,
        );
        let (gl, gs) = (
            lease(m, &liar).await.unwrap(),
            lease(m, &slow).await.unwrap(),
        );
        let claim = |p: &Keypair, g: &Value| {
            let lease_id = g["lease_id"].as_str().unwrap().to_string();
            let signature = p.sign(&agora_wire::api::ResultReport::signed_bytes(
                &lease_id,
                agora_wire::api::RunOutcome::LimitExceeded,
                None,
                &[],
                0,
                0,
            ));
            (
                lease_id,
                json!({"outcome": "limit-exceeded", "limit": "timeout", "message": null, "fuel_used": 0, "gpu_time_us": 0,
                          "peak_memory_bytes": 0, "signature": signature}),
            )
        };
        let (lease_id, body) = claim(&liar, &gl);
        assert_eq!(
            m.call(
                "POST",
                &format!("/api/v1/leases/{lease_id}/result"),
                Some(&body),
                Some(&liar)
            )
            .await
            .0,
            StatusCode::OK
        );
        m.state.advance_clock(Duration::from_secs(11));
        let (lease_id, body) = claim(&slow, &gs);
        assert_eq!(
            m.call(
                "POST",
                &format!("/api/v1/leases/{lease_id}/result"),
                Some(&body),
                Some(&slow)
            )
            .await
            .0,
            StatusCode::OK
        );
        // Both units then succeed on trusted providers.
        let honest = [provider(m, 10).await, provider(m, 10).await];
        for p in &honest {
            while let Some(g) = lease(m, p).await {
                answer(m, p, &g, Ok(b"out")).await;
            }
        }
        assert_eq!(job(m, &buyer, &id).await["state"], "done");
        let (_, providers) = m.call("GET", "/api/v1/providers", None, None).await;
        assert_eq!(
            reputation(&providers, &slow),
            1.0 / 3.0,
            "a real timeout is slowness (weight 1): {providers}"
        );
        assert_eq!(
            reputation(&providers, &liar),
            1.0 / 5.0,
            "a timeout sooner than the timeout is a false report (weight 3): {providers}"
        );
    }
);

both_dbs!(
    wall_time_is_priced_at_the_ask_in_force_when_the_lease_was_granted,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 10_000).await;
        let id = submit(m, &buyer, "saxpy", &[b"u"], 9_000, 2).await;
        let (p1, p2) = (
            provider_asking(m, 0, 0, 100).await,
            provider_asking(m, 0, 0, 100).await,
        );
        for p in [&p1, &p2] {
            m.call(
                "POST",
                "/api/v1/providers/heartbeat",
                Some(&json!({"running_units": 0, "free_cpu_cores": 2.0})),
                Some(p),
            )
            .await;
        }
        let (g1, g2) = (lease(m, &p1).await.unwrap(), lease(m, &p2).await.unwrap());
        // Asks raised after the grant do not apply to these leases.
        register(m, &p1, 1_000_000, 1_000_000, 1_000_000).await;
        register(m, &p2, 1_000_000, 1_000_000, 1_000_000).await;
        m.state.advance_clock(Duration::from_secs(5));
        answer_using(m, &p1, &g1, Ok(b"out"), 0, 0).await;
        answer_using(m, &p2, &g2, Ok(b"out"), 0, 0).await;
        let done = job(m, &buyer, &id).await;
        assert_eq!(done["state"], "done", "{done}");
        // 5 s of wall time (and the test's own milliseconds) at 100 per second
        // = 500 and a little each, 95% after the fee; at the raised asks it
        // would be the unit's whole cap (2850 after the fee).
        for p in [&p1, &p2] {
            let earned = m.available(p).await;
            assert!((475..950).contains(&earned), "{earned}");
        }
        assert_conserved(m, &buyer, 10_000, &done, &[&p1, &p2]).await;
    }
);

both_dbs!(
    absurd_limits_are_refused_by_name_and_leasing_still_works,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let honest = submit(m, &buyer, "saxpy", &[b"u"], 600, 1).await;
        for (limits, name) in [
            (
                json!({"fuel": u64::MAX - 1, "memory_bytes": 1 << 20, "timeout_ms": 1000, "gpu": false}),
                "MAX_UNIT_FUEL",
            ),
            (
                json!({"fuel": 1u64 << 43, "memory_bytes": 1 << 20, "timeout_ms": 1000, "gpu": false}),
                "MAX_UNIT_FUEL",
            ),
            (
                json!({"fuel": 1000, "memory_bytes": 8u64 << 30, "timeout_ms": 1000, "gpu": false}),
                "MAX_UNIT_MEMORY_BYTES",
            ),
            (
                json!({"fuel": 1000, "memory_bytes": 1 << 20, "timeout_ms": 0, "gpu": false}),
                "MAX_UNIT_TIMEOUT_MS",
            ),
        ] {
            let body = json!({"package": "saxpy", "inputs_base64": [crate::jobs::b64(b"u")], "limits": limits, "max_price": 600, "replicas": 1});
            let (status, reply) = m
                .call("POST", "/api/v1/jobs", Some(&body), Some(&buyer))
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
            assert_eq!(reply["error"]["code"], "limit_exceeded", "{reply}");
            assert!(
                reply["error"]["message"].as_str().unwrap().contains(name),
                "{reply}"
            );
        }
        assert_eq!(
            m.available(&buyer).await,
            400,
            "a refused job holds nothing"
        );
        // The largest fuel the market accepts, at the highest ask, still leases.
        let body = json!({"package": "saxpy", "inputs_base64": [crate::jobs::b64(b"v")], "max_price": 300, "replicas": 1,
                      "limits": {"fuel": agora_wire::limits::MAX_UNIT_FUEL, "memory_bytes": 1 << 20, "timeout_ms": 1000, "gpu": false}});
        assert_eq!(
            m.call("POST", "/api/v1/jobs", Some(&body), Some(&buyer))
                .await
                .0,
            StatusCode::OK
        );
        let rich = provider_asking(
            m,
            agora_wire::limits::MAX_ASK,
            agora_wire::limits::MAX_ASK,
            agora_wire::limits::MAX_ASK,
        )
        .await;
        m.call(
            "POST",
            "/api/v1/providers/heartbeat",
            Some(&json!({"running_units": 0, "free_cpu_cores": 2.0})),
            Some(&rich),
        )
        .await;
        assert!(
            lease(m, &rich).await.is_none(),
            "no job's cap covers the highest asks"
        );
        let p = provider(m, 10).await;
        assert_eq!(lease(m, &p).await.unwrap()["job_id"], honest.as_str());
        let (status, reply) = m.call("POST", "/api/v1/providers", Some(&json!({"capabilities": {"cpu_cores": 1, "memory_bytes": 1, "gpus": [], "cuda": false, "kind": "native"},
        "ask": {"per_billion_fuel": agora_wire::limits::MAX_ASK + 1, "per_gpu_second": 0}, "max_concurrent": 1})), Some(&p)).await;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("limit_exceeded")),
            "{reply}"
        );
    }
);

async fn beat(m: &TestMarket, p: &Keypair, leases: &[&Value]) -> Value {
    let named: Vec<Value> = leases
        .iter()
        .map(|g| json!({"lease_id": g["lease_id"]}))
        .collect();
    let (status, reply) = m
        .call(
            "POST",
            "/api/v1/providers/heartbeat",
            Some(&json!({"running_units": 0, "free_cpu_cores": 2.0, "leases": named})),
            Some(p),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    reply
}

both_dbs!(
    a_lease_ends_at_its_deadline_however_often_it_is_renewed,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "saxpy", &[b"u"], 600, 2).await;
        let (hoarder, other) = (provider(m, 10).await, provider(m, 10).await);
        let g = lease(m, &hoarder).await.unwrap();
        let g_other = lease(m, &other).await.unwrap();
        // The unit's timeout is 10 s; heartbeat every 10 s for ten minutes.
        for _ in 0..60 {
            m.state.advance_clock(Duration::from_secs(10));
            beat(m, &hoarder, &[&g]).await;
            beat(m, &other, &[&g_other]).await;
            m.state.sweep().await.unwrap();
        }
        let (status, reply) = answer(m, &hoarder, &g, Ok(b"out")).await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "the lease ended at grant + timeout + grace: {reply}"
        );
        let (_, providers) = m.call("GET", "/api/v1/providers", None, None).await;
        assert!(
            reputation(&providers, &hoarder) < 0.5,
            "a lapsed lease marks its provider: {providers}"
        );
        let fresh = provider(m, 10).await;
        let again = lease(m, &fresh)
            .await
            .expect("the unit went back to the queue");
        assert_eq!(again["job_id"], id.as_str());
        assert!(
            again["expires_at_ms"].as_i64().unwrap()
                <= m.state.now_ms() + 10_000 + agora_market::jobs::LEASE_GRACE_MS
        );
    }
);

both_dbs!(
    heartbeats_renew_only_the_leases_they_name,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 3000).await;
        submit(m, &buyer, "saxpy", &[b"a", b"b", b"c"], 1800, 1).await;
        let (p, q) = (provider(m, 10).await, provider(m, 10).await);
        let (named, idle) = (lease(m, &p).await.unwrap(), lease(m, &p).await.unwrap());
        let theirs = lease(m, &q).await.unwrap();
        for _ in 0..4 {
            m.state.advance_clock(Duration::from_secs(10));
            // p names its running lease and, hostile, q's too; q sends nothing.
            let reply = beat(m, &p, &[&named, &theirs]).await;
            assert_eq!(reply["leases_extended"], 1, "{reply}");
            beat(m, &q, &[]).await;
        }
        m.state.sweep().await.unwrap();
        assert_eq!(
            answer(m, &p, &named, Ok(b"x")).await.0,
            StatusCode::OK,
            "the named lease lives"
        );
        assert_eq!(
            answer(m, &p, &idle, Ok(b"x")).await.0,
            StatusCode::CONFLICT,
            "the unnamed one lapsed"
        );
        assert_eq!(
            answer(m, &q, &theirs, Ok(b"x")).await.0,
            StatusCode::CONFLICT,
            "another provider cannot keep it alive"
        );
    }
);

both_dbs!(
    fresh_keys_reporting_errors_cannot_fail_a_buyers_unit,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 5000).await;
        let kinds = [
            "trap",
            "job-error",
            "worker-lost",
            "limit-exceeded",
            "refused",
        ];
        let inputs: Vec<Vec<u8>> = (0..kinds.len())
            .map(|i| format!("u{i}").into_bytes())
            .collect();
        let id = submit(
            m,
            &buyer,
            "saxpy",
            &inputs.iter().map(Vec::as_slice).collect::<Vec<_>>(),
            3000,
            1,
        )
        .await;
        // Five fresh keys, one outcome each, a unit each: once failed, a unit
        // is never leased to a fresh key again.
        let mut sybils = Vec::new();
        for kind in kinds {
            let p = untrusted_provider(m, 10).await;
            let g = lease(m, &p).await.expect("a unit nobody failed yet");
            assert_eq!(answer(m, &p, &g, Err(kind)).await.0, StatusCode::OK);
            sybils.push(p);
        }
        assert!(
            lease(m, &untrusted_provider(m, 10).await).await.is_none(),
            "every unit failed once: trusted providers only"
        );
        assert_eq!(
            job(m, &buyer, &id).await["state"],
            "running",
            "untrusted failures alone never fail a unit"
        );
        // One honest trusted provider runs every unit alone: each fresh key's
        // failure gave back the confirming replica its lease asked for.
        let honest = crate::jobs::trusted_provider(m, 10).await;
        while let Some(g) = lease(m, &honest).await {
            assert_eq!(answer(m, &honest, &g, Ok(b"out")).await.0, StatusCode::OK);
        }
        let done = job(m, &buyer, &id).await;
        assert_eq!(done["state"], "done", "{done}");
        let (_, providers) = m.call("GET", "/api/v1/providers", None, None).await;
        for p in &sybils {
            assert!(
                reputation(&providers, p) < 0.5,
                "a failure contradicted by a success is marked: {providers}"
            );
            assert_eq!(m.available(p).await, 0, "and not paid");
        }
        let mut refs: Vec<&Keypair> = sybils.iter().collect();
        refs.push(&honest);
        assert_conserved(m, &buyer, 5000, &done, &refs).await;
    }
);

both_dbs!(
    after_an_unpaid_failure_a_unit_goes_to_trusted_providers_only,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "saxpy", &[b"u"], 600, 1).await;
        // A job that computes its answer, logs it and fails: each fresh key's
        // run would be free work. The first fresh key's is the last.
        let first = untrusted_provider(m, 10).await;
        let g = lease(m, &first)
            .await
            .expect("a fresh key may run a unit first");
        answer(m, &first, &g, Err("job-error")).await;
        for _ in 0..3 {
            assert!(
                lease(m, &untrusted_provider(m, 10).await).await.is_none(),
                "a unit failed once is not leased to a fresh key"
            );
        }
        let trusted = provider(m, 10).await;
        let g = lease(m, &trusted)
            .await
            .expect("a trusted provider runs it");
        assert_eq!(g["job_id"], id.as_str());
    }
);

both_dbs!(
    one_trusted_key_and_its_sybils_cannot_fail_a_buyers_unit,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "saxpy", &[b"u"], 600, 1).await;
        // A key that earned trust, and its fresh sybils, claim the same trap
        // (to the instruction) to fail the victim's unit and be billed for it.
        let colluder = farmed_trusted(m).await;
        let sybils = [
            untrusted_provider(m, 10).await,
            untrusted_provider(m, 10).await,
            untrusted_provider(m, 10).await,
        ];
        let g = lease(m, &sybils[0]).await.expect("a fresh key first");
        answer_using(m, &sybils[0], &g, Err("trap"), 7, 0).await;
        let g = lease(m, &colluder).await.expect("the colluder next");
        answer_using(m, &colluder, &g, Err("trap"), 7, 0).await;
        for s in &sybils[1..] {
            assert!(
                lease(m, s).await.is_none(),
                "a unit failed once goes to trusted providers only"
            );
        }
        let open = job(m, &buyer, &id).await;
        assert_eq!(
            open["units"][0]["state"], "queued",
            "one trusted key cannot fail a unit: {open}"
        );
        // An honest host runs it: the claimed traps are false reports.
        let honest = provider(m, 10).await;
        let g = lease(m, &honest).await.expect("the unit is still open");
        answer(m, &honest, &g, Ok(b"out")).await;
        let done = job(m, &buyer, &id).await;
        assert_eq!(done["state"], "done", "{done}");
        let bad: f64 = sqlx::query_scalar("SELECT bad FROM providers WHERE id = $1")
            .bind(colluder.id().as_str())
            .fetch_one(&m.state.db.pool)
            .await
            .unwrap();
        assert!(bad > 0.0, "the colluder's claimed trap is a false report");
        let mut everyone: Vec<&Keypair> = sybils.iter().collect();
        everyone.extend([&colluder, &honest]);
        for p in &everyone[..4] {
            assert_eq!(m.available(p).await, 0, "a false failure is not paid");
        }
        assert_conserved(m, &buyer, 1000, &done, &everyone).await;
    }
);

both_dbs!(
    keys_that_farmed_their_trust_cannot_fail_a_unit_without_a_vouched_host,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "saxpy", &[b"u"], 600, 1).await;
        // A ring of keys that earned trust claims the same trap, to the
        // instruction, and as much fuel as the unit allows.
        let ring = [
            farmed_trusted(m).await,
            farmed_trusted(m).await,
            farmed_trusted(m).await,
        ];
        for key in &ring {
            let g = lease(m, key)
                .await
                .expect("a trusted key may run a failed unit");
            answer_using(m, key, &g, Err("trap"), 4_000_000_000, 0).await;
        }
        let open = job(m, &buyer, &id).await;
        assert_eq!(
            open["units"][0]["state"], "queued",
            "no operator host stands behind the failure: {open}"
        );
        let host = provider(m, 10).await;
        let g = lease(m, &host)
            .await
            .expect("the unit waits for a vouched host");
        answer(m, &host, &g, Ok(b"out")).await;
        let done = job(m, &buyer, &id).await;
        assert_eq!(done["state"], "done", "{done}");
        for key in &ring {
            assert_eq!(m.available(key).await, 0, "a false failure is not paid");
        }
        assert_conserved(
            m,
            &buyer,
            1000,
            &done,
            &[&ring[0], &ring[1], &ring[2], &host],
        )
        .await;
    }
);

both_dbs!(
    an_unconfirmed_output_does_not_hold_honest_failures_unpaid,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        // Two replicas wanted: a farmed key's junk output waits for its
        // quorum while the job computes, logs and fails on the operator's hosts.
        let id = submit(m, &buyer, "saxpy", &[b"u"], 600, 2).await;
        let farmed = farmed_trusted(m).await;
        let g = lease(m, &farmed).await.unwrap();
        answer(m, &farmed, &g, Ok(b"junk")).await;
        let hosts = [provider(m, 10).await, provider(m, 10).await];
        for host in &hosts {
            let g = lease(m, host)
                .await
                .expect("the unit wants another replica");
            answer_using(m, host, &g, Err("trap"), 3_000_000_000, 0).await;
        }
        let failed = job(m, &buyer, &id).await;
        assert_eq!(
            failed["state"], "failed",
            "two vouched hosts failed it the same way: {failed}"
        );
        for host in &hosts {
            assert_eq!(m.available(host).await, 29, "their runs are billed");
        }
        assert_eq!(
            m.available(&farmed).await,
            0,
            "the unconfirmed output is not paid"
        );
        assert_conserved(m, &buyer, 1000, &failed, &[&farmed, &hosts[0], &hosts[1]]).await;
    }
);

both_dbs!(
    a_unit_that_keeps_crashing_workers_goes_to_vouched_hosts_only,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "saxpy", &[b"u"], 600, 1).await;
        // A lost worker counts for nothing on a key the operator does not
        // vouch for, so each such run would be unpaid: after three, only the
        // operator's own hosts run the unit.
        for _ in 0..agora_market::jobs::MAX_UNIT_FAILURES {
            let key = farmed_trusted(m).await;
            let g = lease(m, &key).await.expect("a trusted key runs it");
            answer(m, &key, &g, Err("worker-lost")).await;
        }
        assert!(
            lease(m, &farmed_trusted(m).await).await.is_none(),
            "no more unpaid runs on other keys"
        );
        let host = provider(m, 10).await;
        assert_eq!(
            lease(m, &host).await.expect("a vouched host runs it")["job_id"],
            id.as_str()
        );
    }
);

both_dbs!(
    trusted_failures_that_differ_do_not_fail_a_unit,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "saxpy", &[b"u"], 600, 1).await;
        // An honest host's worker is lost, and a colluding trusted key claims
        // a trap: two counted failures that do not agree prove nothing about
        // the job.
        let (host, colluder) = (provider(m, 10).await, farmed_trusted(m).await);
        let g = lease(m, &host).await.unwrap();
        answer(m, &host, &g, Err("worker-lost")).await;
        let g = lease(m, &colluder).await.unwrap();
        answer(m, &colluder, &g, Err("trap")).await;
        let open = job(m, &buyer, &id).await;
        assert_eq!(open["units"][0]["state"], "queued", "{open}");
        let second = provider(m, 10).await;
        let g = lease(m, &second).await.expect("still open");
        answer(m, &second, &g, Ok(b"out")).await;
        let done = job(m, &buyer, &id).await;
        assert_eq!(done["state"], "done", "{done}");
        assert_eq!(
            (m.available(&host).await, m.available(&colluder).await),
            (0, 0),
            "failures a success contradicts are unpaid"
        );
        assert_conserved(m, &buyer, 1000, &done, &[&host, &colluder, &second]).await;
    }
);

both_dbs!(
    a_fresh_keys_failure_leaves_a_unit_one_trusted_provider_can_finish,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "saxpy", &[b"a", b"b"], 600, 1).await;
        // A market with one trusted provider. Fresh keys take each unit first,
        // which asks for a confirming trusted replica; one fails its run, the
        // other walks away from its lease.
        let (failing, walking) = (
            untrusted_provider(m, 10).await,
            untrusted_provider(m, 10).await,
        );
        let gf = lease(m, &failing).await.unwrap();
        let gw = lease(m, &walking).await.unwrap();
        let only = provider(m, 10).await;
        let (t1, t2) = (
            lease(m, &only).await.unwrap(),
            lease(m, &only).await.unwrap(),
        );
        answer(m, &only, &t1, Ok(b"out")).await;
        answer(m, &only, &t2, Ok(b"out")).await;
        assert_eq!(
            job(m, &buyer, &id).await["state"],
            "running",
            "each unit waits for its fresh key's replica"
        );
        answer(m, &failing, &gf, Err("trap")).await;
        let one = job(m, &buyer, &id).await;
        assert_eq!(
            one["units"][0]["state"], "verified",
            "the failure gave the replica back and the trusted result decided: {one}"
        );
        assert!(m.available(&only).await > 0, "paid in the same transaction");
        m.state.advance_clock(Duration::from_millis(
            m.state.config.jobs.lease_ttl_ms as u64 + 1,
        ));
        m.state.sweep().await.unwrap();
        let done = job(m, &buyer, &id).await;
        assert_eq!(
            done["state"], "done",
            "the lone trusted results decide their units: {done}"
        );
        assert!(m.available(&only).await > 0, "and are paid");
        assert_eq!(
            answer(m, &walking, &gw, Ok(b"out")).await.0,
            StatusCode::CONFLICT,
            "the walked-away lease lapsed"
        );
        assert_conserved(m, &buyer, 1000, &done, &[&failing, &walking, &only]).await;
    }
);

both_dbs!(
    a_job_that_fails_differently_on_each_trusted_host_pays_for_them_at_expiry,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "saxpy", &[b"u"], 600, 1).await;
        // The market's two trusted hosts: the job fails a different way on
        // each, so nothing matches and no third trusted host exists.
        let (a, b) = (provider(m, 10).await, provider(m, 10).await);
        let g = lease(m, &a).await.unwrap();
        answer_using(m, &a, &g, Err("trap"), 1_000_000_000, 0).await;
        let g = lease(m, &b).await.unwrap();
        answer_using(m, &b, &g, Err("job-error"), 3_000_000_000, 0).await;
        assert_eq!(job(m, &buyer, &id).await["state"], "running");
        m.state.advance_clock(Duration::from_millis(
            m.state.config.jobs.job_ttl_ms as u64 + 60_000,
        ));
        m.state.sweep().await.unwrap();
        let expired = job(m, &buyer, &id).await;
        assert_eq!(expired["state"], "expired", "{expired}");
        // The operator's hosts are paid what they measured: 1e9 and 3e9 fuel at
        // 10 per billion, 10 and 30, less the 5% fee (which rounds to 0 on 10).
        assert_eq!(
            (m.available(&a).await, m.available(&b).await),
            (10, 29),
            "what the job's failures cost is paid at its end"
        );
        assert_conserved(m, &buyer, 1000, &expired, &[&a, &b]).await;
    }
);

both_dbs!(
    a_job_that_fails_everywhere_marks_no_provider,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "saxpy", &[b"u"], 600, 1).await;
        // A buyer whose unit always times out: native and browser report it
        // typed, once the unit's 10 s really passed by the market's clock.
        let mut honest = Vec::new();
        for _ in 0..2 {
            let p = crate::jobs::trusted_provider(m, 10).await;
            let g = lease(m, &p).await.unwrap();
            m.state.advance_clock(Duration::from_secs(11));
            let lease_id = g["lease_id"].as_str().unwrap();
            let outcome = agora_wire::api::RunOutcome::LimitExceeded;
            let signature = p.sign(&agora_wire::api::ResultReport::signed_bytes(
                lease_id,
                outcome,
                None,
                &[],
                0,
                0,
            ));
            let report = json!({"outcome": "limit-exceeded", "limit": "timeout", "message": "the words do not matter", "fuel_used": 0,
                            "gpu_time_us": 0, "peak_memory_bytes": 0, "signature": signature});
            let (status, reply) = m
                .call(
                    "POST",
                    &format!("/api/v1/leases/{lease_id}/result"),
                    Some(&report),
                    Some(&p),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{reply}");
            honest.push(p);
        }
        let failed = job(m, &buyer, &id).await;
        assert_eq!(failed["state"], "failed", "{failed}");
        let (_, providers) = m.call("GET", "/api/v1/providers", None, None).await;
        for p in &honest {
            assert_eq!(
                reputation(&providers, p),
                21.0 / 22.0,
                "the job's own timeout marks nobody: {providers}"
            );
        }
        // An outcome the wire does not know is refused, not guessed at.
        let report = json!({"outcome": "timeout?", "message": null, "fuel_used": 0, "gpu_time_us": 0, "peak_memory_bytes": 0, "signature": "x"});
        let p = provider(m, 10).await;
        let (status, _) = m
            .call(
                "POST",
                "/api/v1/leases/lnope/result",
                Some(&report),
                Some(&p),
            )
            .await;
        assert!(status.is_client_error(), "{status}");
    }
);

both_dbs!(
    a_probe_cannot_tell_a_canary_from_a_buyers_job,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let real = submit(m, &buyer, "saxpy", &[b"u"], 600, 1).await;
        let canary = json!({"package": "saxpy", "version": "1.0.0", "input_base64": crate::jobs::b64(b"c"), "expected_output_base64": crate::jobs::b64(b"c-out"),
                        "limits": {"fuel": 1_000_000_000u64, "memory_bytes": 64u64 << 20, "timeout_ms": 10_000, "gpu": false}});
        assert_eq!(
            m.call(
                "POST",
                "/api/v1/operator/canaries",
                Some(&canary),
                Some(&m.operator)
            )
            .await
            .0,
            StatusCode::OK
        );
        let p = untrusted_provider(m, 10).await;
        let grant = lease(m, &p).await.unwrap();
        let canary_job = grant["job_id"].as_str().unwrap().to_string();
        assert_ne!(
            canary_job, real,
            "a new provider's first lease is the canary"
        );
        for path in ["", "/logs", "/units/0/output"] {
            for key in [None, Some(&p)] {
                let (real_status, real_body) = m
                    .call("GET", &format!("/api/v1/jobs/{real}{path}"), None, key)
                    .await;
                let (canary_status, canary_body) = m
                    .call(
                        "GET",
                        &format!("/api/v1/jobs/{canary_job}{path}"),
                        None,
                        key,
                    )
                    .await;
                assert_eq!(
                    real_status,
                    canary_status,
                    "{path} signed={}: {real_body} vs {canary_body}",
                    key.is_some()
                );
                assert_eq!(real_body["error"]["code"], canary_body["error"]["code"]);
            }
        }
    }
);

both_dbs!(
    two_fresh_keys_cannot_confirm_each_others_garbage,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "saxpy", &[b"u"], 600, 2).await;
        let (s1, s2) = (
            untrusted_provider(m, 10).await,
            untrusted_provider(m, 10).await,
        );
        let g1 = lease(m, &s1).await.expect("a unit");
        assert!(
            lease(m, &s2).await.is_none(),
            "the second replica is kept for a trusted provider"
        );
        answer(m, &s1, &g1, Ok(b"garbage")).await;
        assert!(
            lease(m, &s2).await.is_none(),
            "also once the first has answered"
        );
        // Had they both answered the same garbage, nothing would be verified
        // without a trusted provider: one runs it and disagrees.
        let (t1, t2) = (provider(m, 10).await, provider(m, 10).await);
        let g = lease(m, &t1).await.expect("the confirming replica");
        answer(m, &t1, &g, Ok(b"right")).await;
        assert_eq!(job(m, &buyer, &id).await["state"], "running", "a tie");
        let g = lease(m, &t2).await.expect("the tie-breaker");
        answer(m, &t2, &g, Ok(b"right")).await;
        let done = job(m, &buyer, &id).await;
        assert_eq!(done["state"], "done", "{done}");
        assert_eq!(m.available(&s1).await, 0, "garbage is not paid");
        assert_conserved(m, &buyer, 1000, &done, &[&s1, &s2, &t1, &t2]).await;
    }
);

/// A key trusted through confirmations, not vouched for: what an attacker
/// can earn with honest work.
async fn farmed_trusted(m: &TestMarket) -> Keypair {
    let key = untrusted_provider(m, 10).await;
    sqlx::query("UPDATE providers SET good = 20, confirmed = 20 WHERE id = $1")
        .bind(key.id().as_str())
        .execute(&m.state.db.pool)
        .await
        .unwrap();
    key
}

both_dbs!(
    a_fresh_key_never_rides_along_with_a_colluding_trusted_key,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "saxpy", &[b"u"], 600, 2).await;
        let (colluder, fresh) = (farmed_trusted(m).await, untrusted_provider(m, 10).await);
        let g = lease(m, &colluder)
            .await
            .expect("the colluder leases first");
        assert!(
            lease(m, &fresh).await.is_none(),
            "an untrusted key is only ever a unit's first replica"
        );
        let honest = provider(m, 10).await;
        let h = lease(m, &honest)
            .await
            .expect("the second replica goes to a trusted provider");
        answer(m, &colluder, &g, Ok(b"garbage")).await;
        answer(m, &honest, &h, Ok(b"right")).await;
        assert!(lease(m, &fresh).await.is_none(), "nor the tie-breaker");
        let second = provider(m, 10).await;
        let t = lease(m, &second).await.expect("a trusted tie-breaker");
        answer(m, &second, &t, Ok(b"right")).await;
        let done = job(m, &buyer, &id).await;
        assert_eq!(done["state"], "done", "{done}");
        assert_eq!(m.available(&colluder).await, 0);
        assert_conserved(
            m,
            &buyer,
            1000,
            &done,
            &[&colluder, &fresh, &honest, &second],
        )
        .await;
    }
);

both_dbs!(
    a_colluding_trusted_key_confers_no_trust,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 10_000).await;
        let (colluder, fresh) = (farmed_trusted(m).await, untrusted_provider(m, 10).await);
        for round in 0..5 {
            let id = submit(
                m,
                &buyer,
                "saxpy",
                &[format!("u{round}").as_bytes()],
                600,
                1,
            )
            .await;
            let g = lease(m, &fresh).await.expect("the fresh key first");
            let c = lease(m, &colluder).await.expect("its partner second");
            answer(m, &fresh, &g, Ok(b"same")).await;
            answer(m, &colluder, &c, Ok(b"same")).await;
            assert_eq!(job(m, &buyer, &id).await["state"], "done");
        }
        let confirmed: f64 = sqlx::query_scalar("SELECT confirmed FROM providers WHERE id = $1")
            .bind(fresh.id().as_str())
            .fetch_one(&m.state.db.pool)
            .await
            .unwrap();
        assert_eq!(
            confirmed, 0.0,
            "only the operator's own hosts (and canaries) confirm"
        );
    }
);

both_dbs!(
    trust_grows_from_agreement_with_trusted_providers,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 100_000).await;
        let newcomer = untrusted_provider(m, 10).await;
        let veteran = provider(m, 10).await;
        for round in 0..4 {
            let id = submit(
                m,
                &buyer,
                "saxpy",
                &[format!("u{round}").as_bytes()],
                600,
                1,
            )
            .await;
            let g = lease(m, &newcomer).await.unwrap();
            let v = lease(m, &veteran)
                .await
                .expect("a trusted provider confirms the newcomer");
            answer(m, &newcomer, &g, Ok(b"same")).await;
            answer(m, &veteran, &v, Ok(b"same")).await;
            assert_eq!(job(m, &buyer, &id).await["state"], "done");
        }
        // Four confirmations: the newcomer's results now count alone.
        let id = submit(m, &buyer, "saxpy", &[b"alone"], 600, 1).await;
        let g = lease(m, &newcomer).await.unwrap();
        assert!(
            lease(m, &veteran).await.is_none(),
            "no confirming replica for a trusted provider"
        );
        answer(m, &newcomer, &g, Ok(b"out")).await;
        assert_eq!(job(m, &buyer, &id).await["state"], "done");
    }
);

both_dbs!(
    trusted_providers_are_spot_checked_after_they_answer,
    async |m: &TestMarket| {
        let mut state = m.state.clone();
        state.jobs.config.spot_check_rate = 1.0;
        let checked = TestMarket {
            state,
            operator: Keypair::from_file_json(&m.operator.to_file_json()).unwrap(),
            url: m.url.clone(),
            schema: None,
        };
        let m = &checked;
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "saxpy", &[b"u"], 600, 1).await;
        let (trusted, checker) = (provider(m, 10).await, provider(m, 10).await);
        let (_, before) = m.call("GET", "/api/v1/stats", None, None).await;
        let g = lease(m, &trusted).await.unwrap();
        let (_, after) = m.call("GET", "/api/v1/stats", None, None).await;
        assert_eq!(
            after["queued_units"].as_u64().unwrap() + 1,
            before["queued_units"].as_u64().unwrap(),
            "nothing at the grant tells a check is coming"
        );
        assert!(
            lease(m, &checker).await.is_none(),
            "no second replica before the answer"
        );
        answer(m, &trusted, &g, Ok(b"lie")).await;
        let c = lease(m, &checker)
            .await
            .expect("the answer is checked by a second trusted replica");
        answer(m, &checker, &c, Ok(b"truth")).await;
        assert_eq!(
            job(m, &buyer, &id).await["state"],
            "running",
            "caught: a tie-breaker decides"
        );
    }
);

both_dbs!(
    concurrent_requests_with_one_idempotency_key_run_once,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 10_000).await;
        let body = json!({"package": "saxpy", "inputs_base64": [crate::jobs::b64(b"u")], "max_price": 600, "replicas": 1,
                      "limits": {"fuel": 1_000_000_000u64, "memory_bytes": 1 << 20, "timeout_ms": 1000, "gpu": false}});
        let bytes = serde_json::to_vec(&body).unwrap();
        let replica = m.replica().await;
        let mut calls = Vec::new();
        for i in 0..6 {
            let state = if i % 2 == 0 {
                m.state.clone()
            } else {
                replica.clone()
            };
            let (bytes, buyer) = (
                bytes.clone(),
                Keypair::from_file_json(&buyer.to_file_json()).unwrap(),
            );
            calls.push(tokio::spawn(async move {
                call_on(
                    &state,
                    "POST",
                    "/api/v1/jobs",
                    Some(bytes),
                    Some(&buyer),
                    Some("submit-once"),
                )
                .await
            }));
        }
        let mut ids = std::collections::BTreeSet::new();
        for call in calls {
            let (status, reply) = call.await.unwrap();
            match status {
                StatusCode::OK => {
                    ids.insert(reply["id"].as_str().unwrap().to_string());
                }
                StatusCode::CONFLICT => {
                    assert_eq!(reply["error"]["code"], "idempotency_in_progress", "{reply}")
                }
                other => panic!("{other}: {reply}"),
            }
        }
        assert_eq!(
            ids.len(),
            1,
            "one job, whichever replies came back: {ids:?}"
        );
        assert_eq!(m.available(&buyer).await, 9_400, "one cap held");
        let (status, again) = call_on(
            &m.state,
            "POST",
            "/api/v1/jobs",
            Some(bytes),
            Some(&buyer),
            Some("submit-once"),
        )
        .await;
        assert_eq!(
            (status, again["id"].as_str().unwrap()),
            (StatusCode::OK, ids.first().unwrap().as_str()),
            "a later retry gets the first response"
        );
        let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
            .fetch_one(&m.state.db.pool)
            .await
            .unwrap();
        assert_eq!(jobs, 1);
        m.assert_invariants().await;
    }
);

both_dbs!(
    a_job_that_fails_on_purpose_pays_for_its_runs,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        // The job computes its answer, logs it, then fails: on every provider.
        let id = submit(m, &buyer, "saxpy", &[b"u"], 600, 1).await;
        let mut ran = Vec::new();
        // Two of the operator's hosts: the same failure on both is the job's.
        for _ in 0..2 {
            let p = provider(m, 10).await;
            let g = lease(m, &p).await.expect("the unit runs again");
            let lease_id = g["lease_id"].as_str().unwrap();
            let beat = json!({"running_units": 1, "free_cpu_cores": 1.0, "leases": [{"lease_id": lease_id, "logs": [{"level": "info", "message": "the answer is 42"}]}]});
            assert_eq!(
                m.call("POST", "/api/v1/providers/heartbeat", Some(&beat), Some(&p))
                    .await
                    .0,
                StatusCode::OK
            );
            answer_using(m, &p, &g, Err("job-error"), 3_000_000_000, 0).await;
            ran.push(p);
        }
        let failed = job(m, &buyer, &id).await;
        assert_eq!(failed["state"], "failed", "{failed}");
        // 3e9 fuel at 10 per billion = 30 a run, billed like work (5% fee).
        for p in &ran {
            assert_eq!(
                m.available(p).await,
                29,
                "a run the job failed on purpose is paid"
            );
        }
        assert_eq!(m.available(&buyer).await, 1000 - 60);
        let refs: Vec<&Keypair> = ran.iter().collect();
        assert_conserved(m, &buyer, 1000, &failed, &refs).await;
    }
);

both_dbs!(
    canaries_are_neither_always_first_nor_always_unit_zero,
    async |m: &TestMarket| {
        let mut state = m.state.clone();
        state.jobs.config.canary_chance = 0.0;
        let mixed = TestMarket {
            state,
            operator: Keypair::from_file_json(&m.operator.to_file_json()).unwrap(),
            url: m.url.clone(),
            schema: None,
        };
        let m = &mixed;
        publish(m, "saxpy").await;
        for i in 0..2u8 {
            let canary = json!({"package": "saxpy", "version": "1.0.0", "input_base64": crate::jobs::b64(&[i]), "expected_output_base64": crate::jobs::b64(b"c"),
                            "limits": {"fuel": 1_000_000_000u64, "memory_bytes": 64u64 << 20, "timeout_ms": 10_000, "gpu": false}});
            assert_eq!(
                m.call(
                    "POST",
                    "/api/v1/operator/canaries",
                    Some(&canary),
                    Some(&m.operator)
                )
                .await
                .0,
                StatusCode::OK
            );
        }
        let buyer = Keypair::generate();
        m.fund(&buyer, 1000).await;
        let id = submit(m, &buyer, "saxpy", &[b"u"], 600, 1).await;
        let p = untrusted_provider(m, 10).await;
        let first = lease(m, &p).await.unwrap();
        assert_eq!(
            first["job_id"],
            id.as_str(),
            "a buyer's unit before a canary"
        );
        let canary = lease(m, &p)
            .await
            .expect("the canary once nothing else fits");
        assert_ne!(canary["job_id"], id.as_str());
        // Across fresh keys, a canary's unit index varies like a small job's.
        let mut units = std::collections::BTreeSet::new();
        for _ in 0..12 {
            let q = untrusted_provider(m, 10).await;
            units.insert(
                lease(m, &q).await.expect("a canary")["unit"]
                    .as_u64()
                    .unwrap(),
            );
        }
        assert!(units.len() > 1, "{units:?}");
        let (_, stats) = m.call("GET", "/api/v1/stats", None, None).await;
        assert_eq!(
            stats["running_units"], 14,
            "canaries count as running like any lease: {stats}"
        );
    }
);

// A nosy caller reads a buyer's input: an anonymous one, a stranger with a
// fresh key, a provider with no lease on it, a provider whose lease has
// ended. Only the buyer, the operator and the provider while it holds the
// lease read it; for everyone else it is indistinguishable from a digest
// nobody has.
both_dbs!(
    a_units_input_is_read_only_by_its_buyer_and_its_leaseholder,
    async |m: &TestMarket| {
        publish(m, "private").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1_000_000).await;
        submit(m, &buyer, "private", &[b"the buyer's secret"], 1_000, 1).await;
        let path = format!(
            "/api/v1/blobs/{}",
            agora_wire::digest_hex(b"the buyer's secret")
        );
        let nothing = format!("/api/v1/blobs/{}", agora_wire::digest_hex(b"no such input"));
        let (stranger, holder, idle) = (
            Keypair::generate(),
            provider(m, 1).await,
            provider(m, 1).await,
        );
        assert_eq!(
            m.call("GET", &path, None, None).await.0,
            StatusCode::UNAUTHORIZED,
            "an anonymous read"
        );
        let (missing, missing_body) = m.call("GET", &nothing, None, Some(&stranger)).await;
        assert_eq!(missing, StatusCode::NOT_FOUND);
        for nosy in [&stranger, &idle, &holder] {
            let (status, body) = m.call("GET", &path, None, Some(nosy)).await;
            assert_eq!(
                (status, &body["code"]),
                (missing, &missing_body["code"]),
                "a probe cannot tell a secret from nothing"
            );
        }
        let grant = lease(m, &holder).await.expect("a lease");
        assert_eq!(
            m.call("GET", &path, None, Some(&holder)).await,
            (StatusCode::OK, json!("the buyer's secret"))
        );
        assert_eq!(
            m.call("GET", &path, None, Some(&idle)).await.0,
            StatusCode::NOT_FOUND,
            "another provider's lease opens nothing"
        );
        assert_eq!(
            answer(m, &holder, &grant, Ok(b"out")).await.0,
            StatusCode::OK
        );
        assert_eq!(
            m.call("GET", &path, None, Some(&holder)).await.0,
            StatusCode::NOT_FOUND,
            "its lease ended, and its reading with it"
        );
        assert_eq!(
            m.call("GET", &path, None, Some(&buyer)).await,
            (StatusCode::OK, json!("the buyer's secret"))
        );
        assert_eq!(
            m.call("GET", &path, None, Some(&m.operator)).await.0,
            StatusCode::OK
        );
    }
);

// A provider describes itself with a thousand GPUs or a megabyte of name:
// what it registers is stored and listed to everyone, so it is refused by
// the named limit, and the largest honest description is kept.
both_dbs!(
    a_provider_cannot_register_an_unbounded_description,
    async |m: &TestMarket| {
        let key = Keypair::generate();
        let gpu = |name: String| json!({"name": name, "backend": "vulkan", "device_type": "discrete-gpu"});
        let register = |gpus: Vec<Value>| {
            json!({"capabilities": {"cpu_cores": 2, "memory_bytes": 1u64 << 30, "gpus": gpus, "cuda": false, "kind": "native"},
                                              "ask": {"per_billion_fuel": 1, "per_gpu_second": 1}, "max_concurrent": 1})
        };
        let limits = agora_wire::limits::MAX_PROVIDER_GPUS;
        let text = agora_wire::limits::MAX_GPU_TEXT_BYTES;
        for (what, gpus) in [
            (
                "MAX_PROVIDER_GPUS",
                (0..=limits)
                    .map(|i| gpu(format!("gpu {i}")))
                    .collect::<Vec<_>>(),
            ),
            ("MAX_GPU_TEXT_BYTES", vec![gpu("x".repeat(text + 1))]),
            // A right-to-left override: "RTX 4090" that reads as another card.
            ("control characters", vec![gpu("RTX \u{202e}0904".into())]),
        ] {
            let (status, body) = m
                .call(
                    "POST",
                    "/api/v1/providers",
                    Some(&register(gpus)),
                    Some(&key),
                )
                .await;
            assert!(status.is_client_error(), "{what}: {status} {body}");
            assert!(
                body["error"]["message"].as_str().unwrap().contains(what),
                "{what}: {body}"
            );
        }
        let largest = (0..limits).map(|_| gpu("x".repeat(text))).collect();
        assert_eq!(
            m.call(
                "POST",
                "/api/v1/providers",
                Some(&register(largest)),
                Some(&key)
            )
            .await
            .0,
            StatusCode::OK
        );
    }
);
