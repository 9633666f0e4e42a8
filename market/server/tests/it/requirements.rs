//! What a job asks of its providers: GPU requirements met by one device,
//! refused at submit when no online provider meets them (saying why), a
//! minimum reputation, allow and deny lists; and a job's own deadline.

use crate::jobs::{b64, heartbeat, lease, publish, trusted_provider, untrusted_provider};
use crate::*;

/// A provider with one device, registered and online.
async fn provider_with(m: &TestMarket, gpu: Value) -> Keypair {
    let key = Keypair::generate();
    let register = json!({"capabilities": {"cpu_cores": 2, "memory_bytes": 1u64 << 30, "gpus": [gpu], "cuda": true, "kind": "native"},
                          "ask": {"per_billion_fuel": 10, "per_gpu_second": 1}, "max_concurrent": 4});
    let (status, reply) = m
        .call("POST", "/api/v1/providers", Some(&register), Some(&key))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    heartbeat(m, &key).await;
    key
}

fn cuda(memory_gib: u64, cc: &str) -> Value {
    json!({"name": format!("cuda {memory_gib} GiB"), "backend": "cuda", "device_type": "discrete-gpu",
           "memory_bytes": memory_gib << 30, "compute_capability": cc})
}

/// Submit a one-unit job with `extra` fields; the status and reply.
async fn submit_with(m: &TestMarket, buyer: &Keypair, extra: Value) -> (StatusCode, Value) {
    let mut body = json!({"package": "saxpy", "inputs_base64": [b64(b"u")],
                          "limits": {"fuel": 1_000_000_000u64, "memory_bytes": 64u64 << 20, "timeout_ms": 10_000, "gpu": false},
                          "max_price": 600, "replicas": 1});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    m.call("POST", "/api/v1/jobs", Some(&body), Some(buyer))
        .await
}

both_dbs!(
    a_job_no_online_gpu_can_run_is_refused_at_submit_saying_why,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1_000).await;
        // The only provider online runs llvmpipe, which reports no memory.
        untrusted_provider(m, 10).await;
        let (status, reply) = submit_with(
            m,
            &buyer,
            json!({"requirements": {"memory_bytes": 8u64 << 30}}),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
        assert_eq!(reply["error"]["code"], "unsatisfiable");
        let why = reply["error"]["message"].as_str().unwrap();
        assert!(
            why.contains("at least 8.0 GiB of GPU memory")
                && why.contains("llvmpipe (vulkan, cpu)"),
            "{why}"
        );
        assert_eq!(m.available(&buyer).await, 1_000, "nothing held");
        // A card that meets it comes online: the same job is taken.
        provider_with(m, cuda(16, "8.6")).await;
        let (status, job) = submit_with(
            m,
            &buyer,
            json!({"requirements": {"memory_bytes": 8u64 << 30}}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{job}");
        // Requirements the market cannot read are refused as such.
        for bad in [
            json!({"backend": "opencl"}),
            json!({"device_type": "quantum"}),
            json!({"compute_capability": "eight"}),
        ] {
            let (status, reply) = submit_with(m, &buyer, json!({"requirements": bad})).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} -> {reply}");
        }
        // A provider claiming an implausible card is refused.
        let (status, _) = m
            .call(
                "POST",
                "/api/v1/providers",
                Some(&json!({"capabilities": {"cpu_cores": 2, "memory_bytes": 1u64 << 30, "gpus": [cuda(1 << 20, "9.0")], "cuda": true, "kind": "native"},
                             "ask": {"per_billion_fuel": 10, "per_gpu_second": 1}, "max_concurrent": 4})),
                Some(&Keypair::generate()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        m.assert_invariants().await;
    }
);

both_dbs!(
    leasing_honours_requirements_reputation_and_the_lists,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 10_000).await;
        let software = untrusted_provider(m, 10).await;
        let small = provider_with(m, cuda(16, "8.6")).await;
        let big = provider_with(m, cuda(40, "8.0")).await;
        // 20 GiB on CUDA 8.0 or above: only the big card.
        let (status, _) = submit_with(
            m,
            &buyer,
            json!({"requirements": {"memory_bytes": 20u64 << 30, "backend": "cuda", "compute_capability": "8.0"}}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(lease(m, &software).await.is_none());
        assert!(lease(m, &small).await.is_none(), "16 GiB is not 20");
        assert!(lease(m, &big).await.is_some());
        // An allow list: only the small card, although the big one is free.
        let (status, _) =
            submit_with(m, &buyer, json!({"providers": {"allow": [small.id()]}})).await;
        assert_eq!(status, StatusCode::OK);
        assert!(lease(m, &big).await.is_none());
        assert!(lease(m, &software).await.is_none());
        assert!(lease(m, &small).await.is_some());
        // A deny list: anyone but the small card.
        let (status, _) =
            submit_with(m, &buyer, json!({"providers": {"deny": [small.id()]}})).await;
        assert_eq!(status, StatusCode::OK);
        assert!(lease(m, &small).await.is_none());
        assert!(lease(m, &software).await.is_some());
        // A minimum reputation: a fresh key (0.5) is below it, a provider
        // with a record is not.
        let (status, _) =
            submit_with(m, &buyer, json!({"providers": {"min_reputation": 0.9}})).await;
        assert_eq!(status, StatusCode::OK);
        let fresh = untrusted_provider(m, 10).await;
        assert!(lease(m, &fresh).await.is_none());
        // (Not a vouched host: those pass every filter.)
        let proven = untrusted_provider(m, 10).await;
        sqlx::query("UPDATE providers SET good = 20, bad = 0 WHERE id = $1")
            .bind(proven.id().as_str())
            .execute(&m.state.db.pool)
            .await
            .unwrap();
        assert!(lease(m, &proven).await.is_some());
        // Filters the market cannot read are refused.
        for bad in [
            json!({"min_reputation": 2.0}),
            json!({"allow": ["not a key"]}),
            json!({"allow": [small.id()], "deny": [small.id()]}),
        ] {
            let (status, reply) = submit_with(m, &buyer, json!({"providers": bad})).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} -> {reply}");
        }
        m.assert_invariants().await;
    }
);

both_dbs!(
    a_job_expires_at_its_own_deadline_within_the_markets_maximum,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1_000).await;
        let (status, job) = submit_with(m, &buyer, json!({"deadline_ms": 3_600_000})).await;
        assert_eq!(status, StatusCode::OK, "{job}");
        let lasts = job["expires_at_ms"].as_i64().unwrap() - job["created_at_ms"].as_i64().unwrap();
        assert_eq!(lasts, 3_600_000);
        let too_long = agora_wire::limits::MAX_JOB_DEADLINE_MS + 1;
        for bad in [0, too_long] {
            let (status, reply) = submit_with(m, &buyer, json!({"deadline_ms": bad})).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
        }
        // Past its deadline the job expires and its cap comes back.
        m.state
            .advance_clock(std::time::Duration::from_millis(3_600_001));
        m.state.sweep().await.unwrap();
        let id = job["id"].as_str().unwrap();
        assert_eq!(crate::jobs::job(m, &buyer, id).await["state"], "expired");
        assert_eq!(m.available(&buyer).await, 1_000);
        m.assert_invariants().await;
    }
);

both_dbs!(
    a_buyers_filter_never_shuts_out_the_operators_own_hosts,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1_000).await;
        // The market's referee (a unit fails for good, and failed runs are
        // billed, on a vouched host's word) runs any job, denied or not.
        let vouched = crate::jobs::provider(m, 10).await;
        let other = untrusted_provider(m, 10).await;
        let (status, _) = submit_with(
            m,
            &buyer,
            json!({"providers": {"deny": [vouched.id()], "allow": [other.id()], "min_reputation": 0.99}}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(lease(m, &vouched).await.is_some());
    }
);

/// Register `key` (a llvmpipe provider, online) taking only `accepts`.
async fn register_accepting(m: &TestMarket, key: &Keypair, accepts: Value) -> (StatusCode, Value) {
    let register = json!({"capabilities": {"cpu_cores": 2, "memory_bytes": 1u64 << 30,
                          "gpus": [{"name": "llvmpipe", "backend": "vulkan", "device_type": "cpu"}], "cuda": false, "kind": "native"},
                          "ask": {"per_billion_fuel": 10, "per_gpu_second": 1}, "max_concurrent": 4, "accepts": accepts});
    let reply = m
        .call("POST", "/api/v1/providers", Some(&register), Some(key))
        .await;
    heartbeat(m, key).await;
    reply
}

both_dbs!(
    a_provider_is_leased_only_the_work_it_takes_canaries_included,
    async |m: &TestMarket| {
        let author = publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 10_000).await;
        // A 10 s, 64 MiB unit of saxpy, which calls the GPU kernels.
        let (status, _) = submit_with(m, &buyer, json!({})).await;
        assert_eq!(status, StatusCode::OK);
        let p = Keypair::generate();
        for refusing in [
            json!({"deny_packages": ["saxpy"]}),
            json!({"packages": ["mandelbrot"]}),
            json!({"deny_publishers": [author.id()]}),
            json!({"publishers": [Keypair::generate().id()]}),
            json!({"max_timeout_ms": 5_000}),
            json!({"max_memory_bytes": 32u64 << 20}),
            json!({"units": "cpu-only"}),
        ] {
            let (status, reply) = register_accepting(m, &p, refusing.clone()).await;
            assert_eq!(status, StatusCode::OK, "{reply}");
            assert!(
                lease(m, &p).await.is_none(),
                "leased although it takes {refusing}"
            );
        }
        let (status, _) = register_accepting(
            m,
            &p,
            json!({"publishers": [author.id()], "units": "gpu-only"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(lease(m, &p).await.is_some(), "its publisher, a GPU unit");
        // A canary is leased like a buyer's unit: a filter refusing it
        // does not get it (it would give the canary away).
        let (canary, _) = crate::jobs::saxpy_canary();
        let (status, reply) = m
            .call(
                "POST",
                "/api/v1/operator/canaries",
                Some(&canary),
                Some(&m.operator),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        let fresh = Keypair::generate();
        register_accepting(m, &fresh, json!({"deny_packages": ["saxpy"]})).await;
        assert!(
            lease(m, &fresh).await.is_none(),
            "no canary of a package it refuses"
        );
        register_accepting(m, &fresh, json!({})).await;
        assert!(
            lease(m, &fresh).await.is_some(),
            "the canary, once it takes saxpy"
        );
        // The operator's own host is the referee for every package: its
        // filter limits only the size of its units.
        let referee = crate::jobs::provider(m, 10).await;
        register_accepting(
            m,
            &referee,
            json!({"deny_packages": ["saxpy"], "units": "cpu-only"}),
        )
        .await;
        let (status, _) = submit_with(m, &buyer, json!({})).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            lease(m, &referee).await.is_some(),
            "a vouched host runs any package"
        );
        // Filters the market cannot read are refused.
        for bad in [
            json!({"publishers": ["not a key"]}),
            json!({"units": "tpu-only"}),
            json!({"packages": [""]}),
            json!({"packages": ["Not A Name!"]}),
            json!({"packages": ["saxpy"], "deny_packages": ["saxpy"]}),
            json!({"max_timeout_ms": 0}),
        ] {
            let (status, reply) = register_accepting(m, &fresh, bad.clone()).await;
            assert!(
                status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
                "{bad} -> {status} {reply}"
            );
        }
    }
);

both_dbs!(
    a_provider_with_an_allow_list_is_only_ever_a_units_first_replica,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 10_000).await;
        // Two replicas: the second checks the first.
        let (status, _) = submit_with(m, &buyer, json!({"replicas": 2})).await;
        assert_eq!(status, StatusCode::OK);
        let first = crate::jobs::trusted_provider(m, 10).await;
        assert!(lease(m, &first).await.is_some());
        // A trusted key aiming an allow list at the package (a ring's way
        // to the replicas that check its partners) gets no check replica.
        let aimed = untrusted_provider(m, 10).await;
        sqlx::query("UPDATE providers SET good = 20, bad = 0, confirmed = 10 WHERE id = $1")
            .bind(aimed.id().as_str())
            .execute(&m.state.db.pool)
            .await
            .unwrap();
        register_accepting(m, &aimed, json!({"packages": ["saxpy"]})).await;
        assert!(
            lease(m, &aimed).await.is_none(),
            "no second replica for an allow list"
        );
        // Without it, the same key is a checker like any trusted one.
        register_accepting(m, &aimed, json!({})).await;
        assert!(lease(m, &aimed).await.is_some());
        // And a first replica is the allow list's to take.
        let (status, _) = submit_with(m, &buyer, json!({})).await;
        assert_eq!(status, StatusCode::OK);
        register_accepting(m, &aimed, json!({"packages": ["saxpy"]})).await;
        assert!(lease(m, &aimed).await.is_some());
    }
);

/// A card of `name` whose host measured `gflops`.
fn measured(name: &str, gflops: u64) -> Value {
    json!({"name": name, "backend": "vulkan", "device_type": "discrete-gpu", "gflops": gflops})
}

/// The speed the market honoured for `key`'s first device.
async fn honoured(m: &TestMarket, key: &Keypair) -> i64 {
    sqlx::query_scalar("SELECT gflops FROM provider_gpus WHERE provider = $1 AND idx = 0")
        .bind(key.id().as_str())
        .fetch_one(&m.state.db.pool)
        .await
        .unwrap()
}

/// Register `key` (again) with one card of `name` measured at `gflops`.
async fn register_measured(m: &TestMarket, key: &Keypair, gpus: Value) -> (StatusCode, Value) {
    let register = json!({"capabilities": {"cpu_cores": 2, "memory_bytes": 1u64 << 30, "gpus": gpus, "cuda": false, "kind": "native"},
                          "ask": {"per_billion_fuel": 10, "per_gpu_second": 1}, "max_concurrent": 4});
    m.call("POST", "/api/v1/providers", Some(&register), Some(key))
        .await
}

/// The operator vouches for `key`, and the market's view (10 s) sees it.
async fn vouch(m: &TestMarket, key: &Keypair) {
    crate::jobs::vouch(m, key).await;
    m.state.advance_clock(std::time::Duration::from_secs(11));
    heartbeat(m, key).await;
}

both_dbs!(
    a_measured_speed_is_a_requirement_rated_by_the_operators_hosts,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 10_000).await;
        // A fresh key's speed, with no trusted peer of its class online,
        // is unrated; once the operator vouches for it, its own.
        let fast = provider_with(m, measured("Radeon RX 7900", 30_000)).await;
        assert_eq!(honoured(m, &fast).await, 0, "a fresh key's word alone");
        vouch(m, &fast).await;
        let (status, reply) =
            register_measured(m, &fast, json!([measured("Radeon RX 7900", 30_000)])).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        heartbeat(m, &fast).await;
        assert_eq!(honoured(m, &fast).await, 30_000);
        let slow = provider_with(m, measured("Radeon RX 6400", 5_000)).await;
        vouch(m, &slow).await;
        register_measured(m, &slow, json!([measured("Radeon RX 6400", 5_000)])).await;
        heartbeat(m, &slow).await;
        assert_eq!(honoured(m, &slow).await, 5_000);
        // Leasing honours the minimum: only the fast card takes the unit.
        let (status, reply) =
            submit_with(m, &buyer, json!({"requirements": {"min_gflops": 20_000}})).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert!(
            lease(m, &slow).await.is_none(),
            "5,000 GFLOPS is not 20,000"
        );
        assert!(lease(m, &fast).await.is_some());
        // A minimum nobody online measured is refused at submit, saying why.
        let (status, reply) =
            submit_with(m, &buyer, json!({"requirements": {"min_gflops": 50_000}})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
        let why = reply["error"]["message"].as_str().unwrap();
        assert!(
            why.contains("a measured speed of at least 50000 GFLOPS")
                && why.contains("the fastest measured: 30000 GFLOPS"),
            "{why}"
        );
        // A minimum past any honoured speed cannot be met: refused as such.
        let (status, _) = submit_with(
            m,
            &buyer,
            json!({"requirements": {"min_gflops": 10_000_000}}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // Implausible claims are refused at registration: past any card, or
        // a software adapter claiming a GPU's speed.
        for gpu in [
            measured("Radeon RX 7900", 900_000),
            json!({"name": "llvmpipe", "backend": "vulkan", "device_type": "cpu", "gflops": 30_000}),
        ] {
            let (status, reply) = register_measured(m, &Keypair::generate(), json!([gpu])).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{gpu} -> {reply}");
        }
        // A flock of fresh keys claiming a tenfold card of a class a trusted
        // provider measured gets 150% of its speed; naming a card nobody
        // trusted measured, or a second device, gets no rating at all. The
        // buyer's minimum of 100,000 stays out of their reach.
        m.state.advance_clock(std::time::Duration::from_secs(11));
        heartbeat(m, &fast).await;
        heartbeat(m, &slow).await;
        let mut flock = Vec::new();
        for _ in 0..3 {
            let key = provider_with(m, measured("Radeon RX 7900", 300_000)).await;
            assert_eq!(honoured(m, &key).await, 45_000);
            flock.push(key);
        }
        let renamed = provider_with(m, measured("Radeon RX 7900 Overclocked", 300_000)).await;
        assert_eq!(honoured(m, &renamed).await, 0);
        let second = Keypair::generate();
        let (status, _) = register_measured(
            m,
            &second,
            json!([
                measured("Radeon RX 6400", 5_000),
                measured("Radeon RX 7900 Overclocked", 400_000)
            ]),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let rated: Vec<i64> =
            sqlx::query_scalar("SELECT gflops FROM provider_gpus WHERE provider = $1 ORDER BY idx")
                .bind(second.id().as_str())
                .fetch_all(&m.state.db.pool)
                .await
                .unwrap();
        assert_eq!(rated, [5_000, 0]);
        // (What leasing reads is what everyone is shown.)
        let (_, providers) = m.call("GET", "/api/v1/providers", None, None).await;
        let listed = providers
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == flock[0].id().as_str())
            .unwrap();
        assert_eq!(listed["capabilities"]["gpus"][0]["gflops"], 45_000);
        let (status, _) =
            submit_with(m, &buyer, json!({"requirements": {"min_gflops": 100_000}})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        // Trust earned on a few right answers anchors no class: such a key
        // naming a card nobody vouched is rated by nobody.
        let earned = provider_with(m, measured("Radeon RX 7900 Overclocked", 300_000)).await;
        sqlx::query("UPDATE providers SET good = 20, bad = 0, confirmed = 20 WHERE id = $1")
            .bind(earned.id().as_str())
            .execute(&m.state.db.pool)
            .await
            .unwrap();
        let (status, _) = register_measured(
            m,
            &earned,
            json!([measured("Radeon RX 7900 Overclocked", 300_000)]),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(honoured(m, &earned).await, 0);
        // A speed of nothing is refused: it is left out.
        let (status, _) = register_measured(
            m,
            &Keypair::generate(),
            json!([measured("Radeon RX 7900", 0)]),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // A trusted provider is not bounded by its own earlier claim.
        let (status, reply) =
            register_measured(m, &fast, json!([measured("Radeon RX 7900", 33_000)])).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(honoured(m, &fast).await, 33_000);
        m.assert_invariants().await;
    }
);

both_dbs!(
    a_rating_follows_its_class_peers_and_trust_as_they_change,
    async |m: &TestMarket| {
        let rerate =
            std::time::Duration::from_millis(agora_market::jobs::SPEED_RERATE_MS as u64 + 11_000);
        // A fresh key's claim, with no trusted peer of its class online:
        // unrated.
        let fresh = provider_with(m, measured("Radeon RX 9070", 90_000)).await;
        assert_eq!(honoured(m, &fresh).await, 0);
        // The operator's host of that class comes online: the fresh key's
        // heartbeat rates it again by that host, within the margin.
        let anchor = provider_with(m, measured("Radeon RX 9070", 40_000)).await;
        vouch(m, &anchor).await;
        register_measured(m, &anchor, json!([measured("Radeon RX 9070", 40_000)])).await;
        assert_eq!(honoured(m, &anchor).await, 40_000);
        m.state.advance_clock(rerate);
        heartbeat(m, &anchor).await;
        heartbeat(m, &fresh).await;
        assert_eq!(honoured(m, &fresh).await, 60_000, "150% of its only peer");
        let (_, providers) = m.call("GET", "/api/v1/providers", None, None).await;
        let listed = providers
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == fresh.id().as_str())
            .unwrap();
        assert_eq!(listed["capabilities"]["gpus"][0]["gflops"], 60_000);
        // The anchor loses the operator's word: at the next ratings neither
        // finds a trusted peer, and both are unrated.
        sqlx::query("DELETE FROM vouched WHERE id = $1")
            .bind(anchor.id().as_str())
            .execute(&m.state.db.pool)
            .await
            .unwrap();
        heartbeat(m, &fresh).await;
        assert_eq!(
            honoured(m, &fresh).await,
            60_000,
            "a rating stands its time"
        );
        m.state.advance_clock(rerate);
        heartbeat(m, &anchor).await;
        heartbeat(m, &fresh).await;
        assert_eq!(
            honoured(m, &anchor).await,
            0,
            "no longer the operator's: no anchor"
        );
        assert_eq!(
            honoured(m, &fresh).await,
            0,
            "its anchor online but unvouched"
        );
        m.assert_invariants().await;
    }
);

both_dbs!(
    gated_jobs_are_served_in_the_queues_one_order,
    async |m: &TestMarket| {
        // A trusted seller online, so bids are weighed (and it takes any
        // ungated unit at its ask).
        publish(m, "saxpy").await;
        trusted_provider(m, 10).await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 100_000).await;
        let second = std::time::Duration::from_secs(1);
        let submit = async |extra: Value| {
            m.state.advance_clock(second);
            let (status, job) = submit_with(m, &buyer, extra).await;
            assert_eq!(status, StatusCode::OK, "{job}");
            job["id"].as_str().unwrap().to_string()
        };
        let card = provider_with(m, cuda(16, "8.6")).await;
        let oldest = submit(json!({})).await;
        let gated_low = submit(json!({"requirements": {"memory_bytes": 8u64 << 30}})).await;
        let gated_high =
            submit(json!({"requirements": {"memory_bytes": 8u64 << 30}, "bid_percent": 300})).await;
        let ungated_high = submit(json!({"bid_percent": 300})).await;
        // The highest bid first, then the oldest, gated or not.
        let mut order = Vec::new();
        while let Some(grant) = lease(m, &card).await {
            order.push(grant["job_id"].as_str().unwrap().to_string());
        }
        assert_eq!(order, [gated_high, ungated_high, oldest, gated_low]);
        // Gated jobs whose units a provider may not take now (here: each
        // one's only unit is another fresh key's) hide no later gated job
        // from it, however many there are.
        let mut taken = Vec::new();
        for _ in 0..6 {
            taken.push(
                submit(json!({"requirements": {"memory_bytes": 8u64 << 30}, "bid_percent": 500}))
                    .await,
            );
        }
        let later =
            submit(json!({"requirements": {"memory_bytes": 8u64 << 30}, "bid_percent": 500})).await;
        let (first, second) = (
            provider_with(m, cuda(16, "8.6")).await,
            provider_with(m, cuda(16, "8.6")).await,
        );
        for job in &taken[..4] {
            assert_eq!(lease(m, &first).await.unwrap()["job_id"], job.as_str());
        }
        for job in taken[4..].iter().chain([&later]) {
            assert_eq!(lease(m, &second).await.unwrap()["job_id"], job.as_str());
        }
        // A provider the gated jobs do not admit is leased none of them.
        let software = untrusted_provider(m, 10).await;
        let more =
            submit(json!({"requirements": {"memory_bytes": 8u64 << 30}, "bid_percent": 1000}))
                .await;
        let plain = submit(json!({})).await;
        let grant = lease(m, &software).await.expect("the ungated unit");
        assert_eq!(grant["job_id"], plain.as_str());
        assert!(
            lease(m, &software).await.is_none(),
            "{more} is not its to run"
        );
        m.assert_invariants().await;
    }
);
