//! HTTP hygiene: signatures, replays, limits, errors, OpenAPI, metrics.

use crate::*;

fn mint_body(key: &Keypair) -> Vec<u8> {
    serde_json::to_vec(&json!({"id": "m1", "account": key.id(), "amount": 5})).unwrap()
}

both_dbs!(
    unsigned_stale_replayed_and_forged_requests_are_refused,
    async |m: &TestMarket| {
        let user = Keypair::generate();
        let body = mint_body(&user);
        let now = m.state.now_ms();
        let market = TEST_ORIGIN;

        let unsigned = Request::builder()
            .method("POST")
            .uri("/api/v1/mint")
            .body(Body::from(body.clone()))
            .unwrap();
        let (status, err) = send(&m.state, unsigned).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(err["error"]["code"], "unauthenticated");

        let stale = signed(
            market,
            "POST",
            "/api/v1/mint",
            &body,
            &m.operator,
            now - 10 * 60 * 1000,
        )
        .body(Body::from(body.clone()))
        .unwrap();
        let (status, err) = send(&m.state, stale).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("timestamp"),
            "{err}"
        );

        let forged_body =
            serde_json::to_vec(&json!({"id": "m1", "account": user.id(), "amount": 5000})).unwrap();
        let forged = signed(market, "POST", "/api/v1/mint", &body, &m.operator, now)
            .body(Body::from(forged_body))
            .unwrap();
        assert_eq!(send(&m.state, forged).await.0, StatusCode::UNAUTHORIZED);

        // The operator's request made for another market (a hostile one that
        // relays what its clients sign), replayed here: as signed, or with its
        // origin header rewritten to this market's.
        let (_, health) = m.call("GET", "/api/v1/health", None, None).await;
        assert_eq!(
            health["origins"],
            json!([market]),
            "the market says which origins it answers to"
        );
        let elsewhere = signed(
            "https://hostile.example",
            "POST",
            "/api/v1/mint",
            &body,
            &m.operator,
            now,
        );
        let (status, err) = send(&m.state, elsewhere.body(Body::from(body.clone())).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("https://hostile.example"),
            "says which market it was for: {err}"
        );
        let mut rewritten = signed(
            "https://hostile.example",
            "POST",
            "/api/v1/mint",
            &body,
            &m.operator,
            now,
        );
        rewritten
            .headers_mut()
            .unwrap()
            .insert(auth::HEADER_ORIGIN, market.parse().unwrap());
        assert_eq!(
            send(&m.state, rewritten.body(Body::from(body.clone())).unwrap())
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );

        let good = signed(market, "POST", "/api/v1/mint", &body, &m.operator, now);
        let headers = good.headers_ref().unwrap().clone();
        let (status, _) = send(&m.state, good.body(Body::from(body.clone())).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        let mut replay = Request::builder().method("POST").uri("/api/v1/mint");
        for (name, value) in headers.iter() {
            replay = replay.header(name, value);
        }
        let (status, err) = send(&m.state, replay.body(Body::from(body)).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("replayed"),
            "{err}"
        );
        assert_eq!(m.available(&user).await, 5, "minted once");
        // The six refusals wrote nothing (an anonymous flood costs no fsync)
        // and were counted; the one good request was audited.
        let audited: Vec<i64> = sqlx::query_scalar("SELECT status FROM audit")
            .fetch_all(&m.state.db.pool)
            .await
            .unwrap();
        assert_eq!(audited, [200], "only the accepted request is audited");
        let (_, metrics) = m.call("GET", "/metrics", None, None).await;
        assert!(
            metrics
                .as_str()
                .unwrap()
                .contains("agora_market_unauthenticated_requests_total 6"),
            "{metrics}"
        );
    }
);

both_dbs!(
    an_unsigned_or_stale_upload_is_refused_before_its_body_is_read,
    async |m: &TestMarket| {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        // A body that records whether the market ever read it.
        let upload = |read: Arc<AtomicBool>| {
            let chunk = futures_util::stream::once(async move {
                read.store(true, Ordering::SeqCst);
                Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b'x'; 1 << 20]))
            });
            Body::from_stream(chunk)
        };
        let path = "/api/v1/packages/big/versions";
        let market = TEST_ORIGIN;
        let stale_headers = signed(
            market,
            "POST",
            path,
            b"",
            &Keypair::generate(),
            m.state.now_ms() - 10 * 60 * 1000,
        );
        for (what, request) in [
            ("unsigned", Request::builder().method("POST").uri(path)),
            ("stale", stale_headers),
        ] {
            let read = Arc::new(AtomicBool::new(false));
            let (status, err) = send(&m.state, request.body(upload(read.clone())).unwrap()).await;
            assert_eq!(
                (status, err["error"]["code"].as_str()),
                (StatusCode::UNAUTHORIZED, Some("unauthenticated")),
                "{what}: {err}"
            );
            assert!(
                !read.load(Ordering::SeqCst),
                "{what}: the body was read before the refusal"
            );
        }
        // A well-formed, fresh signature gets its body read (and checked).
        let read = Arc::new(AtomicBool::new(false));
        let fresh = signed(
            market,
            "POST",
            path,
            b"",
            &Keypair::generate(),
            m.state.now_ms(),
        );
        let (status, _) = send(&m.state, fresh.body(upload(read.clone())).unwrap()).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "the body does not match its signature"
        );
        assert!(
            read.load(Ordering::SeqCst),
            "a fresh signature's body is read to check it"
        );
    }
);

both_dbs!(
    nonces_stored_responses_and_audit_records_are_kept_for_their_stated_time,
    async |m: &TestMarket| {
        let user = Keypair::generate();
        let mint = json!({"id": "kept", "account": user.id(), "amount": 5});
        assert_eq!(
            m.call_idem("/api/v1/mint", &mint, &m.operator, "idem-1")
                .await
                .0,
            StatusCode::OK
        );
        let count = |table: &'static str| async move {
            sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&m.state.db.pool)
                .await
                .unwrap()
        };
        let tables = ["nonces", "idempotency", "audit"];
        for table in tables {
            assert!(count(table).await > 0, "{table} holds the request");
        }
        // A day later the stored response is gone; the audit record stays.
        m.state.advance_clock(std::time::Duration::from_millis(
            agora_market::hygiene::IDEMPOTENCY_RETENTION_MS as u64 + 1,
        ));
        m.state.sweep().await.unwrap();
        assert_eq!((count("nonces").await, count("idempotency").await), (0, 0));
        assert!(
            count("audit").await > 0,
            "an audit record outlives a stored response"
        );
        m.state.advance_clock(std::time::Duration::from_millis(
            agora_market::hygiene::AUDIT_RETENTION_MS as u64,
        ));
        m.state.sweep().await.unwrap();
        for table in tables {
            assert_eq!(
                count(table).await,
                0,
                "{table} is pruned after its retention"
            );
        }
    }
);

both_dbs!(
    every_response_carries_the_security_headers,
    async |m: &TestMarket| {
        for (method, path) in [
            ("GET", "/api/v1/health"),
            ("GET", "/api/v1/jobs/nope"),
            ("POST", "/api/v1/mint"),
            ("GET", "/no/such/route"),
        ] {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .unwrap();
            let response = app(m.state.clone()).oneshot(request).await.unwrap();
            let headers = response.headers();
            assert_eq!(
                headers
                    .get("content-security-policy")
                    .map(|v| v.to_str().unwrap()),
                Some("frame-ancestors 'none'"),
                "{method} {path}"
            );
            assert_eq!(
                headers
                    .get("x-content-type-options")
                    .map(|v| v.to_str().unwrap()),
                Some("nosniff"),
                "{method} {path}"
            );
        }
    }
);

both_dbs!(oversized_bodies_get_a_json_413, async |m: &TestMarket| {
    let market = TEST_ORIGIN;
    let user = Keypair::generate();
    let huge = vec![b' '; agora_market::MAX_BODY_BYTES + 1];
    let request = signed(
        market,
        "POST",
        "/api/v1/transfers",
        &huge,
        &user,
        m.state.now_ms(),
    )
    .body(Body::from(huge))
    .unwrap();
    let (status, err) = send(&m.state, request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(err["error"]["code"], "payload_too_large");
});

both_dbs!(
    the_openapi_document_describes_every_endpoint,
    async |m: &TestMarket| {
        let (status, doc) = m.call("GET", "/api/openapi.json", None, None).await;
        assert_eq!(status, StatusCode::OK);
        let expected = [
            ("get", "/api/v1/health"),
            ("get", "/api/openapi.json"),
            ("get", "/metrics"),
            ("post", "/api/v1/transfers"),
            ("post", "/api/v1/mint"),
            ("get", "/api/v1/accounts/{account}"),
            ("get", "/api/v1/accounts/{account}/transfers"),
            ("get", "/api/v1/operator/invariants"),
            ("get", "/api/v1/packages"),
            ("get", "/api/v1/categories"),
            ("get", "/api/v1/packages/{name}"),
            ("post", "/api/v1/packages/{name}/versions"),
            ("get", "/api/v1/packages/{name}/log"),
            ("post", "/api/v1/packages/{name}/log"),
            (
                "get",
                "/api/v1/packages/{name}/versions/{version}/component",
            ),
            ("get", "/api/v1/providers"),
            ("post", "/api/v1/providers"),
            ("post", "/api/v1/providers/heartbeat"),
            ("get", "/api/v1/providers/{provider}/activity"),
            ("get", "/api/v1/providers/{provider}/telemetry"),
            ("post", "/api/v1/leases"),
            ("post", "/api/v1/leases/{lease}/result"),
            ("get", "/api/v1/jobs"),
            ("post", "/api/v1/jobs"),
            ("get", "/api/v1/jobs/{job}"),
            ("get", "/api/v1/jobs/{job}/units/{unit}/output"),
            ("get", "/api/v1/jobs/{job}/units/{unit}/outputs/{name}"),
            ("put", "/api/v1/leases/{lease}/outputs/{digest}"),
            ("get", "/api/v1/jobs/{job}/logs"),
            ("delete", "/api/v1/jobs/{job}/data"),
            ("post", "/api/v1/jobs/{job}/cancel"),
            ("get", "/api/v1/jobs/{job}/events"),
            ("get", "/api/v1/blobs/{digest}"),
            ("delete", "/api/v1/blobs/{digest}"),
            ("post", "/api/v1/uploads"),
            ("put", "/api/v1/uploads/{upload}/chunks/{index}"),
            ("post", "/api/v1/uploads/{upload}/complete"),
            ("delete", "/api/v1/uploads/{upload}"),
            ("get", "/api/v1/storage"),
            ("get", "/api/v1/browser/{digest}"),
            ("get", "/api/v1/browser/{digest}/{file}"),
            ("post", "/api/v1/operator/canaries"),
            ("post", "/api/v1/operator/vouch"),
            ("get", "/api/v1/stats"),
        ];
        for (method, path) in expected {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} is not in the OpenAPI document"
            );
        }
        let distinct_paths: std::collections::BTreeSet<&str> =
            expected.iter().map(|(_, p)| *p).collect();
        assert_eq!(
            doc["paths"].as_object().unwrap().len(),
            distinct_paths.len(),
            "no undocumented extras or missing ones"
        );
        // The router serves what the document lists.
        for (method, path) in expected {
            let concrete = [
                "account", "name", "lease", "job", "unit", "digest", "file", "upload", "index",
            ]
            .iter()
            .fold(path.replace("{version}", "1.0.0"), |p, param| {
                p.replace(&format!("{{{param}}}"), "0")
            });
            let (status, body) = m.call(&method.to_uppercase(), &concrete, None, None).await;
            let unrouted = status == StatusCode::METHOD_NOT_ALLOWED
                || (status == StatusCode::NOT_FOUND && !body.is_object());
            assert!(
                !unrouted,
                "{method} {path} is documented but not routed ({status})"
            );
        }
    }
);

both_dbs!(metrics_count_requests, async |m: &TestMarket| {
    m.call("GET", "/api/v1/health", None, None).await;
    let response = app(m.state.clone())
        .oneshot(
            Request::builder()
                .uri("/metrics")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let text = String::from_utf8(
        axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(text.contains("agora_market_http_requests_total{method=\"GET\",route=\"/api/v1/health\",status=\"200\"}"), "{text}");
});

#[tokio::test]
async fn requests_past_the_rate_limit_get_429() {
    let m = TestMarket::sqlite().await;
    let state = agora_market::AppState::new(
        m.state.db.clone(),
        agora_market::Config {
            rate_per_second: 2,
            public_origins: vec![TEST_ORIGIN.into()],
            ..agora_market::Config::new(m.operator.id().clone())
        },
    );
    let user = Keypair::generate();
    let mut statuses = Vec::new();
    for i in 0..8 {
        let body = serde_json::to_vec(&json!({"id": format!("r{i}"), "debit": user.id(), "credit": m.operator.id(), "amount": 1, "kind": "single"})).unwrap();
        statuses.push(
            call_on(
                &state,
                "POST",
                "/api/v1/transfers",
                Some(body),
                Some(&user),
                None,
            )
            .await
            .0,
        );
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert_eq!(
        statuses[0],
        StatusCode::CONFLICT,
        "the first requests pass the limiter (and fail on funds)"
    );
}

/// One address floods (anonymous reads, as fresh keys would): past its
/// rate it is refused before anything runs, while another address, an IPv6
/// neighbour outside its /64 and loopback are served.
#[tokio::test]
async fn a_flood_from_one_address_is_refused_while_others_are_served() {
    let m = TestMarket::sqlite().await;
    let config = Config {
        rate_per_second: 10_000,
        peer_rate_per_second: 5,
        ..Config::new(m.operator.id().clone())
    };
    let state = AppState::new(m.state.db.clone(), config);
    let from = |address: String| {
        let mut request = Request::builder()
            .uri("/api/v1/stats")
            .body(Body::empty())
            .unwrap();
        let peer = std::net::SocketAddr::new(address.parse().unwrap(), 40_000);
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        request
    };
    let mut flood = Vec::new();
    for _ in 0..40 {
        flood.push(send(&state, from("192.0.2.7".into())).await.0);
    }
    assert_eq!(
        flood[0],
        StatusCode::OK,
        "within its rate an address is served"
    );
    assert!(flood.contains(&StatusCode::TOO_MANY_REQUESTS), "{flood:?}");
    assert_eq!(
        send(&state, from("192.0.2.8".into())).await.0,
        StatusCode::OK,
        "another address, meanwhile"
    );
    assert_eq!(
        send(&state, from("127.0.0.1".into())).await.0,
        StatusCode::OK,
        "loopback (the web pages' own reads)"
    );
    // Every address of one /64 shares one rate; the next /64 has its own.
    let mut v6 = Vec::new();
    for i in 0..40 {
        v6.push(send(&state, from(format!("2001:db8::{i:x}"))).await.0);
    }
    assert!(v6.contains(&StatusCode::TOO_MANY_REQUESTS), "{v6:?}");
    assert_eq!(
        send(&state, from("2001:db8:0:1::1".into())).await.0,
        StatusCode::OK
    );
    let metrics = app(state.clone())
        .oneshot(
            Request::builder()
                .uri("/metrics")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let text = String::from_utf8(
        axum::body::to_bytes(metrics.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(
        !text.contains("agora_market_peer_limited_requests_total 0"),
        "refusals are counted: {text}"
    );
}

// A buyer (or a flock of keys) opens event streams without end: each polls
// the database, so past its share a key is refused, and a stream whose
// client went away gives its share back.
both_dbs!(event_streams_are_capped_per_key, async |m: &TestMarket| {
    use crate::jobs::{publish, submit};
    publish(m, "streams").await;
    let buyer = Keypair::generate();
    m.fund(&buyer, 1_000_000).await;
    let job = submit(m, &buyer, "streams", &[b"x"], 1_000, 1).await;
    let path = format!("/api/v1/jobs/{job}/events");
    let open = |key: &Keypair| {
        let request = signed(TEST_ORIGIN, "GET", &path, b"", key, m.state.now_ms())
            .body(Body::empty())
            .unwrap();
        app(m.state.clone()).oneshot(request)
    };
    let mut held = Vec::new();
    for _ in 0..agora_market::hygiene::MAX_STREAMS_PER_KEY {
        let stream = open(&buyer).await.unwrap();
        assert_eq!(stream.status(), StatusCode::OK);
        held.push(stream);
    }
    assert_eq!(
        open(&buyer).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS,
        "past its share"
    );
    assert_eq!(
        m.state.feeds.watched(),
        1,
        "all streams of one job share one poller"
    );
    drop(held.pop());
    assert_eq!(
        open(&buyer).await.unwrap().status(),
        StatusCode::OK,
        "a closed stream gives its share back"
    );
    // Each stream gets the job from the one poller; with every stream
    // gone, so is the poller.
    let mut bodies: Vec<_> = held
        .into_iter()
        .map(|stream| stream.into_body().into_data_stream())
        .collect();
    for body in bodies.iter_mut() {
        let first = futures_util::StreamExt::next(body).await.unwrap().unwrap();
        assert!(
            String::from_utf8_lossy(&first).contains("event: job"),
            "{first:?}"
        );
    }
    drop(bodies);
    assert_eq!(m.state.feeds.watched(), 0);
});

// On PostgreSQL a job's change wakes its poller through a notice: with the
// fallback read an hour away, a stream still learns at once that the job
// is done (a poller without notices would sleep the hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_change_wakes_its_stream_through_a_postgresql_notice() {
    use crate::jobs::{answer, lease, provider, publish, submit};
    use agora_market::feeds::Feeds;
    use std::time::Duration;
    let m = TestMarket::postgres().await;
    publish(&m, "noticed").await;
    let buyer = Keypair::generate();
    m.fund(&buyer, 1_000).await;
    let job = submit(&m, &buyer, "noticed", &[b"x"], 600, 1).await;
    let feeds = Feeds::with_fallback(Duration::from_secs(3600));
    let listener = feeds
        .listen(&m.state.db)
        .await
        .unwrap()
        .expect("a listener on PostgreSQL");
    let feed = feeds.watch(&m.state.jobs, &job);
    let mut snapshots = feed.subscribe();
    let first = tokio::time::timeout(
        Duration::from_secs(30),
        snapshots.wait_for(|s| s.info.is_some()),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    assert_eq!(
        first.info.unwrap().state,
        agora_wire::api::JobState::Running
    );
    let p = provider(&m, 1).await;
    let grant = lease(&m, &p).await.unwrap();
    assert_eq!(answer(&m, &p, &grant, Ok(b"y")).await.0, StatusCode::OK);
    let done = tokio::time::timeout(
        Duration::from_secs(30),
        snapshots.wait_for(|s| {
            s.info
                .as_ref()
                .is_some_and(|i| i.state != agora_wire::api::JobState::Running)
        }),
    )
    .await
    .expect("the notice woke the poller long before its fallback")
    .unwrap()
    .clone();
    assert_eq!(done.info.unwrap().state, agora_wire::api::JobState::Done);
    listener.abort();
    drop(feed);
    m.cleanup().await;
}
