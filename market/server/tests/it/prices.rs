//! A price-ordered market: a higher bid is served first and paid; a bid
//! its cap cannot pay at the going rate queues last; a card is priced by
//! its class; the going rate per class comes from trusted trades only.

use crate::jobs::{
    answer, b64, heartbeat, job, lease, provider, publish, trusted_provider, untrusted_provider,
};
use crate::*;
use std::time::Duration;

/// Submit a one-unit saxpy job at `bid` percent (None: the default) with
/// `max_price`; the status and reply.
async fn submit_bid(
    m: &TestMarket,
    buyer: &Keypair,
    input: &[u8],
    bid: Option<u32>,
    max_price: u64,
) -> (StatusCode, Value) {
    let mut body = json!({"package": "saxpy", "inputs_base64": [b64(input)],
                          "limits": {"fuel": 4_000_000_000u64, "memory_bytes": 64u64 << 20, "timeout_ms": 10_000, "gpu": false},
                          "max_price": max_price, "replicas": 1});
    if let Some(bid) = bid {
        body["bid_percent"] = json!(bid);
    }
    m.call("POST", "/api/v1/jobs", Some(&body), Some(buyer))
        .await
}

async fn submitted(
    m: &TestMarket,
    buyer: &Keypair,
    input: &[u8],
    bid: Option<u32>,
    max_price: u64,
) -> Value {
    let (status, job) = submit_bid(m, buyer, input, bid, max_price).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    job
}

async fn stats(m: &TestMarket) -> Value {
    let (status, stats) = m.call("GET", "/api/v1/stats", None, None).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    stats
}

both_dbs!(
    a_higher_bid_is_served_first_and_its_run_is_paid_the_bid,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 10_000).await;
        let p = provider(m, 10).await;
        let low = submitted(m, &buyer, b"low", None, 3_000).await;
        let high = submitted(m, &buyer, b"high", Some(300), 3_000).await;
        assert_eq!(
            (low["bid_percent"].as_u64(), low["priority"].as_u64()),
            (Some(100), Some(100))
        );
        assert_eq!(
            (high["bid_percent"].as_u64(), high["priority"].as_u64()),
            (Some(300), Some(300))
        );
        // The later, higher bid is leased first.
        let first = lease(m, &p).await.unwrap();
        assert_eq!(first["job_id"], high["id"]);
        // 2 billion fuel at 10 per billion, times 3: 60 credits (20 at the ask).
        assert_eq!(answer(m, &p, &first, Ok(b"h")).await.0, StatusCode::OK);
        let second = lease(m, &p).await.unwrap();
        assert_eq!(second["job_id"], low["id"]);
        assert_eq!(answer(m, &p, &second, Ok(b"l")).await.0, StatusCode::OK);
        let (high, low) = (
            job(m, &buyer, high["id"].as_str().unwrap()).await,
            job(m, &buyer, low["id"].as_str().unwrap()).await,
        );
        let spent = |j: &Value| {
            j["cost"]["paid_to_providers"].as_u64().unwrap() + j["cost"]["fees"].as_u64().unwrap()
        };
        assert_eq!(spent(&high), 60, "{high}");
        assert_eq!(spent(&low), 20, "{low}");
        assert_eq!(
            m.available(&buyer).await,
            10_000 - spent(&high) - spent(&low)
        );
        let earned = m.available(&p).await;
        assert_eq!(
            earned,
            high["cost"]["paid_to_providers"].as_u64().unwrap()
                + low["cost"]["paid_to_providers"].as_u64().unwrap()
        );
        m.assert_invariants().await;
    }
);

both_dbs!(
    a_bid_outside_its_bounds_is_refused_and_holds_nothing,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 10_000).await;
        for bid in [0, 99, 1_001, u32::MAX] {
            let (status, reply) = submit_bid(m, &buyer, b"x", Some(bid), 3_000).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bid}: {reply}");
            assert!(
                reply["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("MAX_BID_PERCENT"),
                "{reply}"
            );
        }
        assert_eq!(m.available(&buyer).await, 10_000);
    }
);

both_dbs!(
    a_bid_is_worth_what_its_cap_pays_at_the_median_trusted_ask,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 100_000).await;
        // The trusted provider online asks 10 per billion fuel and 1 per
        // GPU second: a run of these units costs at most 4 billion fuel x
        // 10 + 10 s x 1 = 50 credits; a one-unit job has 3 slots.
        let p = trusted_provider(m, 10).await;
        // A fresh key asking nothing moves no priority.
        untrusted_provider(m, 0).await;
        // A cap of 40 pays not even the ask: queued last, whatever its bid.
        let greedy = submitted(m, &buyer, b"greedy", Some(1_000), 120).await;
        assert_eq!(greedy["priority"].as_u64(), Some(0), "{greedy}");
        let honest = submitted(m, &buyer, b"honest", None, 600).await;
        assert_eq!(honest["priority"].as_u64(), Some(100), "{honest}");
        // A cap of 200 pays 400% of the ask, not the 1000% bid.
        let partial = submitted(m, &buyer, b"partial", Some(1_000), 600).await;
        assert_eq!(partial["priority"].as_u64(), Some(400), "{partial}");
        let rich = submitted(m, &buyer, b"rich", Some(1_000), 15_000).await;
        assert_eq!(rich["priority"].as_u64(), Some(1_000), "{rich}");
        let mut grants = Vec::new();
        for _ in 0..3 {
            grants.push(lease(m, &p).await.unwrap());
        }
        let order: Vec<Value> = grants.iter().map(|g| g["job_id"].clone()).collect();
        assert_eq!(
            order,
            vec![
                rich["id"].clone(),
                partial["id"].clone(),
                honest["id"].clone()
            ]
        );
        // The partial bid's run is paid the bid in force: 2 billion fuel
        // at 10 x 400%, not x 1000%.
        assert_eq!(answer(m, &p, &grants[1], Ok(b"p")).await.0, StatusCode::OK);
        let partial = job(m, &buyer, partial["id"].as_str().unwrap()).await;
        let cost = &partial["cost"];
        assert_eq!(
            cost["paid_to_providers"].as_u64().unwrap() + cost["fees"].as_u64().unwrap(),
            80,
            "{partial}"
        );
        // Nor does this provider take the greedy unit at all: its cap does
        // not pay this ask at that bid.
        assert!(lease(m, &p).await.is_none());
        m.assert_invariants().await;
    }
);

both_dbs!(a_card_is_priced_by_its_class, async |m: &TestMarket| {
    publish(m, "saxpy").await;
    let key = Keypair::generate();
    let gpu = json!({"name": "NVIDIA GeForce RTX 4090", "backend": "vulkan", "device_type": "discrete-gpu"});
    let caps = json!({"cpu_cores": 8, "memory_bytes": 1u64 << 34, "gpus": [gpu], "cuda": false, "kind": "native"});
    // A price for a card it does not have is refused.
    let wrong = json!({"capabilities": caps, "ask": {"per_billion_fuel": 10, "per_gpu_second": 1}, "max_concurrent": 2,
                           "class_asks": {"amd-radeon-rx-7900": {"per_billion_fuel": 30, "per_gpu_second": 3}}});
    let (status, reply) = m
        .call("POST", "/api/v1/providers", Some(&wrong), Some(&key))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nvidia-geforce-rtx-4090"),
        "{reply}"
    );
    let register = json!({"capabilities": caps, "ask": {"per_billion_fuel": 10, "per_gpu_second": 1}, "max_concurrent": 2,
                              "class_asks": {"nvidia-geforce-rtx-4090": {"per_billion_fuel": 30, "per_gpu_second": 3}}});
    let (status, reply) = m
        .call("POST", "/api/v1/providers", Some(&register), Some(&key))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    heartbeat(m, &key).await;
    let (_, listing) = m.call("GET", "/api/v1/providers", None, None).await;
    let me = listing
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == key.id().as_str())
        .unwrap()
        .clone();
    assert_eq!(me["device_class"], "nvidia-geforce-rtx-4090");
    assert_eq!(me["ask"]["per_billion_fuel"], 30);
    // Its runs are paid its class's ask.
    let buyer = Keypair::generate();
    m.fund(&buyer, 10_000).await;
    let j = submitted(m, &buyer, b"card", None, 3_000).await;
    let grant = lease(m, &key).await.unwrap();
    let lease_id = grant["lease_id"].as_str().unwrap();
    let (class, rate): (String, i64) =
        sqlx::query_as("SELECT device_class, ask_per_billion_fuel FROM leases WHERE id = $1")
            .bind(lease_id)
            .fetch_one(&m.state.db.pool)
            .await
            .unwrap();
    assert_eq!((class.as_str(), rate), ("nvidia-geforce-rtx-4090", 30));
    assert_eq!(j["priority"], 100);
});

both_dbs!(
    the_going_rate_per_class_counts_trusted_trades_only,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1_000_000).await;
        // Before any trade: the median ask of trusted providers online; a
        // flock of fresh keys asking nothing does not drag it down.
        let referee = trusted_provider(m, 10).await;
        let mut flock = Vec::new();
        for _ in 0..5 {
            flock.push(untrusted_provider(m, 0).await);
        }
        assert_eq!(stats(m).await["suggested_ask"]["per_billion_fuel"], 10);
        // Each fresh key runs a unit at its ask of 0, confirmed by the
        // trusted referee at 10: both results accepted.
        for (i, fresh) in flock.iter().enumerate() {
            submitted(m, &buyer, format!("u{i}").as_bytes(), None, 3_000).await;
            let grant = lease(m, fresh).await.unwrap();
            assert_eq!(
                answer(m, fresh, &grant, Ok(b"same")).await.0,
                StatusCode::OK
            );
            let check = lease(m, &referee).await.unwrap();
            assert_eq!(check["job_id"], grant["job_id"]);
            assert_eq!(
                answer(m, &referee, &check, Ok(b"same")).await.0,
                StatusCode::OK
            );
        }
        let accepted: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM leases WHERE state = 'accepted'")
                .fetch_one(&m.state.db.pool)
                .await
                .unwrap();
        assert_eq!(accepted, 10, "every run was accepted");
        // Past the cached reading.
        m.state.advance_clock(Duration::from_secs(11));
        let stats = stats(m).await;
        let prices = stats["prices"].as_array().unwrap();
        assert_eq!(prices.len(), 1, "{stats}");
        assert_eq!(prices[0]["class"], "software");
        assert_eq!(prices[0]["rate"]["per_billion_fuel"], 10, "{stats}");
        assert_eq!(
            prices[0]["trades"], 5,
            "the fresh keys' trades are not counted"
        );
        assert_eq!(prices[0]["trusted_online"], 1, "fresh keys are not counted");
        assert!(
            stats["suggested_ask"]["per_billion_fuel"].as_u64().unwrap() >= 10,
            "{stats}"
        );
    }
);
