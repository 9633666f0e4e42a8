//! The package registry: publishing real components, and every way to cheat.

use crate::*;
use agora_wire::log::{LogAction, LogEntry, LogError, verify_log};
use base64::Engine as _;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A publish request for `bytes` as `name` `version`, chained to `prev`.
fn publish_body(
    key: &Keypair,
    name: &str,
    version: &str,
    bytes: &[u8],
    prev: Option<&LogEntry>,
) -> Value {
    let action = LogAction::Release {
        version: version.into(),
        digest: agora_wire::digest_hex(bytes),
        size: bytes.len() as u64,
    };
    let hash = prev.map(|p| (p.seq, p.hash()));
    let entry = LogEntry::new_signed(
        key,
        name,
        hash.as_ref().map(|(s, h)| (*s, h.as_str())),
        action,
    );
    json!({"description": format!("{name}, the example"), "category": "compute", "tags": ["gpu", "example"],
           "component_base64": b64(bytes), "entry": entry})
}

async fn log_of(m: &TestMarket, name: &str) -> Vec<LogEntry> {
    let (status, log) = m
        .call("GET", &format!("/api/v1/packages/{name}/log"), None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    serde_json::from_value(log).unwrap()
}

both_dbs!(
    publish_search_info_download_and_yank,
    async |m: &TestMarket| {
        let author = Keypair::generate();
        let saxpy = guest("saxpy");
        let (status, version) = m
            .call(
                "POST",
                "/api/v1/packages/saxpy/versions",
                Some(&publish_body(&author, "saxpy", "1.0.0", &saxpy, None)),
                Some(&author),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{version}");
        assert_eq!(version["digest"], agora_wire::digest_hex(&saxpy));
        assert!(
            version["exports"]
                .as_array()
                .unwrap()
                .contains(&json!("run"))
        );
        assert!(
            version["imports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i.as_str().unwrap().starts_with("agora:compute/gpu"))
        );

        let log = log_of(m, "saxpy").await;
        let (status, _) = m
            .call(
                "POST",
                "/api/v1/packages/saxpy/versions",
                Some(&publish_body(&author, "saxpy", "1.1.0", &saxpy, log.last())),
                Some(&author),
            )
            .await;
        assert_eq!(status, StatusCode::OK);

        let (_, found) = m
            .call("GET", "/api/v1/packages?q=GPU&sort=downloads", None, None)
            .await;
        assert_eq!(found["total"], 1, "{found}");
        assert_eq!(found["items"][0]["latest"], "1.1.0");
        let (_, none) = m
            .call("GET", "/api/v1/packages?q=mandelbrot", None, None)
            .await;
        assert_eq!(none["total"], 0);

        let response = app(m.state.clone())
            .oneshot(
                Request::builder()
                    .uri("/api/v1/packages/saxpy/versions/1.0.0/component")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            response.headers()["agora-digest"],
            agora_wire::digest_hex(&saxpy).as_str()
        );
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 26)
            .await
            .unwrap();
        assert_eq!(bytes.as_ref(), saxpy.as_slice());
        let (_, info) = m.call("GET", "/api/v1/packages/saxpy", None, None).await;
        assert_eq!(info["downloads"], 1);
        assert_eq!(info["versions"].as_array().unwrap().len(), 2);
        assert_eq!(info["owner"], author.id().as_str());

        let log = log_of(m, "saxpy").await;
        let prev = log.last().unwrap();
        let yank = LogEntry::new_signed(
            &author,
            "saxpy",
            Some((prev.seq, &prev.hash())),
            LogAction::Yank {
                version: "1.1.0".into(),
            },
        );
        let (status, body) = m
            .call(
                "POST",
                "/api/v1/packages/saxpy/log",
                Some(&json!({"entry": yank})),
                Some(&author),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, info) = m.call("GET", "/api/v1/packages/saxpy", None, None).await;
        assert_eq!(
            info["latest"], "1.0.0",
            "a yanked version is not the latest"
        );
        let state = verify_log(&log_of(m, "saxpy").await, None).unwrap();
        assert!(state.releases["1.1.0"].yanked);
    }
);

both_dbs!(
    versions_are_immutable_and_names_are_owned,
    async |m: &TestMarket| {
        let (author, other) = (Keypair::generate(), Keypair::generate());
        let (saxpy, matmul) = (guest("saxpy"), guest("matmul"));
        assert_eq!(
            m.call(
                "POST",
                "/api/v1/packages/kernels/versions",
                Some(&publish_body(&author, "kernels", "1.0.0", &saxpy, None)),
                Some(&author)
            )
            .await
            .0,
            StatusCode::OK
        );
        let log = log_of(m, "kernels").await;

        let (status, body) = m
            .call(
                "POST",
                "/api/v1/packages/kernels/versions",
                Some(&publish_body(
                    &author,
                    "kernels",
                    "1.0.0",
                    &matmul,
                    log.last(),
                )),
                Some(&author),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "version_exists");

        let (status, body) = m
            .call(
                "POST",
                "/api/v1/packages/kernels/versions",
                Some(&publish_body(
                    &other,
                    "kernels",
                    "2.0.0",
                    &matmul,
                    log.last(),
                )),
                Some(&other),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"]["code"], "name_taken");

        let (_, info) = m.call("GET", "/api/v1/packages/kernels", None, None).await;
        assert_eq!(info["versions"].as_array().unwrap().len(), 1);
        assert_eq!(
            info["versions"][0]["digest"],
            agora_wire::digest_hex(&saxpy),
            "1.0.0 still holds the first bytes"
        );
    }
);

both_dbs!(
    tampered_or_wrongly_signed_packages_are_refused,
    async |m: &TestMarket| {
        let (author, other) = (Keypair::generate(), Keypair::generate());
        let saxpy = guest("saxpy");

        let mut tampered = publish_body(&author, "tamper", "1.0.0", &saxpy, None);
        let mut bytes = saxpy.clone();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        tampered["component_base64"] = json!(b64(&bytes));
        let (status, body) = m
            .call(
                "POST",
                "/api/v1/packages/tamper/versions",
                Some(&tampered),
                Some(&author),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["code"], "bad_package");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("digest")
        );

        // Signed by another key than the request's.
        let by_other = publish_body(&other, "tamper", "1.0.0", &saxpy, None);
        assert_eq!(
            m.call(
                "POST",
                "/api/v1/packages/tamper/versions",
                Some(&by_other),
                Some(&author)
            )
            .await
            .0,
            StatusCode::FORBIDDEN
        );

        // A signature that does not verify (bytes of another signature).
        let mut bad_sig = publish_body(&author, "tamper", "1.0.0", &saxpy, None);
        bad_sig["entry"]["signature"] = json!(other.sign(b"something else"));
        let (status, body) = m
            .call(
                "POST",
                "/api/v1/packages/tamper/versions",
                Some(&bad_sig),
                Some(&author),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["code"], "bad_log");

        let (status, _) = m.call("GET", "/api/v1/packages/tamper", None, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored");
    }
);

both_dbs!(
    only_agora_job_components_are_accepted,
    async |m: &TestMarket| {
        let author = Keypair::generate();
        let core_module = wat::parse_str("(module)").unwrap();
        let no_run = wat::parse_str("(component)").unwrap();
        for (name, bytes, why) in [
            ("junk", b"hello".to_vec(), "not a WebAssembly component"),
            ("core", core_module, "not a WebAssembly component"),
            ("norun", no_run, "does not export `run`"),
        ] {
            let (status, body) = m
                .call(
                    "POST",
                    &format!("/api/v1/packages/{name}/versions"),
                    Some(&publish_body(&author, name, "1.0.0", &bytes, None)),
                    Some(&author),
                )
                .await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {body}");
            assert!(
                body["error"]["message"].as_str().unwrap().contains(why),
                "{name}: {body}"
            );
        }
    }
);

both_dbs!(an_oversized_upload_is_413, async |m: &TestMarket| {
    let author = Keypair::generate();
    let huge = vec![b'A'; agora_market::registry::MAX_PUBLISH_BODY_BYTES + 1];
    let (status, body) = call_on(
        &m.state,
        "POST",
        "/api/v1/packages/huge/versions",
        Some(huge),
        Some(&author),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
});

both_dbs!(
    a_client_detects_a_rollback_and_a_key_rotation_is_honoured,
    async |m: &TestMarket| {
        let (old, new) = (Keypair::generate(), Keypair::generate());
        let saxpy = guest("saxpy");
        assert_eq!(
            m.call(
                "POST",
                "/api/v1/packages/rot/versions",
                Some(&publish_body(&old, "rot", "1.0.0", &saxpy, None)),
                Some(&old)
            )
            .await
            .0,
            StatusCode::OK
        );
        let log = log_of(m, "rot").await;
        let prev = log.last().unwrap();
        let rotate = LogEntry::new_signed(
            &old,
            "rot",
            Some((prev.seq, &prev.hash())),
            LogAction::RotateKey {
                new_key: new.id().clone(),
            },
        );
        assert_eq!(
            m.call(
                "POST",
                "/api/v1/packages/rot/log",
                Some(&json!({"entry": rotate})),
                Some(&old)
            )
            .await
            .0,
            StatusCode::OK
        );
        let log = log_of(m, "rot").await;
        // The old key can no longer publish; the new one can.
        assert_eq!(
            m.call(
                "POST",
                "/api/v1/packages/rot/versions",
                Some(&publish_body(&old, "rot", "2.0.0", &saxpy, log.last())),
                Some(&old)
            )
            .await
            .0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            m.call(
                "POST",
                "/api/v1/packages/rot/versions",
                Some(&publish_body(&new, "rot", "2.0.0", &saxpy, log.last())),
                Some(&new)
            )
            .await
            .0,
            StatusCode::OK
        );

        let log = log_of(m, "rot").await;
        let head = verify_log(&log, None).unwrap();
        assert_eq!(head.owner, *new.id());
        // A server (or a mirror) serving the older log to this client is caught.
        let known = (head.head_seq, head.head_hash.as_str());
        assert_eq!(
            verify_log(&log[..2], Some(known)),
            Err(LogError::Rollback { known: 2, got: 1 })
        );
    }
);

both_dbs!(
    a_browser_capable_component_gets_a_bundle_traceable_to_its_digest,
    async |m: &TestMarket| {
        let author = Keypair::generate();
        let mandelbrot = guest("mandelbrot");
        let digest = agora_wire::digest_hex(&mandelbrot);
        let (status, version) = m
            .call(
                "POST",
                "/api/v1/packages/mandelbrot/versions",
                Some(&publish_body(
                    &author,
                    "mandelbrot",
                    "1.0.0",
                    &mandelbrot,
                    None,
                )),
                Some(&author),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{version}");
        assert_eq!(version["browser"], true, "{version}");
        let (_, info) = m
            .call("GET", "/api/v1/packages/mandelbrot", None, None)
            .await;
        assert_eq!(info["versions"][0]["browser"], true);

        let (status, manifest) = m
            .call("GET", &format!("/api/v1/browser/{digest}"), None, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{manifest}");
        let bundle: agora_wire::api::BrowserBundle = serde_json::from_value(manifest).unwrap();
        assert_eq!(bundle.component_digest, digest);
        assert_eq!(bundle.entry, "job.js");
        assert!(bundle.generator.contains("js-component-bindgen"));
        assert!(
            bundle
                .suspending_imports
                .iter()
                .any(|i| i.ends_with("#[method]buffer.read")),
            "{:?}",
            bundle.suspending_imports
        );
        // Every file is served as the manifest says, content-addressed.
        for file in &bundle.files {
            let response = app(m.state.clone())
                .oneshot(
                    Request::builder()
                        .uri(format!("/api/v1/browser/{digest}/{}", file.name))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let content_type = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_string();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 26)
                .await
                .unwrap();
            assert_eq!(agora_wire::digest_hex(&bytes), file.digest, "{}", file.name);
            assert_eq!(bytes.len() as u64, file.size);
            if file.name.ends_with(".wasm") {
                assert_eq!(content_type, "application/wasm");
                assert_eq!(&bytes[..4], b"\0asm", "{} is a core module", file.name);
            } else {
                assert!(
                    content_type.starts_with("text/javascript"),
                    "{content_type}"
                );
                assert!(
                    String::from_utf8_lossy(&bytes).contains("export function instantiate"),
                    "{}",
                    file.name
                );
            }
        }
        let (status, _) = m
            .call(
                "GET",
                &format!("/api/v1/browser/{digest}/../../secrets"),
                None,
                None,
            )
            .await;
        assert_ne!(status, StatusCode::OK);
        let (status, _) = m
            .call("GET", "/api/v1/browser/0000/job.js", None, None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
);

#[test]
fn a_component_using_a_feature_hosts_lack_is_refused_at_publish() {
    // The same components the host's tests refuse before compiling.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../host/tests/wat");
    for name in ["gc-types", "function-subtypes", "threads", "shared-memory"] {
        let bytes = wat::parse_file(dir.join(format!("{name}.wat"))).expect("valid component text");
        let error = agora_market::registry::inspect(&bytes).expect_err(name);
        assert!(
            error.to_string().contains("feature hosts do not enable"),
            "{name}: {error}"
        );
    }
    // Within the set: SIMD, as the examples are built.
    agora_market::registry::inspect(&guest("saxpy"))
        .expect("saxpy uses only features hosts enable");
}

// A hostile publisher sends megabytes that take seconds to check to a name
// it does not own, or as a version that exists: the cheap refusals come
// first, before any of the heavy work (which would have refused the bytes
// as "not a component").
both_dbs!(
    a_publish_that_cannot_land_is_refused_before_its_component_is_checked,
    async |m: &TestMarket| {
        let (owner, squatter) = (Keypair::generate(), Keypair::generate());
        let saxpy = guest("saxpy");
        assert_eq!(
            m.call(
                "POST",
                "/api/v1/packages/taken/versions",
                Some(&publish_body(&owner, "taken", "1.0.0", &saxpy, None)),
                Some(&owner)
            )
            .await
            .0,
            StatusCode::OK
        );
        let junk = vec![7u8; 4 << 20];
        let (status, body) = m
            .call(
                "POST",
                "/api/v1/packages/taken/versions",
                Some(&publish_body(&squatter, "taken", "2.0.0", &junk, None)),
                Some(&squatter),
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("name_taken")),
            "{body}"
        );
        let log = log_of(m, "taken").await;
        let (status, body) = m
            .call(
                "POST",
                "/api/v1/packages/taken/versions",
                Some(&publish_body(&owner, "taken", "1.0.0", &junk, log.last())),
                Some(&owner),
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("version_exists")),
            "{body}"
        );
    }
);

// One key publishes version after version, or gigabytes: past its daily
// quota it is refused by the named limit, another key is not held back,
// and a day later the key may publish again.
both_dbs!(
    a_key_publishes_within_its_daily_quotas,
    async |m: &TestMarket| {
        use agora_market::registry::{
            MAX_PUBLISH_BYTES_PER_KEY_PER_DAY, MAX_VERSIONS_PER_KEY_PER_DAY,
        };
        let (flooder, other) = (Keypair::generate(), Keypair::generate());
        let saxpy = guest("saxpy");
        let publish = async |key: &Keypair, name: &str, version: &str| {
            let log = match m
                .call("GET", &format!("/api/v1/packages/{name}/log"), None, None)
                .await
            {
                (StatusCode::OK, log) => serde_json::from_value::<Vec<LogEntry>>(log).unwrap(),
                _ => Vec::new(),
            };
            m.call(
                "POST",
                &format!("/api/v1/packages/{name}/versions"),
                Some(&publish_body(key, name, version, &saxpy, log.last())),
                Some(key),
            )
            .await
        };
        assert_eq!(publish(&flooder, "flood", "1.0.0").await.0, StatusCode::OK);
        // The rest of the day's versions, as if published (each publish is
        // tested above; this one counts).
        for i in 1..MAX_VERSIONS_PER_KEY_PER_DAY {
            sqlx::query("INSERT INTO versions (name, version, digest, size, yanked, published_at_ms, imports, exports, publisher) VALUES ('flood', $1, 'd', 1, 0, $2, '[]', '[]', $3)")
            .bind(format!("0.0.{i}"))
            .bind(m.state.now_ms())
            .bind(flooder.id().as_str())
            .execute(&m.state.db.pool)
            .await
            .unwrap();
        }
        let (status, body) = publish(&flooder, "flood", "1.0.1").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("MAX_VERSIONS_PER_KEY_PER_DAY"),
            "{body}"
        );
        assert_eq!(
            publish(&other, "other", "1.0.0").await.0,
            StatusCode::OK,
            "another key publishes"
        );
        sqlx::query("UPDATE versions SET size = $1 WHERE publisher = $2 AND version = '1.0.0'")
            .bind((MAX_PUBLISH_BYTES_PER_KEY_PER_DAY - saxpy.len() as u64 + 1) as i64)
            .bind(other.id().as_str())
            .execute(&m.state.db.pool)
            .await
            .unwrap();
        let (status, body) = publish(&other, "other", "1.0.1").await;
        assert!(
            status == StatusCode::BAD_REQUEST
                && body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("MAX_PUBLISH_BYTES_PER_KEY_PER_DAY"),
            "{body}"
        );
        m.state
            .advance_clock(std::time::Duration::from_secs(24 * 3600 + 1));
        assert_eq!(
            publish(&flooder, "flood", "1.0.1").await.0,
            StatusCode::OK,
            "a day later"
        );
        assert_eq!(
            publish(&other, "other", "1.0.1").await.0,
            StatusCode::OK,
            "a day later"
        );
    }
);

// Downloads answer what a client that resumes or caches asks: one byte
// range (206), a range past the end (416), the digest as a strong ETag and
// 304 when the client has it already.
both_dbs!(
    downloads_answer_ranges_and_validators,
    async |m: &TestMarket| {
        let author = Keypair::generate();
        let saxpy = guest("saxpy");
        assert_eq!(
            m.call(
                "POST",
                "/api/v1/packages/saxpy/versions",
                Some(&publish_body(&author, "saxpy", "1.0.0", &saxpy, None)),
                Some(&author)
            )
            .await
            .0,
            StatusCode::OK
        );
        let get = async |headers: &[(&str, &str)]| {
            let mut request =
                Request::builder().uri("/api/v1/packages/saxpy/versions/1.0.0/component");
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let response = app(m.state.clone())
                .oneshot(request.body(Body::empty()).unwrap())
                .await
                .unwrap();
            let (status, headers) = (response.status(), response.headers().clone());
            (
                status,
                headers,
                axum::body::to_bytes(response.into_body(), 1 << 26)
                    .await
                    .unwrap(),
            )
        };
        let (status, headers, whole) = get(&[]).await;
        assert_eq!((status, whole.as_ref()), (StatusCode::OK, saxpy.as_slice()));
        let etag = format!("\"{}\"", agora_wire::digest_hex(&saxpy));
        assert_eq!(
            (
                headers["etag"].to_str().unwrap(),
                headers["accept-ranges"].to_str().unwrap()
            ),
            (etag.as_str(), "bytes")
        );
        assert_eq!(
            headers["content-length"].to_str().unwrap(),
            saxpy.len().to_string()
        );
        let (status, headers, part) = get(&[("range", "bytes=10-19")]).await;
        assert_eq!(
            (status, part.as_ref()),
            (StatusCode::PARTIAL_CONTENT, &saxpy[10..20])
        );
        assert_eq!(
            headers["content-range"].to_str().unwrap(),
            format!("bytes 10-19/{}", saxpy.len())
        );
        let (status, _, tail) = get(&[("range", "bytes=-5")]).await;
        assert_eq!(
            (status, tail.as_ref()),
            (StatusCode::PARTIAL_CONTENT, &saxpy[saxpy.len() - 5..])
        );
        let past = format!("bytes={}-", saxpy.len());
        let (status, headers, _) = get(&[("range", &past)]).await;
        assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(
            headers["content-range"].to_str().unwrap(),
            format!("bytes */{}", saxpy.len())
        );
        let (status, _, nothing) = get(&[("if-none-match", &etag)]).await;
        assert_eq!((status, nothing.len()), (StatusCode::NOT_MODIFIED, 0));
        let (status, _, whole) = get(&[("range", "bytes=0-1, 5-6")]).await;
        assert_eq!(
            (status, whole.len()),
            (StatusCode::OK, saxpy.len()),
            "a multi-part range gets the whole blob"
        );
        let longer = format!("bytes=-{}", saxpy.len() + 10);
        let (status, _, whole) = get(&[("range", &longer)]).await;
        assert_eq!(
            (status, whole.len()),
            (StatusCode::OK, saxpy.len()),
            "a suffix longer than the blob is the whole blob"
        );
        // An empty output asked for by range: the whole (empty) blob, not a
        // dropped connection.
        let buyer = Keypair::generate();
        m.fund(&buyer, 1_000).await;
        let job = crate::jobs::submit(m, &buyer, "saxpy", &[b"x"], 600, 1).await;
        let p = crate::jobs::provider(m, 1).await;
        let grant = crate::jobs::lease(m, &p).await.unwrap();
        assert_eq!(
            crate::jobs::answer(m, &p, &grant, Ok(b"")).await.0,
            StatusCode::OK
        );
        let path = format!("/api/v1/jobs/{job}/units/0/output");
        let mut request = signed(TEST_ORIGIN, "GET", &path, b"", &buyer, m.state.now_ms())
            .header("range", "bytes=0-0");
        request = request.header("if-none-match", "\"not this\"");
        let response = app(m.state.clone())
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["cache-control"],
            "private, no-store",
            "a buyer's output is nobody's cache's"
        );
        assert!(
            axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap()
                .is_empty()
        );
    }
);

// A download streams from the object store: the market hands the
// connection the blob in pieces read as the reader takes them, never the
// whole blob at once, whatever its size, so a flock of callers asking for
// the largest blobs holds a piece each. A range is read from the store as
// a range.
both_dbs!(
    a_download_streams_from_the_store_a_piece_at_a_time,
    async |m: &TestMarket| {
        use futures_util::StreamExt;
        let mut big = vec![0u8; 3 << 20];
        big.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i * 7 % 251) as u8);
        let digest = agora_wire::digest_hex(&big);
        let mut staged =
            agora_market::blobs::Staged::write(&m.state.db, [(digest.clone(), big.clone().into())])
                .await
                .unwrap();
        let mut tx = m.state.db.write().await.unwrap();
        staged
            .record(&mut tx, agora_market::blobs::Pin::Kept)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        staged.settle().await;
        let downloads = agora_market::blobs::Downloads::default();
        let mut range = axum::http::HeaderMap::new();
        for (headers, want) in [
            (axum::http::HeaderMap::new(), &big[..]),
            (
                {
                    range.insert("range", "bytes=1000-2999999".parse().unwrap());
                    range
                },
                &big[1000..3_000_000],
            ),
        ] {
            let response = downloads
                .serve(
                    &m.state.db,
                    &digest,
                    &headers,
                    None,
                    "application/octet-stream",
                )
                .await
                .unwrap();
            let mut pieces = response.into_body().into_data_stream();
            let (mut got, mut count) = (Vec::new(), 0);
            while let Some(piece) = pieces.next().await {
                let piece = piece.unwrap();
                assert!(piece.len() <= 1 << 20, "a piece of {} bytes", piece.len());
                got.extend_from_slice(&piece);
                count += 1;
            }
            assert!(count >= 3, "{count} pieces");
            assert!(got == want, "the bytes served are the blob's");
        }
    }
);

// A reader takes a byte a minute to hold its downloads open for hours:
// once it has taken nothing for DOWNLOAD_STALL, the download is cut and
// gives back what it holds, its address's slot included. One address
// holds at most DOWNLOADS_PER_PEER downloads; another is served meanwhile;
// all together hold at most DOWNLOADS_IN_FLIGHT.
both_dbs!(
    a_download_read_too_slowly_is_cut_and_gives_its_slot_back,
    async |m: &TestMarket| {
        use agora_market::blobs::{DOWNLOADS_PER_PEER, Downloads};
        let author = Keypair::generate();
        let saxpy = guest("saxpy");
        assert_eq!(
            m.call(
                "POST",
                "/api/v1/packages/saxpy/versions",
                Some(&publish_body(&author, "saxpy", "1.0.0", &saxpy, None)),
                Some(&author)
            )
            .await
            .0,
            StatusCode::OK
        );
        let digest = agora_wire::digest_hex(&saxpy);
        let downloads = Downloads::default().with_stall(std::time::Duration::from_millis(100));
        let none = axum::http::HeaderMap::new();
        let (flock, honest): (std::net::IpAddr, std::net::IpAddr) = (
            "203.0.113.7".parse().unwrap(),
            "198.51.100.2".parse().unwrap(),
        );
        let mut stalled = Vec::new();
        for _ in 0..DOWNLOADS_PER_PEER {
            stalled.push(
                downloads
                    .serve(&m.state.db, &digest, &none, Some(flock), "application/wasm")
                    .await
                    .expect("within its share"),
            );
        }
        let past = downloads
            .serve(&m.state.db, &digest, &none, Some(flock), "application/wasm")
            .await;
        assert!(
            matches!(
                past,
                Err(agora_market::error::ApiError::TooManyAtOnce {
                    what: "downloads in flight",
                    ..
                })
            ),
            "{:?}",
            past.map(|r| r.status())
        );
        let other = downloads
            .serve(
                &m.state.db,
                &digest,
                &none,
                Some(honest),
                "application/wasm",
            )
            .await
            .expect("another address is served");
        assert_eq!(
            axum::body::to_bytes(other.into_body(), 1 << 26)
                .await
                .unwrap()
                .as_ref(),
            saxpy.as_slice()
        );
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let again = downloads
            .serve(&m.state.db, &digest, &none, Some(flock), "application/wasm")
            .await
            .expect("the stalled downloads gave their slots back");
        assert_eq!(
            axum::body::to_bytes(again.into_body(), 1 << 26)
                .await
                .unwrap()
                .as_ref(),
            saxpy.as_slice()
        );
        for cut in stalled {
            assert!(
                axum::body::to_bytes(cut.into_body(), 1 << 26)
                    .await
                    .is_err(),
                "a stalled download was cut"
            );
        }
        // All addresses together, loopback included (a proxy's callers), hold
        // at most the market's cap; past it the market is busy.
        let capped = Downloads::default().with_cap(2);
        let held = [
            capped
                .serve(&m.state.db, &digest, &none, None, "application/wasm")
                .await
                .unwrap(),
            capped
                .serve(&m.state.db, &digest, &none, Some(flock), "application/wasm")
                .await
                .unwrap(),
        ];
        let busy = capped
            .serve(
                &m.state.db,
                &digest,
                &none,
                Some(honest),
                "application/wasm",
            )
            .await;
        assert!(
            matches!(busy, Err(agora_market::error::ApiError::Busy)),
            "{:?}",
            busy.map(|r| r.status())
        );
        drop(held);
        assert!(
            capped
                .serve(
                    &m.state.db,
                    &digest,
                    &none,
                    Some(honest),
                    "application/wasm"
                )
                .await
                .is_ok(),
            "a finished download frees its place"
        );
    }
);
