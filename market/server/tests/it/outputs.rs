//! Outputs as blobs (issue 14): a provider uploads each output of a lease
//! it runs, then its signed result names them by digest, the named ones in
//! a manifest; buyers download each by name. Attacks: an anonymous caller,
//! another provider, bytes under a digest that is not theirs, a result
//! naming what was never uploaded or with a forged size or a bad manifest,
//! a lease filling the store (too many blobs, too many bytes, concurrent
//! uploads racing past the bound), an upload after the lease ended, and
//! replicas that agree on the main output but not on a named one.

use super::*;
use crate::jobs::{lease, provider, publish, submit};
use agora_wire::api::{NamedOutput, ResultReport, RunOutcome};
use agora_wire::limits::{MAX_NAMED_OUTPUTS, MAX_UNIT_BYTES};

/// `PUT /api/v1/leases/{lease}/outputs/{digest}` of `bytes`, signed by `key`.
async fn put_output(
    m: &TestMarket,
    key: Option<&Keypair>,
    grant: &Value,
    digest: &str,
    bytes: &[u8],
) -> (StatusCode, Value) {
    let lease_id = grant["lease_id"].as_str().unwrap();
    call_on(
        &m.state,
        "PUT",
        &format!("/api/v1/leases/{lease_id}/outputs/{digest}"),
        Some(bytes.to_vec()),
        key,
        None,
    )
    .await
}

/// Upload `bytes` under its own digest, expecting it stored.
async fn upload(m: &TestMarket, p: &Keypair, grant: &Value, bytes: &[u8]) {
    let (status, body) = put_output(m, Some(p), grant, &agora_wire::digest_hex(bytes), bytes).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A signed ok result naming `main` and `named` by digest (uploaded or not).
async fn result(
    m: &TestMarket,
    p: &Keypair,
    grant: &Value,
    main: &[u8],
    named: &[NamedOutput],
) -> (StatusCode, Value) {
    let lease_id = grant["lease_id"].as_str().unwrap();
    let digest = agora_wire::digest_hex(main);
    let (fuel, gpu) = (2_000_000_000, 0);
    let report = ResultReport {
        outcome: RunOutcome::Ok,
        limit: None,
        message: None,
        output_base64: None,
        signature: p.sign(&ResultReport::signed_bytes(
            lease_id,
            RunOutcome::Ok,
            Some(&digest),
            named,
            fuel,
            gpu,
        )),
        output_digest: Some(digest),
        fuel_used: fuel,
        gpu_time_us: gpu,
        peak_memory_bytes: 1024,
        logs: vec![],
        outputs: named.to_vec(),
    };
    m.call(
        "POST",
        &format!("/api/v1/leases/{lease_id}/result"),
        Some(&serde_json::to_value(&report).unwrap()),
        Some(p),
    )
    .await
}

fn named(name: &str, bytes: &[u8]) -> NamedOutput {
    NamedOutput {
        name: name.into(),
        digest: agora_wire::digest_hex(bytes),
        bytes: bytes.len() as u64,
    }
}

/// Upload `main` and each named output, then answer with them all.
async fn answer_with(
    m: &TestMarket,
    p: &Keypair,
    grant: &Value,
    main: &[u8],
    outputs: &[(&str, &[u8])],
) -> (StatusCode, Value) {
    upload(m, p, grant, main).await;
    for (_, bytes) in outputs {
        upload(m, p, grant, bytes).await;
    }
    let manifest: Vec<NamedOutput> = outputs.iter().map(|(n, b)| named(n, b)).collect();
    result(m, p, grant, main, &manifest).await
}

fn code(body: &Value) -> Option<&str> {
    body["error"]["code"].as_str()
}

both_dbs!(
    outputs_go_up_under_their_lease_and_come_back_by_name,
    async |m: &TestMarket| {
        // A package whose component adds named outputs (imports data.output).
        let author = crate::jobs::publish_guest(m, "outputs", "digits-train").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1_000_000).await;
        let id = submit(m, &buyer, "outputs", &[b"unit 0"], 100_000, 1).await;
        let (p, other) = (provider(m, 1).await, provider(m, 1).await);
        let grant = lease(m, &p).await.unwrap();
        let (main, model) = (b"the main output".as_slice(), b"weights".as_slice());
        let model_digest = agora_wire::digest_hex(model);

        // Nobody but the lease's provider stores anything under it.
        let (status, _) = put_output(m, None, &grant, &model_digest, model).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "an anonymous upload");
        for key in [&other, &author, &buyer] {
            let (status, body) = put_output(m, Some(key), &grant, &model_digest, model).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        }
        // Bytes under a digest that is not theirs.
        let (status, body) = put_output(m, Some(&p), &grant, &model_digest, b"other bytes").await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "{body}"
        );

        // A result naming what was never uploaded, a forged size, a bad
        // manifest: refused, and the lease still stands.
        upload(m, &p, &grant, main).await;
        let (status, body) = result(m, &p, &grant, main, &[named("model", model)]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "not uploaded: {body}");
        upload(m, &p, &grant, model).await;
        let mut forged = named("model", model);
        forged.bytes += 1;
        let (status, body) = result(m, &p, &grant, main, &[forged]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "a forged size: {body}");
        let bad_manifests = [
            vec![named("out", model)],
            vec![named("png", model)],
            vec![named("../model", model)],
            vec![named(".hidden", model)],
            vec![named("b", model), named("a", model)],
            vec![named("a", model), named("a", model)],
        ];
        for manifest in bad_manifests {
            let (status, body) = result(m, &p, &grant, main, &manifest).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{manifest:?}: {body}");
        }
        let (status, body) = result(m, &p, &grant, b"never uploaded", &[]).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "an unsent main output: {body}"
        );

        let (status, body) = result(m, &p, &grant, main, &[named("model", model)]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // The lease is answered: nothing more goes up under it.
        let (status, body) = put_output(
            m,
            Some(&p),
            &grant,
            &agora_wire::digest_hex(b"late"),
            b"late",
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");

        let job = crate::jobs::job(m, &buyer, &id).await;
        let unit = &job["units"][0];
        assert_eq!(unit["state"], "verified", "{job}");
        assert_eq!(unit["output_digest"], agora_wire::digest_hex(main));
        assert_eq!(
            unit["outputs"],
            json!([{"name": "model", "digest": model_digest, "bytes": model.len()}])
        );
        let path = format!("/api/v1/jobs/{id}/units/0/outputs/model");
        let (status, body) = m.call("GET", &path, None, Some(&buyer)).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, Some("weights")));
        let (status, _) = m
            .call(
                "GET",
                &format!("/api/v1/jobs/{id}/units/0/outputs/none"),
                None,
                Some(&buyer),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = m.call("GET", &path, None, Some(&other)).await;
        assert_ne!(status, StatusCode::OK, "another key reads nobody's outputs");
        let (status, _) = m.call("GET", &path, None, None).await;
        assert_ne!(
            status,
            StatusCode::OK,
            "an anonymous caller reads nobody's outputs"
        );

        // The outputs go with the job's data.
        let (status, body) = m
            .call(
                "DELETE",
                &format!("/api/v1/jobs/{id}/data"),
                None,
                Some(&buyer),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, _) = m.call("GET", &path, None, Some(&buyer)).await;
        assert_eq!(status, StatusCode::GONE);
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blobs WHERE digest = $1")
            .bind(&model_digest)
            .fetch_one(&m.state.db.pool)
            .await
            .unwrap();
        assert_eq!(left, 0, "the named output's blob is collected");
    }
);

both_dbs!(
    a_lease_stores_no_more_than_a_unit_may_return,
    async |m: &TestMarket| {
        publish(m, "bounded").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1_000_000).await;
        submit(m, &buyer, "bounded", &[b"a", b"b"], 100_000, 1).await;
        let p = provider(m, 1).await;
        // Count: the main output and MAX_NAMED_OUTPUTS named ones, no more.
        let grant = lease(m, &p).await.unwrap();
        for i in 0..=MAX_NAMED_OUTPUTS {
            upload(m, &p, &grant, format!("blob {i}").as_bytes()).await;
        }
        let extra = b"one too many";
        let (status, body) =
            put_output(m, Some(&p), &grant, &agora_wire::digest_hex(extra), extra).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, Some("limit_exceeded")),
            "{body}"
        );
        // The same blob again is no new upload.
        upload(m, &p, &grant, b"blob 0").await;

        // Bytes: two uploads racing, each within MAX_UNIT_BYTES, together
        // past it: one is stored.
        let grant = lease(m, &p).await.unwrap();
        let half = MAX_UNIT_BYTES / 2 + 1;
        let (a, b) = (vec![1u8; half], vec![2u8; half]);
        let (da, db) = (agora_wire::digest_hex(&a), agora_wire::digest_hex(&b));
        let ((sa, ba), (sb, bb)) = tokio::join!(
            put_output(m, Some(&p), &grant, &da, &a),
            put_output(m, Some(&p), &grant, &db, &b)
        );
        let stored = [sa, sb].iter().filter(|s| **s == StatusCode::OK).count();
        assert_eq!(stored, 1, "{sa} {ba} / {sb} {bb}");
        let refused = if sa == StatusCode::OK { &bb } else { &ba };
        assert_eq!(code(refused), Some("limit_exceeded"), "{refused}");
        let bytes: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM lease_uploads WHERE lease_id = $1",
        )
        .bind(grant["lease_id"].as_str().unwrap())
        .fetch_one(&m.state.db.pool)
        .await
        .unwrap();
        assert_eq!(bytes as usize, half);
    }
);

both_dbs!(
    replicas_agree_only_when_their_named_outputs_agree,
    async |m: &TestMarket| {
        crate::jobs::publish_guest(m, "replicated", "digits-train").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1_000_000).await;
        let id = submit(m, &buyer, "replicated", &[b"unit"], 100_000, 2).await;
        let (p1, p2, p3) = (
            provider(m, 1).await,
            provider(m, 1).await,
            provider(m, 1).await,
        );
        let main = b"the same main output".as_slice();
        let g1 = lease(m, &p1).await.unwrap();
        let g2 = lease(m, &p2).await.unwrap();
        assert_eq!(
            answer_with(m, &p1, &g1, main, &[("model", b"right")])
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(
            answer_with(m, &p2, &g2, main, &[("model", b"wrong")])
                .await
                .0,
            StatusCode::OK
        );
        let job = crate::jobs::job(m, &buyer, &id).await;
        assert_ne!(
            job["units"][0]["state"], "verified",
            "the same main output with another named output is no agreement: {job}"
        );
        let g3 = lease(m, &p3).await.expect("a tie-breaking replica");
        assert_eq!(
            answer_with(m, &p3, &g3, main, &[("model", b"right")])
                .await
                .0,
            StatusCode::OK
        );
        let job = crate::jobs::job(m, &buyer, &id).await;
        let unit = &job["units"][0];
        assert_eq!(unit["state"], "verified", "{job}");
        assert_eq!(
            unit["outputs"][0]["digest"],
            agora_wire::digest_hex(b"right")
        );
        let paid: Vec<String> = sqlx::query_scalar(
            "SELECT provider FROM leases WHERE job_id = $1 AND paid = 1 ORDER BY provider",
        )
        .bind(&id)
        .fetch_all(&m.state.db.pool)
        .await
        .unwrap();
        let mut agreeing = vec![p1.id().to_string(), p3.id().to_string()];
        agreeing.sort();
        assert_eq!(paid, agreeing, "the odd named output is not paid");
    }
);

// A browser tab keeps no named outputs: a component that imports
// `data.output` gets no browser bundle, so tabs never lease its units.
both_dbs!(
    a_job_that_adds_named_outputs_is_not_offered_to_browser_tabs,
    async |m: &TestMarket| {
        crate::jobs::publish_guest(m, "trainer", "digits-train").await;
        crate::jobs::publish_guest(m, "plain", "saxpy").await;
        for (name, browser) in [("trainer", false), ("plain", true)] {
            let (status, info) = m
                .call("GET", &format!("/api/v1/packages/{name}"), None, None)
                .await;
            assert_eq!(status, StatusCode::OK, "{info}");
            assert_eq!(info["versions"][0]["browser"], browser, "{name}: {info}");
        }
    }
);

// A canary's lease takes uploads like a buyer's (a provider probing with an
// upload learns nothing) and its digest-only answer is judged; a package
// whose component does not import data.output returns no named outputs.
both_dbs!(
    canaries_take_uploads_alike_and_only_packages_that_add_outputs_name_them,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let (canary, expected) = crate::jobs::saxpy_canary();
        let (status, body) = m
            .call(
                "POST",
                "/api/v1/operator/canaries",
                Some(&canary),
                Some(&m.operator),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let buyer = Keypair::generate();
        m.fund(&buyer, 1_000_000).await;
        let job_id = submit(m, &buyer, "saxpy", &[b"a buyer's unit"], 100_000, 1).await;
        let p = crate::jobs::untrusted_provider(m, 1).await;
        let grant = lease(m, &p).await.expect("a canary first");
        assert_ne!(grant["job_id"], job_id.as_str());
        // Probing with an upload answers as a buyer's lease would.
        let (status, probe) =
            put_output(m, Some(&p), &grant, &agora_wire::digest_hex(b""), b"").await;
        assert_eq!(status, StatusCode::OK, "{probe}");
        assert_eq!(probe["lease"], grant["lease_id"]);
        let (status, body) = answer_with(m, &p, &grant, &expected, &[]).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "a digest-only canary answer: {body}"
        );
        let (_, providers) = m.call("GET", "/api/v1/providers", None, None).await;
        assert!(
            crate::jobs::reputation(&providers, &p) > 0.5,
            "judged right: {providers}"
        );

        let grant = lease(m, &p).await.expect("the buyer's unit");
        assert_eq!(grant["job_id"], job_id.as_str());
        let (status, body) = answer_with(m, &p, &grant, b"out", &[("extra", b"junk")]).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "saxpy adds no named outputs: {body}"
        );
        let (status, body) = result(m, &p, &grant, b"out", &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
);
