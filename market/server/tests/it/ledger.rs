//! The ledger through the API: escrow, idempotency, overdraft, concurrency.

use crate::*;
use agora_market::ledger::Op;
use std::time::Duration;

fn transfer(id: &str, debit: &Keypair, credit: &Keypair, amount: u64) -> Value {
    json!({"id": id, "debit": debit.id(), "credit": credit.id(), "amount": amount, "kind": "single"})
}

both_dbs!(
    holds_post_partially_and_release_the_rest,
    async |m: &TestMarket| {
        let (buyer, provider) = (Keypair::generate(), Keypair::generate());
        m.fund(&buyer, 1000).await;
        let hold = json!({"id": "h1", "debit": buyer.id(), "credit": provider.id(), "amount": 600, "kind": "hold", "timeout_ms": 60000});
        let (status, body) = m
            .call("POST", "/api/v1/transfers", Some(&hold), Some(&buyer))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["state"], "pending");
        assert_eq!(m.available(&buyer).await, 400);
        m.assert_invariants().await;

        let post = json!({"id": "p1", "kind": "post", "pending_id": "h1", "amount": 250});
        let (status, body) = m
            .call("POST", "/api/v1/transfers", Some(&post), Some(&buyer))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(m.available(&buyer).await, 750, "250 paid, 350 released");
        assert_eq!(m.available(&provider).await, 250);
        m.assert_invariants().await;

        // Resolved at most once.
        let void = json!({"id": "v1", "kind": "void", "pending_id": "h1"});
        let (status, body) = m
            .call("POST", "/api/v1/transfers", Some(&void), Some(&buyer))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "not_pending");
        assert_eq!(m.available(&buyer).await, 750);
        m.assert_invariants().await;
    }
);

both_dbs!(holds_void_and_expire, async |m: &TestMarket| {
    let (buyer, provider) = (Keypair::generate(), Keypair::generate());
    m.fund(&buyer, 100).await;
    for (id, timeout) in [("a", 60_000), ("b", 1_000)] {
        let hold = json!({"id": id, "debit": buyer.id(), "credit": provider.id(), "amount": 40, "kind": "hold", "timeout_ms": timeout});
        assert_eq!(
            m.call("POST", "/api/v1/transfers", Some(&hold), Some(&buyer))
                .await
                .0,
            StatusCode::OK
        );
    }
    assert_eq!(m.available(&buyer).await, 20);
    let void = json!({"id": "va", "kind": "void", "pending_id": "a"});
    assert_eq!(
        m.call("POST", "/api/v1/transfers", Some(&void), Some(&buyer))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(m.available(&buyer).await, 60);

    m.state.advance_clock(Duration::from_secs(2));
    assert_eq!(m.state.sweep().await.unwrap(), 1, "hold b expired");
    assert_eq!(m.available(&buyer).await, 100);
    assert_eq!(m.available(&provider).await, 0);
    let post = json!({"id": "pb", "kind": "post", "pending_id": "b"});
    let (status, body) = m
        .call("POST", "/api/v1/transfers", Some(&post), Some(&buyer))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "an expired hold cannot be posted: {body}"
    );
    m.assert_invariants().await;
});

both_dbs!(
    overdraft_is_refused_and_changes_nothing,
    async |m: &TestMarket| {
        let (a, b) = (Keypair::generate(), Keypair::generate());
        m.fund(&a, 50).await;
        let (status, body) = m
            .call(
                "POST",
                "/api/v1/transfers",
                Some(&transfer("t1", &a, &b, 51)),
                Some(&a),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"]["code"], "insufficient_funds");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("50 available"),
            "{body}"
        );
        assert_eq!(m.available(&a).await, 50);
        let (status, _) = m
            .call(
                "POST",
                "/api/v1/transfers",
                Some(&transfer("t2", &a, &b, 0)),
                Some(&a),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "zero amounts are refused");
        m.assert_invariants().await;
    }
);

both_dbs!(a_transfer_id_applies_once, async |m: &TestMarket| {
    let (a, b) = (Keypair::generate(), Keypair::generate());
    m.fund(&a, 100).await;
    let first = m
        .call(
            "POST",
            "/api/v1/transfers",
            Some(&transfer("same", &a, &b, 30)),
            Some(&a),
        )
        .await;
    let retry = m
        .call(
            "POST",
            "/api/v1/transfers",
            Some(&transfer("same", &a, &b, 30)),
            Some(&a),
        )
        .await;
    assert_eq!(first, retry, "a retry returns the first outcome");
    assert_eq!(m.available(&a).await, 70, "paid once");
    let (status, body) = m
        .call(
            "POST",
            "/api/v1/transfers",
            Some(&transfer("same", &a, &b, 31)),
            Some(&a),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "transfer_conflict");
    assert_eq!(m.available(&a).await, 70);
});

both_dbs!(
    an_idempotency_key_stores_the_first_response,
    async |m: &TestMarket| {
        let (a, b) = (Keypair::generate(), Keypair::generate());
        m.fund(&a, 100).await;
        let first = m
            .call_idem(
                "/api/v1/transfers",
                &transfer("i1", &a, &b, 10),
                &a,
                "key-1",
            )
            .await;
        let again = m
            .call_idem(
                "/api/v1/transfers",
                &transfer("i1", &a, &b, 10),
                &a,
                "key-1",
            )
            .await;
        assert_eq!(first.0, StatusCode::OK);
        assert_eq!(first, again);
        assert_eq!(m.available(&a).await, 90);
        let (status, body) = m
            .call_idem(
                "/api/v1/transfers",
                &transfer("i2", &a, &b, 10),
                &a,
                "key-1",
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["error"]["code"], "idempotency_mismatch");
        assert_eq!(m.available(&a).await, 90, "no second effect");
    }
);

both_dbs!(only_owners_and_the_operator_act, async |m: &TestMarket| {
    let (a, b, mallory) = (
        Keypair::generate(),
        Keypair::generate(),
        Keypair::generate(),
    );
    m.fund(&a, 100).await;
    let (status, _) = m
        .call(
            "POST",
            "/api/v1/transfers",
            Some(&transfer("steal", &a, &mallory, 10)),
            Some(&mallory),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let mint = json!({"id": "m", "account": mallory.id(), "amount": 1000});
    assert_eq!(
        m.call("POST", "/api/v1/mint", Some(&mint), Some(&mallory))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let (status, _) = m
        .call(
            "GET",
            &format!("/api/v1/accounts/{}", a.id()),
            None,
            Some(&mallory),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let hold = json!({"id": "h", "debit": a.id(), "credit": b.id(), "amount": 10, "kind": "hold", "timeout_ms": 60000});
    assert_eq!(
        m.call("POST", "/api/v1/transfers", Some(&hold), Some(&a))
            .await
            .0,
        StatusCode::OK
    );
    let post = json!({"id": "p", "kind": "post", "pending_id": "h"});
    assert_eq!(
        m.call("POST", "/api/v1/transfers", Some(&post), Some(&mallory))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(m.available(&a).await, 90);
    assert_eq!(m.available(&mallory).await, 0);
    m.assert_invariants().await;
});

both_dbs!(
    two_replicas_racing_holds_never_overdraw,
    async |m: &TestMarket| {
        let (buyer, seller) = (Keypair::generate(), Keypair::generate());
        m.fund(&buyer, 100).await;
        let replicas = [m.state.clone(), m.replica().await];
        let mut tasks = Vec::new();
        for i in 0..24 {
            let state = replicas[i % 2].clone();
            let (debit, credit) = (buyer.id().to_string(), seller.id().to_string());
            tasks.push(tokio::spawn(async move {
                let op = Op::Hold {
                    debit,
                    credit,
                    amount: 10,
                    timeout_ms: 60_000,
                };
                state
                    .ledger
                    .execute(&format!("race-{i}"), &op, state.now_ms())
                    .await
            }));
        }
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => won += 1,
                Err(agora_market::error::ApiError::InsufficientFunds { .. }) => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(won, 10, "exactly the balance was held");
        assert_eq!(m.available(&buyer).await, 0);
        m.assert_invariants().await;
    }
);

both_dbs!(
    posting_and_voiding_one_hold_at_once_resolves_it_once,
    async |m: &TestMarket| {
        let (buyer, seller) = (Keypair::generate(), Keypair::generate());
        m.fund(&buyer, 100).await;
        let hold = Op::Hold {
            debit: buyer.id().to_string(),
            credit: seller.id().to_string(),
            amount: 100,
            timeout_ms: 60_000,
        };
        m.state
            .ledger
            .execute("h", &hold, m.state.now_ms())
            .await
            .unwrap();
        let other = m.replica().await;
        let (post, void) = (
            Op::Post {
                pending_id: "h".into(),
                amount: None,
            },
            Op::Void {
                pending_id: "h".into(),
            },
        );
        let (a, b) = tokio::join!(
            m.state.ledger.execute("post", &post, m.state.now_ms()),
            other.ledger.execute("void", &void, other.now_ms()),
        );
        assert!(
            a.is_ok() != b.is_ok(),
            "exactly one of post and void wins: {a:?} {b:?}"
        );
        let seller_has = m.available(&seller).await;
        assert!(seller_has == 100 || seller_has == 0);
        assert_eq!(m.available(&buyer).await, 100 - seller_has);
        m.assert_invariants().await;
    }
);

both_dbs!(
    a_request_dropped_mid_transfer_is_all_or_nothing,
    async |m: &TestMarket| {
        let (a, b) = (Keypair::generate(), Keypair::generate());
        m.fund(&a, 1_000_000).await;
        let mut applied = 0u64;
        for i in 0..60u64 {
            let state = m.state.clone();
            let op = Op::Single {
                debit: a.id().to_string(),
                credit: b.id().to_string(),
                amount: 1 + i,
            };
            let id = format!("drop-{i}");
            // Cancel the request after a varying delay: mid-transaction for some.
            let cut = Duration::from_micros(50 * (i % 20));
            let _ = tokio::time::timeout(cut, state.ledger.execute(&id, &op, state.now_ms())).await;
            quiesce(&state).await;
            if let Some(t) = state.ledger.get(&id).await.unwrap() {
                assert_eq!(t.amount, 1 + i);
                applied += 1 + i;
            }
        }
        assert_eq!(
            m.available(&b).await,
            applied,
            "the payee got exactly the transfers that exist"
        );
        assert_eq!(m.available(&a).await, 1_000_000 - applied);
        m.assert_invariants().await;
    }
);

both_dbs!(history_is_paged_newest_first, async |m: &TestMarket| {
    let (a, b) = (Keypair::generate(), Keypair::generate());
    m.fund(&a, 100).await;
    for i in 0..5 {
        assert_eq!(
            m.call(
                "POST",
                "/api/v1/transfers",
                Some(&transfer(&format!("h{i}"), &a, &b, 1)),
                Some(&a)
            )
            .await
            .0,
            StatusCode::OK
        );
    }
    let (status, page) = m
        .call(
            "GET",
            &format!("/api/v1/accounts/{}/transfers?page=0&per_page=2", a.id()),
            None,
            Some(&a),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 6, "5 transfers and the mint");
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["items"][0]["id"], "h4");
    let (_, last) = m
        .call(
            "GET",
            &format!("/api/v1/accounts/{}/transfers?page=2&per_page=2", a.id()),
            None,
            Some(&a),
        )
        .await;
    assert_eq!(last["items"][1]["kind"], "mint");
});
