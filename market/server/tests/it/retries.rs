//! A buyer's retry policy: how many failed runs a unit may have, whether a
//! unit failing on its own is retried, and the wait between runs; none of
//! it lets a provider's word alone end a unit.

use crate::jobs::{answer, b64, heartbeat, job, lease, provider, publish, untrusted_provider};
use crate::*;
use std::time::Duration;

/// Submit a one-unit saxpy job with `retry`; the status and reply.
async fn submit_retry(m: &TestMarket, buyer: &Keypair, retry: Value) -> (StatusCode, Value) {
    let body = json!({"package": "saxpy", "inputs_base64": [b64(b"u")],
                      "limits": {"fuel": 4_000_000_000u64, "memory_bytes": 64u64 << 20, "timeout_ms": 10_000, "gpu": false},
                      "max_price": 3_000, "replicas": 1, "retry": retry});
    m.call("POST", "/api/v1/jobs", Some(&body), Some(buyer))
        .await
}

async fn submitted(m: &TestMarket, buyer: &Keypair, retry: Value) -> Value {
    let (status, job) = submit_retry(m, buyer, retry).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    job
}

/// A key trusted through confirmations, not vouched for.
async fn trusted_unvouched(m: &TestMarket) -> Keypair {
    let key = untrusted_provider(m, 10).await;
    sqlx::query("UPDATE providers SET good = 20, bad = 0, confirmed = 10 WHERE id = $1")
        .bind(key.id().as_str())
        .execute(&m.state.db.pool)
        .await
        .unwrap();
    key
}

async fn unit_state(m: &TestMarket, buyer: &Keypair, id: &Value) -> String {
    job(m, buyer, id.as_str().unwrap()).await["units"][0]["state"]
        .as_str()
        .unwrap()
        .to_string()
}

both_dbs!(
    a_retry_policy_past_its_bounds_is_refused_and_the_defaults_are_shown,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 10_000).await;
        for bad in [
            json!({"max_attempts": 0}),
            json!({"max_attempts": 4}),
            json!({"backoff_ms": 3_600_001u64}),
            json!({"retries": 2}),
        ] {
            let (status, reply) = submit_retry(m, &buyer, bad.clone()).await;
            assert!(status.is_client_error(), "{bad}: {reply}");
        }
        assert_eq!(m.available(&buyer).await, 10_000, "nothing held");
        let j = submitted(m, &buyer, json!({})).await;
        assert_eq!(
            j["retry"],
            json!({"max_attempts": 3, "retry_own_failures": true, "backoff_ms": 0})
        );
    }
);

both_dbs!(
    a_unit_failing_on_its_own_on_a_vouched_host_is_not_retried_when_the_buyer_says_so,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 10_000).await;
        let host = provider(m, 10).await;
        // A fresh key's trap ends nothing, whatever the buyer said.
        let fresh = untrusted_provider(m, 10).await;
        let strict = submitted(m, &buyer, json!({"retry_own_failures": false})).await;
        let grant = lease(m, &fresh).await.unwrap();
        assert_eq!(
            answer(m, &fresh, &grant, Err("trap")).await.0,
            StatusCode::OK
        );
        assert_eq!(unit_state(m, &buyer, &strict["id"]).await, "queued");
        // The operator's host traps too: the unit fails at once, and the
        // host's run is billed.
        let grant = lease(m, &host).await.unwrap();
        assert_eq!(grant["job_id"], strict["id"]);
        assert_eq!(
            answer(m, &host, &grant, Err("trap")).await.0,
            StatusCode::OK
        );
        let ended = job(m, &buyer, strict["id"].as_str().unwrap()).await;
        assert_eq!(ended["units"][0]["state"], "failed", "{ended}");
        assert_eq!(ended["state"], "failed", "{ended}");
        assert!(
            ended["cost"]["paid_to_providers"].as_u64().unwrap() > 0,
            "the host's run is billed: {ended}"
        );
        // By default the same trap on one host is retried.
        let lenient = submitted(m, &buyer, json!({})).await;
        let grant = lease(m, &host).await.unwrap();
        assert_eq!(grant["job_id"], lenient["id"]);
        assert_eq!(
            answer(m, &host, &grant, Err("trap")).await.0,
            StatusCode::OK
        );
        assert_eq!(unit_state(m, &buyer, &lenient["id"]).await, "queued");
        m.assert_invariants().await;
    }
);

both_dbs!(
    after_its_attempts_a_unit_goes_to_the_operators_hosts_only,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 10_000).await;
        let (a, b) = (trusted_unvouched(m).await, trusted_unvouched(m).await);
        let host = provider(m, 10).await;
        let j = submitted(m, &buyer, json!({"max_attempts": 1})).await;
        let grant = lease(m, &a).await.unwrap();
        assert_eq!(answer(m, &a, &grant, Err("trap")).await.0, StatusCode::OK);
        // One failed run: no other trusted key takes it, and a farmed key's
        // word failed nothing.
        assert!(lease(m, &b).await.is_none());
        assert_eq!(unit_state(m, &buyer, &j["id"]).await, "queued");
        // The operator's host does, and its counted failure ends the unit.
        let grant = lease(m, &host).await.unwrap();
        assert_eq!(grant["job_id"], j["id"]);
        assert_eq!(
            answer(m, &host, &grant, Err("trap")).await.0,
            StatusCode::OK
        );
        assert_eq!(unit_state(m, &buyer, &j["id"]).await, "failed");
        m.assert_invariants().await;
    }
);

both_dbs!(
    a_failed_unit_waits_out_its_backoff,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 10_000).await;
        let (first, second) = (provider(m, 10).await, provider(m, 10).await);
        let j = submitted(m, &buyer, json!({"backoff_ms": 20_000})).await;
        // A fresh key's failure counts for nothing and starts no backoff.
        let fresh = untrusted_provider(m, 10).await;
        let grant = lease(m, &fresh).await.unwrap();
        assert_eq!(
            answer(m, &fresh, &grant, Err("trap")).await.0,
            StatusCode::OK
        );
        let grant = lease(m, &first).await.unwrap();
        assert_eq!(
            answer(m, &first, &grant, Err("trap")).await.0,
            StatusCode::OK
        );
        assert!(lease(m, &second).await.is_none(), "within its backoff");
        m.state.advance_clock(Duration::from_secs(21));
        heartbeat(m, &second).await;
        let again = lease(m, &second).await.expect("past its backoff");
        assert_eq!(again["job_id"], j["id"]);
    }
);
