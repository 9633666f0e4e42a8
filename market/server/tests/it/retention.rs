//! A job's data after the job: the buyer deletes it, or the market collects
//! it after the retention period; blobs that another record still needs
//! stay.

use crate::jobs::{answer, job, lease, provider, publish, run_all, submit};
use crate::*;
use std::time::Duration;

/// Whether the market holds `bytes`: a record and exactly the one object
/// it names, or neither (no object left behind, none missing). The record
/// holds no bytes itself.
async fn blob_stored(m: &TestMarket, bytes: &[u8]) -> bool {
    let digest = agora_wire::digest_hex(bytes);
    let record: Option<(i64, Option<Vec<u8>>, Option<String>)> =
        sqlx::query_as("SELECT size, bytes, object FROM blobs WHERE digest = $1")
            .bind(&digest)
            .fetch_optional(&m.state.db.pool)
            .await
            .unwrap();
    let objects = objects_of(m, &digest);
    match record {
        Some((size, in_table, object)) => {
            assert_eq!(
                (size, in_table),
                (bytes.len() as i64, None),
                "the table says what a blob is; the store holds it"
            );
            assert_eq!(
                objects,
                vec![object.unwrap()],
                "blob {digest}: its object and no other"
            );
            true
        }
        None => {
            assert!(
                objects.is_empty(),
                "blob {digest} has no record but objects {objects:?}"
            );
            false
        }
    }
}

/// The keys of the objects in the market's store (a directory) for `digest`.
pub fn objects_of(m: &TestMarket, digest: &str) -> Vec<String> {
    let dir = std::path::Path::new(&*m.state.db.blobs.location)
        .join("blobs")
        .join(&digest[..2]);
    let mut keys: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    keys.retain(|name| name.starts_with(&format!("{digest}.")));
    keys.iter()
        .map(|name| format!("blobs/{}/{name}", &digest[..2]))
        .collect()
}

// A buyer deletes a finished job's data. A stranger cannot (its probe
// answers like a job that does not exist), a running job's data cannot go,
// and what others still need stays: another buyer's job with the same input
// and output, and the package's own component, which a hostile buyer sent
// as an input to get it collected.
both_dbs!(
    a_buyer_deletes_a_jobs_data_and_only_what_nothing_else_needs_goes,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let component = guest("saxpy");
        let (buyer, other, stranger) = (
            Keypair::generate(),
            Keypair::generate(),
            Keypair::generate(),
        );
        m.fund(&buyer, 10_000).await;
        m.fund(&other, 10_000).await;
        let id = submit(
            m,
            &buyer,
            "saxpy",
            &[b"shared input", b"only mine", &component],
            3_000,
            1,
        )
        .await;
        let data = format!("/api/v1/jobs/{id}/data");
        let (status, body) = m.call("DELETE", &data, None, Some(&buyer)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("not_yet")),
            "a running job's data stays: {body}"
        );
        let p = provider(m, 1).await;
        run_all(m, &p, |i| {
            if i == 0 {
                b"shared output".to_vec()
            } else {
                format!("mine {i}").into_bytes()
            }
        })
        .await;
        let theirs = submit(m, &other, "saxpy", &[b"shared input"], 1_000, 1).await;
        run_all(m, &p, |_| b"shared output".to_vec()).await;
        assert_eq!(job(m, &buyer, &id).await["state"], "done");
        assert!(
            job(m, &buyer, &id).await["data_kept_until_ms"]
                .as_i64()
                .is_some()
        );

        let (nosy, nosy_body) = m.call("DELETE", &data, None, Some(&stranger)).await;
        let (missing, missing_body) = m
            .call("DELETE", "/api/v1/jobs/j00/data", None, Some(&stranger))
            .await;
        assert_eq!(
            (nosy, &nosy_body["error"]["code"]),
            (missing, &missing_body["error"]["code"]),
            "another buyer's job is nothing to a stranger"
        );
        assert_eq!(nosy, StatusCode::NOT_FOUND);
        assert!(blob_stored(m, b"only mine").await);

        let (status, body) = m.call("DELETE", &data, None, Some(&buyer)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            !blob_stored(m, b"only mine").await && !blob_stored(m, b"mine 1").await,
            "the job's own data is gone"
        );
        assert!(
            blob_stored(m, b"shared input").await && blob_stored(m, b"shared output").await,
            "another job still needs these"
        );
        assert!(
            blob_stored(m, &component).await,
            "a component stays, whoever else sent its bytes"
        );
        let info = job(m, &buyer, &id).await;
        assert_eq!(info["data_deleted_at_ms"], body["deleted_at_ms"], "{info}");
        assert!(
            info["units"]
                .as_array()
                .unwrap()
                .iter()
                .all(|u| u["output_bytes"].is_null()),
            "no hint of who else holds an output: {info}"
        );
        let (status, gone) = m
            .call(
                "GET",
                &format!("/api/v1/jobs/{id}/units/1/output"),
                None,
                Some(&buyer),
            )
            .await;
        assert_eq!(
            (status, gone["error"]["code"].as_str()),
            (StatusCode::GONE, Some("gone")),
            "{gone}"
        );
        let input = format!("/api/v1/blobs/{}", agora_wire::digest_hex(b"only mine"));
        assert_eq!(
            m.call("GET", &input, None, Some(&buyer)).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            m.call("DELETE", &data, None, Some(&buyer)).await,
            (StatusCode::OK, body.clone()),
            "deleting twice is the same answer"
        );

        // The other buyer's job reads all it had; its own deletion then takes
        // the shared blobs, and the component still stays.
        assert_eq!(
            m.call(
                "GET",
                &format!("/api/v1/jobs/{theirs}/units/0/output"),
                None,
                Some(&other)
            )
            .await,
            (StatusCode::OK, json!("shared output"))
        );
        assert_eq!(
            m.call(
                "DELETE",
                &format!("/api/v1/jobs/{theirs}/data"),
                None,
                Some(&other)
            )
            .await
            .0,
            StatusCode::OK
        );
        assert!(!blob_stored(m, b"shared input").await && !blob_stored(m, b"shared output").await);
        assert!(blob_stored(m, &component).await);
        let (status, _) = m
            .call(
                "GET",
                "/api/v1/packages/saxpy/versions/1.0.0/component",
                None,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "the package still downloads");
        m.assert_invariants().await;
    }
);

// Nobody deletes: the market collects a job's data once the retention
// period has passed since the job ended, not before, and logs go with it.
both_dbs!(
    a_jobs_data_is_collected_after_the_retention_period,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1_000).await;
        let id = submit(m, &buyer, "saxpy", &[b"kept a while"], 600, 1).await;
        let p = provider(m, 1).await;
        run_all(m, &p, |_| b"an answer".to_vec()).await;
        let until = job(m, &buyer, &id).await["data_kept_until_ms"]
            .as_i64()
            .unwrap();
        assert_eq!(
            until - m.state.now_ms() > agora_market::jobs::DATA_RETENTION_MS - 60_000,
            true,
            "kept for the retention period"
        );
        m.state.advance_clock(Duration::from_millis(
            agora_market::jobs::DATA_RETENTION_MS as u64 - 60_000,
        ));
        m.state.sweep().await.unwrap();
        assert!(
            blob_stored(m, b"kept a while").await && blob_stored(m, b"an answer").await,
            "not before the period ends"
        );
        m.state.advance_clock(Duration::from_secs(120));
        m.state.sweep().await.unwrap();
        assert!(!blob_stored(m, b"kept a while").await && !blob_stored(m, b"an answer").await);
        let info = job(m, &buyer, &id).await;
        assert!(
            info["data_deleted_at_ms"].as_i64().is_some() && info["data_kept_until_ms"].is_null(),
            "{info}"
        );
        assert_eq!(
            m.call(
                "GET",
                &format!("/api/v1/jobs/{id}/units/0/output"),
                None,
                Some(&buyer)
            )
            .await
            .0,
            StatusCode::GONE
        );
        m.assert_invariants().await;
    }
);

// A hostile pair of buyers races a deletion against a submit of the same
// bytes: whichever commits first, the new job's input is there for its
// provider (on PostgreSQL the two really run at once).
both_dbs!(
    a_deletion_racing_a_submit_of_the_same_bytes_never_loses_the_new_input,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let (first, second) = (Keypair::generate(), Keypair::generate());
        m.fund(&first, 100_000).await;
        m.fund(&second, 100_000).await;
        let p = provider(m, 1).await;
        for round in 0..12 {
            let input = format!("raced input {round}").into_bytes();
            let id = submit(m, &first, "saxpy", &[&input], 600, 1).await;
            run_all(m, &p, |_| b"raced output".to_vec()).await;
            let data = format!("/api/v1/jobs/{id}/data");
            let inputs: [&[u8]; 1] = [&input];
            let (deleted, resubmitted) = tokio::join!(
                m.call("DELETE", &data, None, Some(&first)),
                submit(m, &second, "saxpy", &inputs, 600, 1)
            );
            assert_eq!(deleted.0, StatusCode::OK, "{}", deleted.1);
            assert!(
                blob_stored(m, &input).await,
                "round {round}: the new job's input was collected under it"
            );
            let grant = lease(m, &p).await.expect("the new job's unit");
            let path = format!("/api/v1/blobs/{}", grant["input_digest"].as_str().unwrap());
            assert_eq!(
                m.call("GET", &path, None, Some(&p)).await.1,
                json!(String::from_utf8(input).unwrap())
            );
            answer(m, &p, &grant, Ok(b"raced output")).await;
            assert_eq!(job(m, &second, &resubmitted).await["state"], "done");
        }
    }
);

// A market whose database still holds blob bytes in the table (written
// before blobs lived in the object store) moves them into the store when it
// starts: the record keeps what the blob is, the store its bytes, and a
// reader gets the same bytes as before.
both_dbs!(
    blob_bytes_written_before_the_object_store_move_into_it_at_start,
    async |m: &TestMarket| {
        let old = b"bytes from before the object store".to_vec();
        let digest = agora_wire::digest_hex(&old);
        sqlx::query(
            "INSERT INTO blobs (digest, size, pinned, bytes, object) VALUES ($1, $2, 1, $3, NULL)",
        )
        .bind(&digest)
        .bind(old.len() as i64)
        .bind(old.clone())
        .execute(&m.state.db.pool)
        .await
        .unwrap();
        assert!(objects_of(m, &digest).is_empty());
        let replica = m.replica().await;
        assert!(blob_stored(m, &old).await, "moved at start");
        assert_eq!(
            agora_market::blobs::read(&replica.db, &digest)
                .await
                .unwrap(),
            old
        );
        assert_eq!(
            agora_market::blobs::move_into_store(&m.state.db)
                .await
                .unwrap(),
            0,
            "nothing is moved twice"
        );
    }
);

// A record whose object is gone (a crashed disk, a bucket restored from an
// older backup) is mended by the next store of its bytes, instead of every
// later job naming nothing: the next submit writes the bytes again, the
// record names them, and its provider reads the input.
both_dbs!(
    a_blob_whose_object_was_lost_is_stored_again_by_the_next_submit,
    async |m: &TestMarket| {
        publish(m, "saxpy").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 10_000).await;
        submit(m, &buyer, "saxpy", &[b"an input lost from disk"], 600, 1).await;
        let digest = agora_wire::digest_hex(b"an input lost from disk");
        let lost = agora_market::blobs::object_of(&m.state.db, &digest)
            .await
            .unwrap()
            .unwrap();
        std::fs::remove_file(std::path::Path::new(&*m.state.db.blobs.location).join(&lost))
            .unwrap();
        submit(m, &buyer, "saxpy", &[b"an input lost from disk"], 600, 1).await;
        assert!(
            blob_stored(m, b"an input lost from disk").await,
            "stored again, under a new key"
        );
        let p = provider(m, 1).await;
        let grant = lease(m, &p).await.expect("a unit");
        let (status, input) = m
            .call("GET", &format!("/api/v1/blobs/{digest}"), None, Some(&p))
            .await;
        assert_eq!(
            (status, input),
            (StatusCode::OK, json!("an input lost from disk")),
            "{grant}"
        );
    }
);
