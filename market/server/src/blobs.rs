//! The blob store's records: what a blob is (digest, size, pin) and which
//! object holds its bytes, in the `blobs` table; the bytes in the object
//! store ([`crate::store`]) — components, browser bundle files, canaries'
//! inputs and answers, units' inputs and outputs — one record per digest,
//! shared by every record that names it.
//!
//! It owns storing blobs ([`Staged`]), reading one ([`read`]), collecting
//! one that no record needs any more ([`collect`]) and serving downloads
//! ([`Downloads`]). A blob the registry or a canary stores is
//! [`Pin::Kept`]: public or operator data, never collected, whoever else
//! stored the same bytes. A job's blob lives while a job whose data is kept
//! names it (as a unit's input or output, a lease's output or a shared
//! input) or an account holds it (uploaded it: [`crate::uploads`]).
//!
//! No store I/O holds a database lock, and no record ever names an object
//! that is gone:
//! - a blob's bytes are written first, under a key of their own, before
//!   the transaction that records them ([`Staged::write`]); a blob the
//!   market already holds is not written again;
//! - the transaction upserts the record ([`Staged::record`]): a new record
//!   names the staged object; an existing one keeps its own (and its pin
//!   can only be raised). In the rare case where the record went between
//!   the write and the transaction, the bytes are written then, under the
//!   record's new key;
//! - a collection deletes the record in its transaction and removes the
//!   object after the commit ([`collect`] returns its key): a removal that
//!   lands late can only hit the object of a record already gone, because
//!   no key is ever named twice;
//! - after the commit, each staged object that no committed record names
//!   is removed ([`Staged::settle`]); when the transaction never commits,
//!   the same a minute later (`Staged`'s drop: a commit whose answer was
//!   lost may still be landing): a refused submit, a late duplicate result
//!   or a concurrent publish leaves nothing behind. Only a crash between a
//!   write and its cleanup leaves an object no record names (disk, never a
//!   lost blob);
//! - a record whose object is gone (a crash of the disk, a restored backup)
//!   is mended by the next store of its bytes.
//!
//! A store and a collection of one digest never interleave in the table:
//! the upsert always writes the row, and [`collect`] writes the row before
//! it looks for records naming it. On PostgreSQL the second waits for the
//! first's row lock; a collection's reference check is a new statement, so
//! under READ COMMITTED it sees a store committed meanwhile. On SQLite
//! writers take turns.

use crate::db::{Db, Tx};
use crate::error::ApiError;
use crate::store::{ByteStream, StoreError};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Who a stored blob is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pin {
    /// A job's input or output: collected when no kept job names it.
    Job,
    /// The registry's or a canary's: never collected.
    Kept,
}

/// Blobs written to the object store ahead of the transaction that
/// records them (see the module's note). Keep it until that transaction
/// has committed or been dropped, then [`Staged::settle`] it (or drop it):
/// the objects no committed record names are removed.
pub struct Staged {
    db: Db,
    items: Vec<Item>,
    /// Whether the commit and its cleanup ran.
    settled: bool,
}

/// One staged blob.
struct Item {
    digest: String,
    size: u64,
    /// The bytes, to write; None for an object written already
    /// ([`Staged::adopt`]).
    bytes: Option<Bytes>,
    /// The object key a new record of it names.
    key: String,
    /// Whether the object under `key` was written.
    written: bool,
}

impl Staged {
    /// Write each of `blobs` (digest and bytes; the caller checked the
    /// digests) that the market does not hold yet, each under a key of its
    /// own. Outside any transaction.
    pub async fn write(
        db: &Db,
        blobs: impl IntoIterator<Item = (String, Bytes)>,
    ) -> Result<Staged, ApiError> {
        let mut items: Vec<Item> = blobs
            .into_iter()
            .map(|(digest, bytes)| Item {
                key: crate::store::BlobStore::new_key(&digest),
                digest,
                size: bytes.len() as u64,
                bytes: Some(bytes),
                written: false,
            })
            .collect();
        // In digest order, each once: transactions recording blobs in common
        // take their rows in one order, never in a cycle.
        items.sort_unstable_by(|a, b| a.digest.cmp(&b.digest));
        items.dedup_by(|a, b| a.digest == b.digest);
        let mut staged = Staged {
            db: db.clone(),
            items,
            settled: false,
        };
        for item in &mut staged.items {
            // Held: a record names an object that is there (one gone, by a
            // crash or a restored backup, is written again and named in
            // `record`).
            let named = object_of(db, &item.digest).await?;
            let held = match named {
                Some(key) => db.blobs.exists(&key).await?,
                None => false,
            };
            if !held {
                db.blobs
                    .write(&item.key, item.bytes.clone().expect("bytes to write"))
                    .await?;
                item.written = true;
            }
        }
        Ok(staged)
    }

    /// A blob whose object was written under `key` already (an upload's,
    /// joined from its chunks): recorded like a written one, and removed by
    /// [`Staged::settle`] when no committed record names it, never by a
    /// drop (the upload names it still when its transaction did not commit).
    pub fn adopt(db: &Db, digest: String, size: u64, key: String) -> Staged {
        Staged {
            db: db.clone(),
            items: vec![Item {
                digest,
                size,
                bytes: None,
                key,
                written: true,
            }],
            settled: false,
        }
    }

    /// Whether blob `digest` is staged here.
    pub fn has(&self, digest: &str) -> bool {
        self.items.iter().any(|i| i.digest == digest)
    }

    /// Record the staged blobs in `tx`, pinned as `pin` (or kept pinned).
    pub async fn record(&mut self, tx: &mut Tx, pin: Pin) -> Result<(), ApiError> {
        self.record_locking(tx, pin, &[]).await
    }

    /// [`Staged::record`], and lock the rows of the stored blobs
    /// `referenced` too (a job naming uploaded blobs), all in digest order so
    /// that no two transactions wait on each other's rows. A referenced blob
    /// that is not there is refused as not found.
    pub async fn record_locking(
        &mut self,
        tx: &mut Tx,
        pin: Pin,
        referenced: &[String],
    ) -> Result<(), ApiError> {
        let mut order: Vec<(String, Option<usize>)> = self
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| (item.digest.clone(), Some(i)))
            .collect();
        order.extend(
            referenced
                .iter()
                .filter(|d| !self.has(d))
                .map(|d| (d.clone(), None)),
        );
        order.sort_unstable();
        order.dedup_by(|a, b| a.0 == b.0);
        for (digest, staged) in order {
            match staged {
                Some(i) => self.record_item(tx, pin, i).await?,
                None => {
                    if !lock(tx, &digest).await? {
                        return Err(ApiError::NotFound(format!("no blob {digest}")));
                    }
                }
            }
        }
        Ok(())
    }

    async fn record_item(&mut self, tx: &mut Tx, pin: Pin, i: usize) -> Result<(), ApiError> {
        let item = &mut self.items[i];
        let named: Option<String> = sqlx::query_scalar(
            "INSERT INTO blobs (digest, size, pinned, object) VALUES ($1, $2, $3, $4)
             ON CONFLICT (digest) DO UPDATE SET pinned = CASE WHEN excluded.pinned = 1 THEN 1 ELSE blobs.pinned END
             RETURNING object",
        )
        .bind(&item.digest)
        .bind(item.size as i64)
        .bind(i64::from(pin == Pin::Kept))
        .bind(&item.key)
        .fetch_one(&mut **tx)
        .await?;
        let named = named.unwrap_or_default();
        if named == item.key && !item.written {
            // A new record whose bytes were held when staged: the record
            // that held them went since. Written now.
            self.db
                .blobs
                .write(
                    &item.key,
                    item.bytes.clone().expect("an adopted object is written"),
                )
                .await?;
            item.written = true;
        } else if named != item.key && item.written && !self.db.blobs.exists(&named).await? {
            // The record names an object that is gone: it names the one
            // written here instead (its row is this transaction's now).
            sqlx::query("UPDATE blobs SET object = $2 WHERE digest = $1")
                .bind(&item.digest)
                .bind(&item.key)
                .execute(&mut **tx)
                .await?;
            tracing::warn!(
                digest = item.digest,
                gone = named,
                "a blob's object was missing; stored again"
            );
        }
        Ok(())
    }

    /// Once the transaction that recorded these blobs has committed (or
    /// failed): remove each staged object no committed record names.
    pub async fn settle(mut self) {
        self.settled = true;
        remove_unnamed(&self.db, self.written()).await;
    }

    /// The digests and keys of the objects written here.
    fn written(&self) -> Vec<(String, String)> {
        self.items
            .iter()
            .filter(|i| i.written)
            .map(|i| (i.digest.clone(), i.key.clone()))
            .collect()
    }
}

/// How long a `Staged` dropped without [`Staged::settle`] waits before it
/// removes its unnamed objects: its transaction may have ended in a commit
/// whose answer was lost, still landing (a synchronous standby, say); past
/// this its record is visible, or there is none.
const UNSETTLED_CLEANUP_DELAY: Duration = Duration::from_secs(60);

impl Drop for Staged {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Only objects written here: an adopted one is its upload's.
        let written: Vec<(String, String)> = self
            .items
            .iter()
            .filter(|i| i.written && i.bytes.is_some())
            .map(|i| (i.digest.clone(), i.key.clone()))
            .collect();
        let db = self.db.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if !written.is_empty() => {
                runtime.spawn(async move {
                    tokio::time::sleep(UNSETTLED_CLEANUP_DELAY).await;
                    remove_unnamed(&db, written).await;
                });
            }
            Ok(_) => {}
            Err(_) => tracing::warn!(
                objects = written.len(),
                "staged objects left in the store (no runtime to remove them)"
            ),
        }
    }
}

/// Remove each object of `written` (digest, key) that no committed record
/// names: a new record names the key staged for it, and no other record
/// ever will.
async fn remove_unnamed(db: &Db, written: Vec<(String, String)>) {
    for (digest, key) in written {
        let named: Result<Option<i64>, sqlx::Error> =
            sqlx::query_scalar("SELECT 1 FROM blobs WHERE digest = $1 AND object = $2")
                .bind(&digest)
                .bind(&key)
                .fetch_optional(&db.pool)
                .await;
        match named {
            Ok(Some(_)) => {}
            Ok(None) => {
                if let Err(e) = db.blobs.remove(&key).await {
                    tracing::warn!(key, "an unused staged object stays in the store: {e}");
                }
            }
            Err(e) => tracing::warn!(
                key,
                "an unused staged object stays in the store (its record could not be looked up): {e}"
            ),
        }
    }
}

/// What a blob is, as its record says.
struct Record {
    size: u64,
    object: String,
}

/// The record of blob `digest`, when there is one.
async fn record_of(db: &Db, digest: &str) -> Result<Record, ApiError> {
    let row: Option<(i64, Option<String>)> =
        sqlx::query_as("SELECT size, object FROM blobs WHERE digest = $1")
            .bind(digest)
            .fetch_optional(&db.pool)
            .await?;
    match row {
        Some((size, Some(object))) => Ok(Record {
            size: size as u64,
            object,
        }),
        Some((_, None)) => Err(ApiError::Internal(format!(
            "blob {digest}'s bytes were never moved into the object store"
        ))),
        None => Err(ApiError::NotFound(format!("no blob {digest}"))),
    }
}

/// The object key blob `digest`'s record names, when there is one.
pub async fn object_of(db: &Db, digest: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar::<_, Option<String>>("SELECT object FROM blobs WHERE digest = $1")
        .bind(digest)
        .fetch_optional(&db.pool)
        .await
        .map(Option::flatten)
}

/// The bytes of `digest`, whole (the market's own reads: a verifier's
/// input and output, a component to run).
pub async fn read(db: &Db, digest: &str) -> Result<Vec<u8>, ApiError> {
    let record = record_of(db, digest).await?;
    Ok(db.blobs.read(&record.object).await?.to_vec())
}

/// Take the row lock of blob `digest`'s record for the rest of `tx` (a
/// write that changes nothing); whether there is a record.
pub async fn lock(tx: &mut Tx, digest: &str) -> Result<bool, sqlx::Error> {
    let locked = sqlx::query("UPDATE blobs SET pinned = pinned WHERE digest = $1")
        .bind(digest)
        .execute(&mut **tx)
        .await?;
    Ok(locked.rows_affected() == 1)
}

/// Delete the record of `digest` if nothing needs it any more: not kept,
/// named by no unit, lease, lease upload or shared input of a job whose data is kept, and
/// held by no account that uploaded it. Returns the
/// key of its object, for the caller to remove once `tx` has committed.
pub async fn collect(tx: &mut Tx, digest: &str) -> Result<Option<String>, sqlx::Error> {
    // The row lock first (see the module's note on races).
    lock(tx, digest).await?;
    let object: Option<Option<String>> = sqlx::query_scalar(
        "DELETE FROM blobs WHERE digest = $1 AND pinned = 0
           AND NOT EXISTS (SELECT 1 FROM units u JOIN jobs j ON j.id = u.job_id WHERE u.input_digest = $1 AND j.data_deleted_at_ms IS NULL)
           AND NOT EXISTS (SELECT 1 FROM units u JOIN jobs j ON j.id = u.job_id WHERE u.output_digest = $1 AND j.data_deleted_at_ms IS NULL)
           AND NOT EXISTS (SELECT 1 FROM leases l JOIN jobs j ON j.id = l.job_id WHERE l.output_digest = $1 AND j.data_deleted_at_ms IS NULL)
           AND NOT EXISTS (SELECT 1 FROM job_shared s JOIN jobs j ON j.id = s.job_id WHERE s.digest = $1 AND j.data_deleted_at_ms IS NULL)
           AND NOT EXISTS (SELECT 1 FROM lease_uploads lu JOIN leases l ON l.id = lu.lease_id JOIN jobs j ON j.id = l.job_id WHERE lu.digest = $1 AND j.data_deleted_at_ms IS NULL)
           AND NOT EXISTS (SELECT 1 FROM holdings h WHERE h.digest = $1)
         RETURNING object",
    )
    .bind(digest)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(object.flatten())
}

/// Remove the objects of records collected in a committed transaction
/// (a failure leaves an object no record names: logged, never retried).
pub async fn remove_collected(db: &Db, keys: Vec<String>) {
    for key in keys {
        if let Err(e) = db.blobs.remove(&key).await {
            tracing::warn!(key, "a collected blob's object stays in the store: {e}");
        }
    }
}

/// Move the bytes of blob records written before the object store (the
/// migration `object_store` kept them in the table) into the store, one
/// record at a time in digest order. Run at start, before the market
/// serves; returns how many moved.
pub async fn move_into_store(db: &Db) -> Result<u64, crate::db::DbError> {
    let mut moved = 0;
    let mut after = String::new();
    loop {
        let next: Option<(String, Vec<u8>)> =
            sqlx::query_as("SELECT digest, bytes FROM blobs WHERE digest > $1 AND bytes IS NOT NULL ORDER BY digest LIMIT 1").bind(&after).fetch_optional(&db.pool).await?;
        let Some((digest, bytes)) = next else {
            return Ok(moved);
        };
        let key = crate::store::BlobStore::new_key(&digest);
        db.blobs.write(&key, Bytes::from(bytes)).await?;
        let claimed = sqlx::query(
            "UPDATE blobs SET object = $2, bytes = NULL WHERE digest = $1 AND object IS NULL",
        )
        .bind(&digest)
        .bind(&key)
        .execute(&db.pool)
        .await?;
        if claimed.rows_affected() == 0 {
            // Another replica moved it first.
            db.blobs.remove(&key).await?;
        } else {
            moved += 1;
        }
        after = digest;
    }
}

/// Longest a download may go without its reader taking a piece: past it,
/// it is cut and what it holds (its object's reader, its slot among its
/// address's downloads) is given back, so a reader taking a byte a minute
/// holds nothing for hours (a slow but steady one is served to the end).
pub const DOWNLOAD_STALL: Duration = Duration::from_secs(30);
/// Downloads one peer address may have in flight at once.
pub const DOWNLOADS_PER_PEER: usize = 4;
/// Downloads in flight at once, all addresses together (loopback too:
/// behind a proxy on this machine every caller is loopback), each holding
/// an open object (a file, or a connection to the store). Past it: 503.
pub const DOWNLOADS_IN_FLIGHT: usize = 1_024;

/// Blob downloads: streamed from the object store a piece at a time (the
/// market holds two pieces per download at most, whatever the blob's size), with
/// ranges and validators.
#[derive(Clone)]
pub struct Downloads {
    stall: Duration,
    /// Downloads in flight per peer address ([`DOWNLOADS_PER_PEER`]) and
    /// in all (`in_all`).
    peers: Arc<crate::tally::Tally<std::net::IpAddr>>,
    in_all: usize,
}

impl Default for Downloads {
    fn default() -> Self {
        Downloads {
            stall: DOWNLOAD_STALL,
            peers: Arc::default(),
            in_all: DOWNLOADS_IN_FLIGHT,
        }
    }
}

/// What a download holds until it is sent, cut or dropped.
struct Held {
    /// The object's bytes not sent yet.
    pieces: ByteStream,
    /// Its slot among the downloads in flight.
    _slot: crate::tally::Slot<std::net::IpAddr>,
    /// When its reader last took a piece.
    taken_at: tokio::time::Instant,
}

/// Where a download is, as its body stream and its watchdog see it.
enum Holding {
    /// Waiting for its reader to ask for the next piece.
    Idle(Held),
    /// Its reader asked: the next piece is being read from the store.
    Reading,
    /// Sent, dropped, or cut for stalling: it holds nothing.
    Done,
}

type Shared = Arc<Mutex<Holding>>;

impl Downloads {
    /// These downloads, cut after `stall` instead of [`DOWNLOAD_STALL`]
    /// (tests).
    pub fn with_stall(self, stall: Duration) -> Self {
        Downloads { stall, ..self }
    }

    /// These downloads, at most `in_all` at once instead of
    /// [`DOWNLOADS_IN_FLIGHT`] (tests).
    pub fn with_cap(self, in_all: usize) -> Self {
        Downloads { in_all, ..self }
    }

    /// The response for a GET of blob `digest` as `content_type`, with
    /// `headers` of the request: `ETag` (the digest: a blob never changes)
    /// and 304 for a matching `If-None-Match`; one `Range` of bytes as 206,
    /// or 416 past the end (a malformed or multi-part range, or any range
    /// of an empty blob, gets the whole blob, as HTTP allows). The bytes
    /// are the store's: a receiver checks them against the digest.
    pub async fn serve(
        &self,
        db: &Db,
        digest: &str,
        request: &HeaderMap,
        peer: Option<std::net::IpAddr>,
        content_type: &'static str,
    ) -> Result<Response, ApiError> {
        let record = record_of(db, digest).await?;
        let length = record.size;
        let etag = format!("\"{digest}\"");
        let validators = [
            (header::ETAG, etag.clone()),
            (header::ACCEPT_RANGES, "bytes".to_string()),
        ];
        let if_none_match = request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok());
        if if_none_match
            .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
        {
            return Ok((StatusCode::NOT_MODIFIED, validators).into_response());
        }
        let range = match wanted_range(request, length) {
            Ok(range) => range,
            Err(()) => {
                let unsatisfiable = [(header::CONTENT_RANGE, format!("bytes */{length}"))];
                return Ok(
                    (StatusCode::RANGE_NOT_SATISFIABLE, validators, unsatisfiable).into_response(),
                );
            }
        };
        // Loopback (the web pages' own reads, a proxy's) is many callers:
        // counted in all, not per address.
        let local = std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST);
        let (address, per_address) = match peer {
            Some(peer) if !peer.is_loopback() => (peer, DOWNLOADS_PER_PEER),
            _ => (local, usize::MAX),
        };
        let slot = self
            .peers
            .enter(&address, per_address, self.in_all)
            .map_err(|refused| match refused {
                crate::tally::Refused::PerKey => ApiError::TooManyAtOnce {
                    what: "downloads in flight",
                    limit: DOWNLOADS_PER_PEER,
                    per: "address",
                },
                crate::tally::Refused::InAll => ApiError::Busy,
            })?;
        let (status, sent_length, content_range) = match &range {
            Some(r) => (
                StatusCode::PARTIAL_CONTENT,
                r.end - r.start,
                Some(format!("bytes {}-{}/{length}", r.start, r.end - 1)),
            ),
            None => (StatusCode::OK, length, None),
        };
        // An empty blob has no object bytes to stream.
        let pieces = match sent_length {
            0 => futures_util::stream::empty().boxed(),
            _ => db.blobs.stream(&record.object, range).await?,
        };
        let held = Held {
            pieces,
            _slot: slot,
            taken_at: tokio::time::Instant::now(),
        };
        let mut response = (
            status,
            validators,
            Body::from_stream(cut_when_stalled(held, self.stall)),
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(sent_length));
        if let Some(content_range) = content_range {
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&content_range).expect("ASCII"),
            );
        }
        Ok(response)
    }
}

/// The one byte range a request asks for, within `length`: None for the
/// whole blob (no range, a malformed or multi-part one, a suffix longer than
/// the blob, or an empty blob), Err for a range past the end.
fn wanted_range(request: &HeaderMap, length: u64) -> Result<Option<std::ops::Range<u64>>, ()> {
    use http_range_header::RangeUnsatisfiableError;
    let Some(Ok(parsed)) = request
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(http_range_header::parse_range_header)
    else {
        return Ok(None);
    };
    if parsed.ranges.len() != 1 || length == 0 {
        return Ok(None);
    }
    match parsed.validate(length) {
        Ok(ranges) => Ok(Some(*ranges[0].start()..*ranges[0].end() + 1)),
        Err(RangeUnsatisfiableError::FileSuffixOutOfBounds) => Ok(None),
        Err(_) => Err(()),
    }
}

/// `held`'s pieces as a body stream that gives back what it holds when
/// the stream ends or is dropped, or when its reader has taken nothing for
/// `stall`: then the connection gets an error instead of the rest.
fn cut_when_stalled(
    held: Held,
    stall: Duration,
) -> impl futures_core::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let shared: Shared = Arc::new(Mutex::new(Holding::Idle(held)));
    let watchdog = Arc::downgrade(&shared);
    tokio::spawn(async move {
        let mut due = tokio::time::Instant::now() + stall;
        loop {
            tokio::time::sleep_until(due).await;
            let Some(shared) = watchdog.upgrade() else {
                return;
            };
            let mut holding = shared.lock().expect("never poisoned");
            let now = tokio::time::Instant::now();
            match &*holding {
                Holding::Done => return,
                Holding::Reading => due = now + stall,
                Holding::Idle(held) if held.taken_at + stall > now => due = held.taken_at + stall,
                Holding::Idle(_) => {
                    *holding = Holding::Done;
                    return;
                }
            }
        }
    });
    struct Releasing(Shared);
    impl Drop for Releasing {
        fn drop(&mut self) {
            *self.0.lock().expect("never poisoned") = Holding::Done;
        }
    }
    futures_util::stream::unfold(Some(Releasing(shared)), |state| async move {
        let releasing = state?;
        let taken = std::mem::replace(
            &mut *releasing.0.lock().expect("never poisoned"),
            Holding::Reading,
        );
        let Holding::Idle(mut held) = taken else {
            return Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the download stalled",
                )),
                None,
            ));
        };
        match held.pieces.next().await {
            Some(Ok(piece)) => {
                held.taken_at = tokio::time::Instant::now();
                *releasing.0.lock().expect("never poisoned") = Holding::Idle(held);
                Some((Ok(piece), Some(releasing)))
            }
            Some(Err(e)) => Some((Err(std::io::Error::other(e)), None)),
            // Sent in full: the rest goes back as `releasing` drops.
            None => None,
        }
    })
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Missing(digest) => {
                ApiError::Internal(format!("blob {digest} has a record but no object"))
            }
            e => ApiError::Internal(e.to_string()),
        }
    }
}
