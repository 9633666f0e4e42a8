//! `cargo xtask bench market`: the market's hot paths against baselines
//! measured in the same run, as throughput ratios (ours / baseline; higher is
//! better, 1.0 is parity).
//!
//! - Hold + post through `Ledger::execute` vs the same core SQL statements
//!   (conditional debit, credit, insert; resolve, move, insert) issued bare
//!   in the same transactions, on the same database: SQLite file and
//!   PostgreSQL.
//! - The registry's component digest vs single-threaded blake3 over the same
//!   bytes (what `b3sum --no-mmap --num-threads 1` computes).
//! - Signature checks per second through `KeyId::verify` vs ed25519-dalek's
//!   `verify_strict` on pre-parsed keys and signatures.
//! - A 256 MiB blob downloaded through `Downloads::serve` (its record
//!   read, its object streamed from the store in pieces) vs reading the
//!   same object file in 1 MiB reads, on the same disk.
//! - A 1 GiB file uploaded to a market serving on loopback
//!   (`Client::upload_file`: its digest and chunk values, then every chunk
//!   checked on arrival and written into the directory store, synced before
//!   it is held) and downloaded back into a file, its digest checked, each
//!   vs copying the same file on the same disk (`std::fs::copy`), and the
//!   upload vs a copy synced too; and an interrupted upload resumed,
//!   counting the bytes it sends.

use agora_market::Db;
use agora_market::ledger::{Ledger, Op};
use agora_wire::Keypair;
use sqlx::{Any, Transaction};
use std::time::{Duration, Instant};

const PAIRS: usize = 400;

async fn bare_debit(tx: &mut Transaction<'static, Any>, column: &str, account: &str, amount: i64) {
    let done = sqlx::query(&format!(
        "UPDATE accounts SET {column} = {column} + $1 WHERE id = $2 AND (kind = 'issuance' OR credits_posted - debits_posted - debits_pending >= $1)"
    ))
    .bind(amount)
    .bind(account)
    .execute(&mut **tx)
    .await
    .unwrap();
    assert_eq!(done.rows_affected(), 1);
}

async fn bare_exec(tx: &mut Transaction<'static, Any>, sql: &str, args: (&str, i64, &str)) {
    sqlx::query(sql)
        .bind(args.0)
        .bind(args.1)
        .bind(args.2)
        .execute(&mut **tx)
        .await
        .unwrap();
}

async fn bare_insert(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    debit: &str,
    credit: &str,
    kind: &str,
    state: &str,
) {
    sqlx::query(
        "INSERT INTO transfers (id, request_digest, debit, credit, amount, kind, state, created_at_ms) VALUES ($1, 'x', $2, $3, 10, $4, $5, 0)",
    )
    .bind(id)
    .bind(debit)
    .bind(credit)
    .bind(kind)
    .bind(state)
    .execute(&mut **tx)
    .await
    .unwrap();
}

/// Hold then post `PAIRS` times with the bare statements.
async fn bare_pairs(db: &Db, buyer: &str, seller: &str, tag: &str) -> Duration {
    let started = Instant::now();
    for i in 0..PAIRS {
        let id = format!("bare-{tag}-{i}");
        let mut tx = db.write().await.unwrap();
        bare_debit(&mut tx, "debits_pending", buyer, 10).await;
        bare_exec(
            &mut tx,
            "UPDATE accounts SET credits_pending = credits_pending + $2 WHERE id = $3 AND $1 <> ''",
            (&id, 10, seller),
        )
        .await;
        bare_insert(&mut tx, &id, buyer, seller, "hold", "pending").await;
        tx.commit().await.unwrap();
        let mut tx = db.write().await.unwrap();
        bare_exec(&mut tx, "UPDATE transfers SET state = 'settled', amount_posted = $2 WHERE id = $1 AND state = 'pending' AND $3 <> ''", (&id, 10, "x")).await;
        bare_exec(&mut tx, "UPDATE accounts SET debits_pending = debits_pending - $2, debits_posted = debits_posted + $2 WHERE id = $3 AND $1 <> ''", (&id, 10, buyer)).await;
        bare_exec(&mut tx, "UPDATE accounts SET credits_pending = credits_pending - $2, credits_posted = credits_posted + $2 WHERE id = $3 AND $1 <> ''", (&id, 10, seller)).await;
        bare_insert(&mut tx, &format!("{id}-p"), buyer, seller, "post", "posted").await;
        tx.commit().await.unwrap();
    }
    started.elapsed()
}

async fn ledger_pairs(ledger: &Ledger, buyer: &str, seller: &str, tag: &str) -> Duration {
    let started = Instant::now();
    for i in 0..PAIRS {
        let id = format!("ledger-{tag}-{i}");
        let hold = Op::Hold {
            debit: buyer.into(),
            credit: seller.into(),
            amount: 10,
            timeout_ms: 600_000,
        };
        ledger.execute(&id, &hold, 0).await.unwrap();
        ledger
            .execute(
                &format!("{id}-p"),
                &Op::Post {
                    pending_id: id.clone(),
                    amount: None,
                },
                0,
            )
            .await
            .unwrap();
    }
    started.elapsed()
}

async fn ledger_ratio(url: &str) -> (Duration, Duration) {
    // Benchmarks on PostgreSQL keep their blobs in a temporary store.
    let blobs = agora_market::store::BlobStore::beside(url)
        .unwrap()
        .unwrap_or_else(|| agora_market::store::BlobStore::temporary().unwrap());
    let db = Db::connect_with(url, blobs).await.unwrap();
    let ledger = Ledger::new(db.clone());
    let (buyer, seller) = (
        Keypair::generate().id().to_string(),
        Keypair::generate().id().to_string(),
    );
    ledger
        .execute(
            "fund",
            &Op::Mint {
                account: buyer.clone(),
                amount: 1 << 40,
            },
            0,
        )
        .await
        .unwrap();
    ledger
        .execute(
            "seller",
            &Op::Mint {
                account: seller.clone(),
                amount: 1,
            },
            0,
        )
        .await
        .unwrap();
    // Interleave rounds so drift affects both alike; medians.
    let (mut ours, mut bare) = (Vec::new(), Vec::new());
    for round in 0..3 {
        ours.push(ledger_pairs(&ledger, &buyer, &seller, &round.to_string()).await);
        bare.push(bare_pairs(&db, &buyer, &seller, &round.to_string()).await);
    }
    let report = ledger.check_invariants().await.unwrap();
    assert!(
        report.ok,
        "the bare statements kept the books too: {:?}",
        report.violations
    );
    ours.sort();
    bare.sort();
    (ours[1], bare[1])
}

fn throughput_row(name: &str, ours: Duration, bare: Duration, goal: f64, unit: &str, count: f64) {
    let ratio = bare.as_secs_f64() / ours.as_secs_f64();
    println!(
        "{name:<46} {:>12.0} {:>12.0} {unit:<8} {ratio:>6.2}x {:>6.2} {}",
        count / ours.as_secs_f64(),
        count / bare.as_secs_f64(),
        goal,
        if ratio >= goal { "ok" } else { "MISS" }
    );
}

/// The median of three downloads of a 256 MiB blob through the market's
/// download path, and of three plain reads of its object file.
async fn download_ratio(dir: &std::path::Path) -> (Duration, Duration) {
    use futures_util::StreamExt;
    let db = Db::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.join("download.db").display()
    ))
    .await
    .unwrap();
    let bytes: Vec<u8> = (0..256u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let digest = agora_wire::digest_hex(&bytes);
    let mut staged = agora_market::blobs::Staged::write(&db, [(digest.clone(), bytes.into())])
        .await
        .unwrap();
    let mut tx = db.write().await.unwrap();
    staged
        .record(&mut tx, agora_market::blobs::Pin::Kept)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    staged.settle().await;
    let file = std::path::Path::new(&*db.blobs.location).join(
        agora_market::blobs::object_of(&db, &digest)
            .await
            .unwrap()
            .unwrap(),
    );
    let downloads = agora_market::blobs::Downloads::default();
    let (mut ours, mut bare) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let t = Instant::now();
        let response = downloads
            .serve(
                &db,
                &digest,
                &Default::default(),
                None,
                "application/octet-stream",
            )
            .await
            .unwrap();
        let mut pieces = response.into_body().into_data_stream();
        let mut total = 0;
        while let Some(piece) = pieces.next().await {
            total += piece.unwrap().len();
        }
        assert_eq!(total, 256 << 20);
        ours.push(t.elapsed());
        let t = Instant::now();
        let mut reader = std::fs::File::open(&file).unwrap();
        let (mut buffer, mut total) = (vec![0u8; 1 << 20], 0);
        loop {
            let n = std::io::Read::read(&mut reader, &mut buffer).unwrap();
            if n == 0 {
                break;
            }
            total += std::hint::black_box(n);
        }
        assert_eq!(total, 256 << 20);
        bare.push(t.elapsed());
    }
    ours.sort();
    bare.sort();
    (ours[1], bare[1])
}

/// Rounds of the 1 GiB transfers: each round times an upload, a download
/// and the copies in turn, so each ratio compares times taken side by side
/// (this machine's disk and memory speeds drift by several times over a
/// minute).
const TRANSFER_ROUNDS: usize = 5;

/// Of rounds timing ours and a baseline side by side, the round whose
/// ratio is the median: its times.
fn median_round(ours: &[Duration], bare: &[Duration]) -> (Duration, Duration) {
    let mut rounds: Vec<(Duration, Duration)> =
        ours.iter().copied().zip(bare.iter().copied()).collect();
    rounds.sort_by(|a, b| {
        let ratio = |(o, b): &(Duration, Duration)| b.as_secs_f64() / o.as_secs_f64();
        ratio(a).total_cmp(&ratio(b))
    });
    rounds[rounds.len() / 2]
}

/// Per round: a 1 GiB upload through a market on loopback, the download
/// back, and copies of the file (plain, and synced); and what a resumed
/// upload sent of the whole.
#[allow(clippy::type_complexity)]
fn transfer_ratio(dir: &std::path::Path) -> ([Vec<Duration>; 4], u64) {
    use agora_wire::client::Client;
    const SIZE: u64 = 1 << 30;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let operator = Keypair::generate();
    let mut config = agora_market::Config::new(operator.id().clone());
    config.public_origins = vec![base.clone()];
    let db = runtime
        .block_on(Db::connect(&format!(
            "sqlite://{}?mode=rwc",
            dir.join("transfer.db").display()
        )))
        .unwrap();
    let state = agora_market::AppState::new(db, config);
    runtime.spawn(agora_market::serve(listener, state, std::future::pending()));
    let buyer = Keypair::generate();
    let mint = serde_json::json!({"id": "bench-fund", "account": buyer.id(), "amount": 100_000});
    let _: serde_json::Value = Client::new(&base, Some(operator))
        .post("/api/v1/mint", &mint, None)
        .unwrap();
    let client = Client::new(&base, Some(buyer));
    let source = dir.join("one.gib");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&source).unwrap());
    for i in 0..(SIZE >> 20) as u32 {
        let piece: Vec<u8> = (0..1u32 << 20)
            .map(|j| ((i << 20 | j).wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        std::io::Write::write_all(&mut file, &piece).unwrap();
    }
    drop(file);
    let (mut up, mut down, mut copy, mut synced) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut digest = String::new();
    for _ in 0..TRANSFER_ROUNDS {
        let t = Instant::now();
        let info = client.upload_file(&source, &mut |_, _, _| {}).unwrap();
        up.push(t.elapsed());
        digest = info.digest.clone();
        let t = Instant::now();
        let target = dir.join("downloaded");
        let mut sink = HashingFile::create(&target);
        assert_eq!(
            client
                .download_signed(&format!("/api/v1/blobs/{digest}"), &mut sink)
                .unwrap(),
            SIZE
        );
        assert_eq!(sink.digest(), digest, "the receiver checks what it got");
        down.push(t.elapsed());
        let t = Instant::now();
        std::fs::copy(&source, dir.join("copied")).unwrap();
        copy.push(t.elapsed());
        let t = Instant::now();
        std::fs::copy(&source, dir.join("synced")).unwrap();
        std::fs::File::open(dir.join("synced"))
            .unwrap()
            .sync_all()
            .unwrap();
        synced.push(t.elapsed());
        // Let the blob go, so the next round uploads it again.
        let _: serde_json::Value = client.delete(&format!("/api/v1/blobs/{digest}")).unwrap();
    }
    // Interrupted after a third of its chunks: the rest is what goes.
    let begun: agora_wire::api::UploadInfo = client
        .post("/api/v1/uploads", &new_upload(&source), None)
        .unwrap();
    let upload = begun.upload.unwrap();
    let mut chunk = vec![0u8; agora_wire::chunks::UPLOAD_CHUNK_BYTES as usize];
    let mut reader = std::fs::File::open(&source).unwrap();
    for index in 0..begun.missing.len() as u64 / 3 {
        std::io::Read::read_exact(&mut reader, &mut chunk).unwrap();
        let _: agora_wire::api::ChunkReceived = client
            .put_bytes(&format!("/api/v1/uploads/{upload}/chunks/{index}"), &chunk)
            .unwrap();
    }
    let mut first_sent = None;
    client
        .upload_file(&source, &mut |stage, done, _| {
            if stage == agora_wire::upload::UploadStage::Sending && first_sent.is_none() {
                first_sent = Some(done);
            }
        })
        .unwrap();
    let resumed_sent = SIZE - first_sent.unwrap();
    let _ = digest;
    ([up, down, copy, synced], resumed_sent)
}

/// What `POST /api/v1/uploads` is sent for the file at `path`.
fn new_upload(path: &std::path::Path) -> agora_wire::api::NewUpload {
    let bytes = std::fs::read(path).unwrap();
    let mut chunker = agora_wire::chunks::Chunker::new(
        bytes.len() as u64,
        agora_wire::chunks::UPLOAD_CHUNK_BYTES,
    );
    chunker.update(&bytes);
    let (digest, values) = chunker.finish().unwrap();
    agora_wire::api::NewUpload {
        digest: digest.to_hex().to_string(),
        size: bytes.len() as u64,
        chunk_values: values.iter().map(hex::encode).collect(),
    }
}

/// A file that hashes what is written to it on a thread of its own (a
/// receiver checking a download while it arrives).
struct HashingFile {
    file: std::fs::File,
    pieces: Option<std::sync::mpsc::Sender<Vec<u8>>>,
    hasher: Option<std::thread::JoinHandle<blake3::Hash>>,
}

impl HashingFile {
    fn create(path: &std::path::Path) -> HashingFile {
        let (pieces, arriving) = std::sync::mpsc::channel::<Vec<u8>>();
        let hasher = std::thread::spawn(move || {
            let mut hasher = blake3::Hasher::new();
            arriving.iter().for_each(|piece| {
                hasher.update(&piece);
            });
            hasher.finalize()
        });
        HashingFile {
            file: std::fs::File::create(path).unwrap(),
            pieces: Some(pieces),
            hasher: Some(hasher),
        }
    }

    fn digest(mut self) -> String {
        drop(self.pieces.take());
        self.hasher
            .take()
            .unwrap()
            .join()
            .unwrap()
            .to_hex()
            .to_string()
    }
}

impl std::io::Write for HashingFile {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(bytes)?;
        self.pieces
            .as_ref()
            .unwrap()
            .send(bytes[..n].to_vec())
            .unwrap();
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!("\nagora market benchmarks (throughput: ours, baseline; ratio = ours / baseline)\n");
    println!(
        "{:<46} {:>12} {:>12} {:<8} {:>7} {:>6}",
        "case", "ours", "baseline", "unit", "ratio", "goal"
    );

    let dir = std::env::temp_dir().join(format!("agora-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = format!("sqlite://{}?mode=rwc", dir.join("bench.db").display());
    let (ours, bare) = runtime.block_on(ledger_ratio(&sqlite));
    throughput_row(
        "hold+post, SQLite file",
        ours,
        bare,
        0.3,
        "pairs/s",
        PAIRS as f64,
    );

    let pg = std::env::var("AGORA_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("agora_bench_{}", std::process::id());
    let result = runtime.block_on(async {
        let admin = Db::admin_pool(&pg).await?;
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await?;
        let measured = ledger_ratio(&format!("{pg}?options=-c%20search_path%3D{schema}")).await;
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&admin)
            .await?;
        Ok::<_, sqlx::Error>(measured)
    });
    match result {
        Ok((ours, bare)) => throughput_row(
            "hold+post, PostgreSQL",
            ours,
            bare,
            0.3,
            "pairs/s",
            PAIRS as f64,
        ),
        Err(e) => println!("hold+post, PostgreSQL: skipped, no database at {pg}: {e}"),
    }

    let (ours, bare) = runtime.block_on(download_ratio(&dir));
    throughput_row(
        "download, 256 MiB from a directory store",
        ours,
        bare,
        0.5,
        "MiB/s",
        256.0,
    );
    let ([up, down, copy, synced], resumed) = transfer_ratio(&dir);
    let (ours, bare) = median_round(&up, &copy);
    throughput_row(
        "upload 1 GiB on loopback vs copying it",
        ours,
        bare,
        0.5,
        "MiB/s",
        1024.0,
    );
    // An upload is durable before it is held: against a copy that is too.
    let (ours, bare) = median_round(&up, &synced);
    throughput_row(
        "upload 1 GiB vs copying and syncing it",
        ours,
        bare,
        0.5,
        "MiB/s",
        1024.0,
    );
    let (ours, bare) = median_round(&down, &copy);
    throughput_row(
        "download 1 GiB on loopback vs copying it",
        ours,
        bare,
        0.5,
        "MiB/s",
        1024.0,
    );
    println!(
        "{:<46} {resumed} of {} bytes sent by the resumed upload",
        "resumed upload, a third sent before",
        1u64 << 30
    );
    let _ = std::fs::remove_dir_all(&dir);

    // Digests: 64 MiB, the largest component.
    let bytes: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let (mut ours, mut bare) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = Instant::now();
        std::hint::black_box(agora_wire::digest_hex(&bytes));
        ours.push(t.elapsed());
        let t = Instant::now();
        let mut hasher = blake3::Hasher::new();
        hasher.update(&bytes);
        std::hint::black_box(hasher.finalize());
        bare.push(t.elapsed());
    }
    ours.sort();
    bare.sort();
    throughput_row(
        "component digest (blake3, 64 MiB)",
        ours[2],
        bare[2],
        0.95,
        "MiB/s",
        64.0,
    );

    // Signatures: 2,000 checks.
    let key = Keypair::generate();
    let messages: Vec<Vec<u8>> = (0..2000)
        .map(|i| {
            agora_wire::auth::signed_bytes(
                "https://market.example.org",
                "POST",
                "/api/v1/transfers",
                i,
                "nonce",
                b"{}",
            )
        })
        .collect();
    let signatures: Vec<String> = messages.iter().map(|m| key.sign(m)).collect();
    let verifying = key.id().verifying_key();
    let parsed: Vec<ed25519_dalek::Signature> = signatures
        .iter()
        .map(|s| ed25519_dalek::Signature::from_bytes(&hex::decode(s).unwrap().try_into().unwrap()))
        .collect();
    let t = Instant::now();
    for (m, s) in messages.iter().zip(&signatures) {
        key.id().verify(m, s).unwrap();
    }
    let ours = t.elapsed();
    let t = Instant::now();
    for (m, s) in messages.iter().zip(&parsed) {
        verifying.verify_strict(m, s).unwrap();
    }
    let bare = t.elapsed();
    throughput_row(
        "signature checks (ed25519 verify_strict)",
        ours,
        bare,
        0.95,
        "per s",
        messages.len() as f64,
    );
}
