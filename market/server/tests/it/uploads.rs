//! Uploads by content and jobs that name what their buyer uploaded
//! (issue 14): a blob in chunks, resumed, each chunk checked on arrival;
//! quotas bounded by credits, not keys; a job naming blobs it holds, and
//! only those; a provider reading a job's shared input only while it holds
//! a lease of that job; a browser tab taking jobs whose shared inputs it
//! can hold.

use super::*;
use crate::jobs::{answer, heartbeat, lease, provider, publish, trusted_provider};
use agora_market::uploads::StorageConfig;
use agora_wire::chunks::{Chunker, UPLOAD_CHUNK_BYTES, chunk_range};

/// Bytes no two calls with different seeds share.
fn bytes_of(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = agora_kernels::rng::Rng::new(seed);
    (0..len).map(|_| (rng.next_u64() >> 56) as u8).collect()
}

/// What `POST /api/v1/uploads` is sent for `data`.
fn new_upload(data: &[u8]) -> Value {
    let mut chunker = Chunker::new(data.len() as u64, UPLOAD_CHUNK_BYTES);
    chunker.update(data);
    let (digest, values) = chunker.finish().unwrap();
    json!({"digest": digest.to_hex().to_string(), "size": data.len(), "chunk_values": values.iter().map(hex::encode).collect::<Vec<_>>()})
}

async fn begin(m: &TestMarket, key: &Keypair, data: &[u8]) -> (StatusCode, Value) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("agora_market=warn")
        .with_test_writer()
        .try_init();
    m.call(
        "POST",
        "/api/v1/uploads",
        Some(&new_upload(data)),
        Some(key),
    )
    .await
}

/// Send chunk `index` of `data` (unsigned, as any client may).
async fn put_chunk(m: &TestMarket, upload: &str, index: u64, bytes: &[u8]) -> (StatusCode, Value) {
    let request = Request::builder()
        .method("PUT")
        .uri(format!("/api/v1/uploads/{upload}/chunks/{index}"))
        .header("content-length", bytes.len())
        .body(Body::from(bytes.to_vec()))
        .unwrap();
    send(&m.state, request).await
}

fn chunk(data: &[u8], index: u64) -> &[u8] {
    let r = chunk_range(index, data.len() as u64, UPLOAD_CHUNK_BYTES);
    &data[r.start as usize..r.end as usize]
}

/// Upload `data` whole for `key`; its digest.
pub async fn upload(m: &TestMarket, key: &Keypair, data: &[u8]) -> String {
    let (status, info) = begin(m, key, data).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    if let Some(upload) = info["upload"].as_str() {
        for index in info["missing"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap())
        {
            let (status, body) = put_chunk(m, upload, index, chunk(data, index)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        let (status, done) = m
            .call(
                "POST",
                &format!("/api/v1/uploads/{upload}/complete"),
                Some(&json!({})),
                Some(key),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{done}");
    }
    info["digest"].as_str().unwrap().to_string()
}

async fn used_bytes(m: &TestMarket, key: &Keypair) -> u64 {
    let (status, storage) = m.call("GET", "/api/v1/storage", None, Some(key)).await;
    assert_eq!(status, StatusCode::OK, "{storage}");
    storage["used_bytes"].as_u64().unwrap()
}

/// Files of unfinished uploads in the market's directory store.
fn parts_files(m: &TestMarket) -> usize {
    std::fs::read_dir(std::path::Path::new(&*m.state.db.blobs.location).join("uploads"))
        .map(|d| d.count())
        .unwrap_or(0)
}

// A 17 MiB blob goes up in three chunks: one is sent, the upload is begun
// again and says the other two are missing; a chunk with changed bytes is
// refused and stays missing; finishing early is refused; then the blob is
// whole, held, counted against the quota, read back byte for byte, and not
// sent again.
both_dbs!(
    a_blob_goes_up_in_chunks_and_resumes_where_it_stopped,
    async |m: &TestMarket| {
        let buyer = Keypair::generate();
        m.fund(&buyer, 100).await;
        let data = bytes_of(2 * UPLOAD_CHUNK_BYTES as usize + (1 << 20), seed());
        let (status, info) = begin(m, &buyer, &data).await;
        assert_eq!(status, StatusCode::OK, "{info}");
        assert_eq!(info["missing"], json!([0, 1, 2]));
        assert_eq!(info["stored"], false);
        let id = info["upload"].as_str().unwrap().to_string();
        assert_eq!(
            put_chunk(m, &id, 1, chunk(&data, 1)).await.0,
            StatusCode::OK
        );
        // Interrupted, begun again: the same upload, two chunks missing.
        let (_, resumed) = begin(m, &buyer, &data).await;
        assert_eq!(
            (resumed["upload"].as_str(), &resumed["missing"]),
            (Some(id.as_str()), &json!([0, 2]))
        );
        // Chunk 0 with one byte changed, or at chunk 2's place, or cut short.
        let mut changed = chunk(&data, 0).to_vec();
        changed[12_345] ^= 1;
        let (status, body) = put_chunk(m, &id, 0, &changed).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("chunk_mismatch")),
            "{body}"
        );
        assert_eq!(
            put_chunk(m, &id, 2, &chunk(&data, 0)[..1 << 20]).await.0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            put_chunk(m, &id, 0, &chunk(&data, 0)[1..]).await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            put_chunk(m, &id, 3, b"past the end").await.0,
            StatusCode::BAD_REQUEST
        );
        let (status, body) = m
            .call(
                "POST",
                &format!("/api/v1/uploads/{id}/complete"),
                Some(&json!({})),
                Some(&buyer),
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("incomplete")),
            "{body}"
        );
        assert_eq!(
            begin(m, &buyer, &data).await.1["missing"],
            json!([0, 2]),
            "refused chunks stay missing"
        );
        // Only the uploader finishes it.
        let stranger = Keypair::generate();
        assert_eq!(
            put_chunk(m, &id, 0, chunk(&data, 0)).await.0,
            StatusCode::OK
        );
        assert_eq!(
            put_chunk(m, &id, 2, chunk(&data, 2)).await.0,
            StatusCode::OK
        );
        assert_eq!(
            m.call(
                "POST",
                &format!("/api/v1/uploads/{id}/complete"),
                Some(&json!({})),
                Some(&stranger)
            )
            .await
            .0,
            StatusCode::NOT_FOUND
        );
        let (status, done) = m
            .call(
                "POST",
                &format!("/api/v1/uploads/{id}/complete"),
                Some(&json!({})),
                Some(&buyer),
            )
            .await;
        assert_eq!(
            (status, done["stored"].as_bool()),
            (StatusCode::OK, Some(true)),
            "{done}"
        );
        let digest = done["digest"].as_str().unwrap();
        assert_eq!(digest, agora_wire::digest_hex(&data));
        // Held: not sent again, counted, readable by its holder alone.
        let (_, again) = begin(m, &buyer, &data).await;
        assert_eq!(
            (again["stored"].as_bool(), again["upload"].as_str()),
            (Some(true), None)
        );
        assert_eq!(used_bytes(m, &buyer).await, data.len() as u64);
        let read = send(
            &m.state,
            signed(
                TEST_ORIGIN,
                "GET",
                &format!("/api/v1/blobs/{digest}"),
                &[],
                &buyer,
                m.state.now_ms(),
            )
            .body(Body::empty())
            .unwrap(),
        )
        .await;
        assert_eq!(read.0, StatusCode::OK);
        let (status, _) = m
            .call(
                "GET",
                &format!("/api/v1/blobs/{digest}"),
                None,
                Some(&stranger),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "a stranger cannot read it");
        assert_eq!(
            crate::retention::objects_of(m, digest).len(),
            1,
            "one object, joined from the chunks"
        );
        assert_eq!(parts_files(m), 0, "no unfinished upload left");
        // A second account uploading the same bytes sends them (it is never
        // told another holds them) and the store still keeps one object.
        let other = Keypair::generate();
        m.fund(&other, 100).await;
        let (_, theirs) = begin(m, &other, &data).await;
        assert_eq!(theirs["missing"], json!([0, 1, 2]));
        assert_eq!(upload(m, &other, &data).await, digest);
        assert_eq!(crate::retention::objects_of(m, digest).len(), 1);
    }
);

// Storage rests on money: a fresh key cannot begin an upload, one under
// way holds its price (a credit a MiB, at least one a blob) so those
// credits cannot move to another key, a finished one pays it to the
// market's fees, a dropped one gets it back. The
// quota per account holds under concurrent uploads; a claimed digest its
// chunk values do not make, or a blob past MAX_BLOB_BYTES, is refused; a
// cancelled, released or idle upload gives its bytes back; nothing is left
// half-stored by a refusal.
both_dbs!(
    uploads_are_paid_for_within_a_quota_and_refusals_store_nothing,
    async |m: &TestMarket| {
        let fresh = Keypair::generate();
        let (status, body) = begin(m, &fresh, b"free keys store nothing").await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("insufficient_funds")),
            "{body}"
        );
        let buyer = Keypair::generate();
        m.fund(&buyer, 100).await;
        // A market whose accounts may hold 10 MiB each.
        let mut small = m.state.clone();
        small.uploads = agora_market::uploads::Uploads::new(
            small.db.clone(),
            small.ledger.clone(),
            StorageConfig {
                quota_bytes: 10 << 20,
                bytes_per_credit: 1 << 20,
            },
        );
        let six = bytes_of(6 << 20, seed());
        let five = bytes_of(5 << 20, seed() + 1);
        let begin_on = |data: &[u8]| {
            call_on(
                &small,
                "POST",
                "/api/v1/uploads",
                Some(serde_json::to_vec(&new_upload(data)).unwrap()),
                Some(&buyer),
                None,
            )
        };
        // Two uploads at once that together pass the quota: one is refused.
        let (a, b) = tokio::join!(begin_on(&six), begin_on(&five));
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::FORBIDDEN],
            "{a:?} {b:?}"
        );
        let refused = if a.0 == StatusCode::OK { &b.1 } else { &a.1 };
        assert_eq!(refused["error"]["code"], "storage_quota", "{refused}");
        assert!(used_bytes(m, &buyer).await <= 10 << 20);
        // Cancelled: its bytes come back, its parts go.
        let open = if a.0 == StatusCode::OK { a.1 } else { b.1 };
        let id = open["upload"].as_str().unwrap();
        assert_eq!(
            m.call(
                "DELETE",
                &format!("/api/v1/uploads/{id}"),
                None,
                Some(&Keypair::generate())
            )
            .await
            .0,
            StatusCode::NOT_FOUND,
            "only its uploader cancels it"
        );
        assert_eq!(
            m.call(
                "DELETE",
                &format!("/api/v1/uploads/{id}"),
                None,
                Some(&buyer)
            )
            .await
            .0,
            StatusCode::OK
        );
        assert_eq!(used_bytes(m, &buyer).await, 0);
        assert_eq!(put_chunk(m, id, 0, b"late").await.0, StatusCode::NOT_FOUND);
        if m.state.db.kind == agora_market::db::Kind::Sqlite {
            assert_eq!(parts_files(m), 0, "a cancelled upload's parts are gone");
        }
        // Values that do not make the claimed digest, a size past the limit.
        let mut lying = new_upload(&five);
        lying["digest"] = json!(agora_wire::digest_hex(b"something else"));
        assert_eq!(
            m.call("POST", "/api/v1/uploads", Some(&lying), Some(&buyer))
                .await
                .0,
            StatusCode::BAD_REQUEST
        );
        let mut huge = new_upload(&five);
        huge["size"] = json!(agora_wire::chunks::MAX_BLOB_BYTES + 1);
        let (status, body) = m
            .call("POST", "/api/v1/uploads", Some(&huge), Some(&buyer))
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("limit_exceeded")),
            "{body}"
        );
        assert_eq!(
            used_bytes(m, &buyer).await,
            0,
            "refused uploads reserve nothing"
        );
        assert_eq!(m.available(&buyer).await, 100, "nor cost anything");
        // Finished: paid, 5 credits for 5 MiB, 1 for an empty blob.
        let digest = upload(m, &buyer, &five).await;
        upload(m, &buyer, b"").await;
        assert_eq!(m.available(&buyer).await, 100 - 5 - 1);
        assert_eq!(used_bytes(m, &buyer).await, 5 << 20);
        m.assert_invariants().await;
        // Released: the bytes come back and, named by nothing, the blob goes.
        assert_eq!(
            m.call(
                "DELETE",
                &format!("/api/v1/blobs/{digest}"),
                None,
                Some(&buyer)
            )
            .await
            .0,
            StatusCode::OK
        );
        assert_eq!(used_bytes(m, &buyer).await, 0);
        assert!(
            crate::retention::objects_of(m, &digest).is_empty(),
            "a blob nothing names is deleted"
        );
        assert_eq!(
            m.call(
                "DELETE",
                &format!("/api/v1/blobs/{digest}"),
                None,
                Some(&buyer)
            )
            .await
            .0,
            StatusCode::NOT_FOUND
        );
        // An upload under way holds its price: those credits cannot move away.
        let (_, begun) = begin(m, &buyer, &six).await;
        let id = begun["upload"].as_str().unwrap().to_string();
        assert_eq!(put_chunk(m, &id, 0, &six).await.0, StatusCode::OK);
        assert_eq!(m.available(&buyer).await, 100 - 5 - 1 - 6);
        let other = Keypair::generate();
        let (status, body) = m.call("POST", "/api/v1/transfers", Some(&json!({"id": "away", "kind": "single", "debit": buyer.id(), "credit": other.id(), "amount": 90})), Some(&buyer)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("insufficient_funds")),
            "{body}"
        );
        // Idle for a day: dropped by the sweep, its price given back.
        assert_eq!(used_bytes(m, &buyer).await, 6 << 20);
        m.state.advance_clock(std::time::Duration::from_millis(
            agora_market::uploads::UPLOAD_IDLE_MS as u64 + 1_000,
        ));
        m.state.sweep().await.unwrap();
        assert_eq!(used_bytes(m, &buyer).await, 0);
        assert_eq!(m.available(&buyer).await, 100 - 5 - 1);
        assert_eq!(
            m.call(
                "POST",
                &format!("/api/v1/uploads/{id}/complete"),
                Some(&json!({})),
                Some(&buyer)
            )
            .await
            .0,
            StatusCode::NOT_FOUND
        );
        assert!(crate::retention::objects_of(m, &agora_wire::digest_hex(&six)).is_empty());
        if m.state.db.kind == agora_market::db::Kind::Sqlite {
            assert_eq!(parts_files(m), 0);
        }
        m.assert_invariants().await;
    }
);

// A job names what its buyer uploaded: units by digest and a shared input
// by name. A digest nobody holds, or someone else's, is refused alike; a
// provider reads the shared input while it holds a lease of that job, and
// no other provider can; a blob a job names outlives its holder letting it
// go, until the job's data goes.
both_dbs!(
    a_job_names_blobs_its_buyer_holds_and_providers_read_them_while_leased,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let (buyer, other) = (Keypair::generate(), Keypair::generate());
        m.fund(&buyer, 10_000).await;
        m.fund(&other, 10_000).await;
        let dataset = bytes_of(3 << 20, seed());
        let unit = b"unit input by digest".to_vec();
        let (dataset_digest, unit_digest) = (
            upload(m, &buyer, &dataset).await,
            upload(m, &buyer, &unit).await,
        );
        let theirs = upload(m, &other, b"the other buyer's secret").await;
        assert_eq!(
            m.available(&buyer).await,
            10_000 - 3 - 1,
            "3 MiB and a small blob stored"
        );
        let job = |units: Vec<&str>, shared: Value| {
            json!({"package": "saxpy", "input_digests": units, "shared": shared,
               "limits": {"fuel": 4_000_000_000u64, "memory_bytes": 64u64 << 20, "timeout_ms": 10_000, "gpu": false},
               "max_price": 3000, "replicas": 1})
        };
        for (units, shared) in [
            (vec![theirs.as_str()], json!({})),
            (vec![unit_digest.as_str()], json!({"data": theirs})),
            (
                vec![unit_digest.as_str()],
                json!({"data": agora_wire::digest_hex(b"nobody has this")}),
            ),
        ] {
            let (status, body) = m
                .call(
                    "POST",
                    "/api/v1/jobs",
                    Some(&job(units, shared)),
                    Some(&buyer),
                )
                .await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        }
        let (status, body) = m
            .call(
                "POST",
                "/api/v1/jobs",
                Some(&job(
                    vec![&unit_digest],
                    json!({"Bad Name": dataset_digest}),
                )),
                Some(&buyer),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            m.available(&buyer).await,
            10_000 - 4,
            "refused jobs hold nothing"
        );
        let (status, info) = m
            .call(
                "POST",
                "/api/v1/jobs",
                Some(&job(
                    vec![&unit_digest, &unit_digest],
                    json!({"data": dataset_digest}),
                )),
                Some(&buyer),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{info}");
        assert_eq!(
            info["shared"],
            json!([{"name": "data", "digest": dataset_digest, "size": dataset.len()}])
        );
        assert_eq!(info["unit_counts"]["total"], 2);
        // The holder cannot let the dataset go while the job names it.
        let (status, body) = m
            .call(
                "DELETE",
                &format!("/api/v1/blobs/{dataset_digest}"),
                None,
                Some(&buyer),
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("not_yet")),
            "{body}"
        );
        let (p, idle) = (trusted_provider(m, 10).await, provider(m, 10).await);
        let grant = lease(m, &p).await.expect("a unit");
        assert_eq!(grant["input_digest"], unit_digest.as_str());
        assert_eq!(
            grant["shared"],
            json!([{"name": "data", "digest": dataset_digest, "size": dataset.len()}])
        );
        let read = |key: &Keypair, digest: &str| {
            let request = signed(
                TEST_ORIGIN,
                "GET",
                &format!("/api/v1/blobs/{digest}"),
                &[],
                key,
                m.state.now_ms(),
            )
            .body(Body::empty())
            .unwrap();
            async move {
                let response = app(m.state.clone()).oneshot(request).await.unwrap();
                let status = response.status();
                (
                    status,
                    axum::body::to_bytes(response.into_body(), 64 << 20)
                        .await
                        .unwrap()
                        .to_vec(),
                )
            }
        };
        assert_eq!(
            read(&p, &dataset_digest).await,
            (StatusCode::OK, dataset.clone())
        );
        assert_eq!(
            read(&idle, &dataset_digest).await.0,
            StatusCode::NOT_FOUND,
            "no lease of the job, no read"
        );
        assert_eq!(read(&p, &theirs).await.0, StatusCode::NOT_FOUND);
        // The job ends and its data goes: then the dataset can go, and does.
        assert_eq!(answer(m, &p, &grant, Ok(b"done")).await.0, StatusCode::OK);
        let second = lease(m, &p).await.expect("the second unit");
        assert_eq!(answer(m, &p, &second, Ok(b"done")).await.0, StatusCode::OK);
        let job = info["id"].as_str().unwrap();
        let (status, body) = m
            .call(
                "DELETE",
                &format!("/api/v1/jobs/{job}/data"),
                None,
                Some(&buyer),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            m.call(
                "DELETE",
                &format!("/api/v1/blobs/{dataset_digest}"),
                None,
                Some(&buyer)
            )
            .await
            .0,
            StatusCode::OK
        );
        assert!(
            crate::retention::objects_of(m, &dataset_digest).is_empty(),
            "named by nothing now, the dataset is deleted"
        );
        m.assert_invariants().await;
    }
);

// Data locality: a provider whose heartbeat says it keeps a job's shared
// input (one the market served it under a lease) gets that job's units
// before an older job's; a claim of a digest it was never served counts
// for nothing, so no key steers a buyer's units to itself. What a provider
// keeps is never shown in its public telemetry; a heartbeat claiming
// something that is no digest is refused.
both_dbs!(
    leasing_prefers_a_provider_that_keeps_the_jobs_shared_input,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 10_000).await;
        let dataset = upload(m, &buyer, b"a dataset some providers keep").await;
        let shared_job = |input: &[u8]| {
            json!({"package": "saxpy", "inputs_base64": [crate::jobs::b64(input)], "shared": {"data": dataset},
               "limits": {"fuel": 4_000_000_000u64, "memory_bytes": 64u64 << 20, "timeout_ms": 10_000, "gpu": false},
               "max_price": 600, "replicas": 1})
        };
        let (status, first) = m
            .call(
                "POST",
                "/api/v1/jobs",
                Some(&shared_job(b"first")),
                Some(&buyer),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{first}");
        let (keeper, other, claimer) = (
            provider(m, 10).await,
            provider(m, 10).await,
            provider(m, 10).await,
        );
        let beat =
            |keeps: Value| json!({"running_units": 0, "free_cpu_cores": 2.0, "keeps": keeps});
        let grant = lease(m, &keeper).await.expect("a unit");
        assert_eq!(grant["job_id"], first["id"]);
        let older =
            crate::jobs::submit(m, &buyer, "saxpy", &[b"older unit", b"another"], 600, 1).await;
        let (_, newer) = m
            .call(
                "POST",
                "/api/v1/jobs",
                Some(&shared_job(b"newer")),
                Some(&buyer),
            )
            .await;
        let (status, body) = m
            .call(
                "POST",
                "/api/v1/providers/heartbeat",
                Some(&beat(json!(["not a digest"]))),
                Some(&keeper),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        for key in [&keeper, &claimer] {
            let (status, body) = m
                .call(
                    "POST",
                    "/api/v1/providers/heartbeat",
                    Some(&beat(json!([dataset]))),
                    Some(key),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        let grant = lease(m, &claimer).await.expect("a unit");
        assert_eq!(
            grant["job_id"],
            older.as_str(),
            "a claim of data never served counts for nothing: the oldest"
        );
        let grant = lease(m, &keeper).await.expect("a unit");
        assert_eq!(
            grant["job_id"], newer["id"],
            "the keeper gets the newer job whose input it keeps"
        );
        let grant = lease(m, &other).await.expect("a unit");
        assert_eq!(grant["job_id"], older.as_str(), "the other gets the oldest");
        let (_, providers) = m.call("GET", "/api/v1/providers", None, None).await;
        assert!(
            !providers.to_string().contains(&dataset),
            "what a provider keeps is never shown: {providers}"
        );
    }
);

// A directory store does not sync chunk by chunk: a chunk written before
// the machine last booted may be gone. Finishing checks exactly those
// chunks again: one whose bytes were lost is asked for again (incomplete),
// one that survived is not, and the blob is whole once it is sent again.
both_dbs!(
    chunks_a_crash_of_the_machine_may_have_lost_are_checked_before_finishing,
    async |m: &TestMarket| {
        let buyer = Keypair::generate();
        m.fund(&buyer, 100).await;
        let data = bytes_of(2 * UPLOAD_CHUNK_BYTES as usize + 100, seed());
        let (_, info) = begin(m, &buyer, &data).await;
        let id = info["upload"].as_str().unwrap().to_string();
        for index in 0..3 {
            assert_eq!(
                put_chunk(m, &id, index, chunk(&data, index)).await.0,
                StatusCode::OK
            );
        }
        // Chunks 0 and 1 written "in an earlier boot"; chunk 1's bytes never
        // reached the disk.
        sqlx::query("UPDATE upload_chunks SET part = 'boot:an-earlier-boot' WHERE upload_id = $1 AND idx IN (0, 1)").bind(&id).execute(&m.state.db.pool).await.unwrap();
        let handle: String = sqlx::query_scalar("SELECT parts FROM uploads WHERE id = $1")
            .bind(&id)
            .fetch_one(&m.state.db.pool)
            .await
            .unwrap();
        let file = std::path::Path::new(&*m.state.db.blobs.location)
            .join("uploads")
            .join(handle);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[UPLOAD_CHUNK_BYTES as usize..2 * UPLOAD_CHUNK_BYTES as usize].fill(0);
        std::fs::write(&file, &bytes).unwrap();
        let (status, body) = m
            .call(
                "POST",
                &format!("/api/v1/uploads/{id}/complete"),
                Some(&json!({})),
                Some(&buyer),
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("incomplete")),
            "{body}"
        );
        assert_eq!(
            begin(m, &buyer, &data).await.1["missing"],
            json!([1]),
            "only the lost chunk is asked for again"
        );
        assert_eq!(
            put_chunk(m, &id, 1, chunk(&data, 1)).await.0,
            StatusCode::OK
        );
        let (status, done) = m
            .call(
                "POST",
                &format!("/api/v1/uploads/{id}/complete"),
                Some(&json!({})),
                Some(&buyer),
            )
            .await;
        assert_eq!(
            (status, done["stored"].as_bool()),
            (StatusCode::OK, Some(true)),
            "{done}"
        );
        let object: String = sqlx::query_scalar("SELECT object FROM blobs WHERE digest = $1")
            .bind(agora_wire::digest_hex(&data))
            .fetch_one(&m.state.db.pool)
            .await
            .unwrap();
        let stored =
            std::fs::read(std::path::Path::new(&*m.state.db.blobs.location).join(object)).unwrap();
        assert!(stored == data, "the finished object is the blob");
    }
);

// A browser tab leases units of a job with shared inputs it can hold (at
// most MAX_BROWSER_SHARED_BYTES together, what a tab keeps in memory), the
// grant naming them; a job with more is never leased to a tab, and a native
// provider still takes it.
both_dbs!(
    a_browser_tab_takes_jobs_whose_shared_inputs_it_can_hold,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 10_000).await;
        let dataset = upload(m, &buyer, b"a small table every unit reads").await;
        let job = json!({"package": "saxpy", "inputs_base64": [crate::jobs::b64(b"one"), crate::jobs::b64(b"two")],
            "shared": {"table": dataset},
            "limits": {"fuel": 4_000_000_000u64, "memory_bytes": 64u64 << 20, "timeout_ms": 10_000, "gpu": false},
            "max_price": 1000, "replicas": 1});
        let (status, body) = m
            .call("POST", "/api/v1/jobs", Some(&job), Some(&buyer))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let tab = || async {
            let key = Keypair::generate();
            let register = json!({"capabilities": {"cpu_cores": 4, "memory_bytes": 0, "cuda": false, "kind": "browser",
                    "gpus": [{"name": "swiftshader", "backend": "webgpu", "device_type": "cpu"}]},
                "ask": {"per_billion_fuel": 0, "per_gpu_second": 1}, "max_concurrent": 1});
            let (status, body) = m
                .call("POST", "/api/v1/providers", Some(&register), Some(&key))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            heartbeat(m, &key).await;
            key
        };
        let grant = lease(m, &tab().await)
            .await
            .expect("a tab takes a job with a small shared input");
        assert_eq!(grant["job_id"], body["id"]);
        assert_eq!(grant["shared"][0]["digest"], dataset.as_str(), "{grant}");
        // The same job with shared inputs past what a tab holds.
        sqlx::query("UPDATE job_shared SET size = $1")
            .bind(agora_wire::limits::MAX_BROWSER_SHARED_BYTES as i64 + 1)
            .execute(&m.state.db.pool)
            .await
            .unwrap();
        assert!(
            lease(m, &tab().await).await.is_none(),
            "no tab takes more shared bytes than it holds"
        );
        let native = provider(m, 10).await;
        assert_eq!(
            lease(m, &native).await.expect("a native provider does")["job_id"],
            body["id"]
        );
    }
);
