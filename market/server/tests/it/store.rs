//! Blob bytes in an S3-compatible object store: a real S3 server (moto's,
//! from PyPI, started here on a free loopback port) behind two market
//! replicas on one PostgreSQL database, as a deployment with replicas runs.

use crate::jobs::{job, provider, publish, run_all, submit};
use crate::*;
use agora_market::blobs::object_of;
use agora_market::store::BlobStore;
use object_store::aws::AmazonS3ConfigKey;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A moto S3 server on a free loopback port, killed when dropped.
struct S3Server {
    child: Child,
    endpoint: String,
}

impl S3Server {
    fn start() -> S3Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("the object-store tests need moto's S3 server (`cargo xtask test` installs it: pip install 'moto[server]'): {e}"));
        let server = S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto_server did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// A new bucket (path-style `PUT /BUCKET`; moto takes it unsigned).
    fn bucket(&self, name: &str) -> BlobStore {
        let mut stream =
            std::net::TcpStream::connect(self.endpoint.trim_start_matches("http://")).unwrap();
        write!(
            stream,
            "PUT /{name} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.endpoint.trim_start_matches("http://")
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "creating bucket {name}: {answer}"
        );
        let options = [
            (AmazonS3ConfigKey::Endpoint, self.endpoint.clone()),
            (
                AmazonS3ConfigKey::Client(object_store::ClientConfigKey::AllowHttp),
                "true".into(),
            ),
            (AmazonS3ConfigKey::Region, "us-east-1".into()),
            (AmazonS3ConfigKey::AccessKeyId, "agora-test".into()),
            (AmazonS3ConfigKey::SecretAccessKey, "agora-test".into()),
        ];
        BlobStore::s3(&format!("s3://{name}"), options).unwrap()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// Two replicas share one PostgreSQL database and one S3 bucket: a job's
// input sent to one is leased and served through the other, its output is
// downloaded by range from either, nothing of it sits in the database, and
// its deletion through one removes its objects from the bucket for both;
// the published component stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_blobs_through_a_real_s3_store() {
    let server = S3Server::start();
    let m = TestMarket::postgres_with(server.bucket("agora-replicas")).await;
    let other = m.replica().await;
    publish(&m, "saxpy").await;
    let buyer = Keypair::generate();
    m.fund(&buyer, 10_000).await;
    let id = submit(&m, &buyer, "saxpy", &[b"an input through S3"], 1_000, 1).await;
    let input = agora_wire::digest_hex(b"an input through S3");
    let input_key = object_of(&other.db, &input)
        .await
        .unwrap()
        .expect("recorded");
    assert!(
        other.db.blobs.exists(&input_key).await.unwrap(),
        "the other replica sees the object"
    );
    let in_table: Option<Vec<u8>> = sqlx::query_scalar("SELECT bytes FROM blobs WHERE digest = $1")
        .bind(&input)
        .fetch_one(&m.state.db.pool)
        .await
        .unwrap();
    assert_eq!(
        in_table, None,
        "the database keeps what a blob is, not its bytes"
    );
    run_all(&m, &provider(&m, 1).await, |_| {
        b"an output through S3".to_vec()
    })
    .await;
    assert_eq!(job(&m, &buyer, &id).await["state"], "done");
    let path = format!("/api/v1/jobs/{id}/units/0/output");
    let request =
        signed(TEST_ORIGIN, "GET", &path, b"", &buyer, other.now_ms()).header("range", "bytes=3-8");
    let response = app(other.clone())
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap()
            .as_ref(),
        b"output"
    );
    let output_key = object_of(
        &m.state.db,
        &agora_wire::digest_hex(b"an output through S3"),
    )
    .await
    .unwrap()
    .expect("recorded");
    let (status, body) = m
        .call(
            "DELETE",
            &format!("/api/v1/jobs/{id}/data"),
            None,
            Some(&buyer),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for key in [&input_key, &output_key] {
        assert!(
            !other.db.blobs.exists(key).await.unwrap(),
            "{key} left in the bucket"
        );
    }
    let component = object_of(&m.state.db, &agora_wire::digest_hex(&guest("saxpy")))
        .await
        .unwrap()
        .expect("recorded");
    assert!(
        other.db.blobs.exists(&component).await.unwrap(),
        "the component stays"
    );
    m.cleanup().await;
}
