//! The blob store: content-addressed bytes in the `blobs` table —
//! components, browser bundle files, canaries' inputs and answers, units'
//! inputs and outputs — one row per digest, shared by every record that
//! names it.
//!
//! It owns storing a blob ([`put`]), reading one ([`read`]), and collecting
//! one that no record needs any more ([`collect`]). A blob the registry or a
//! canary stores is [`Pin::Kept`]: public or operator data, never collected,
//! whoever else stored the same bytes. A job's blob lives while a job whose
//! data is kept names it (as a unit's input or output or a lease's output).
//!
//! A store and a collection of one digest never interleave: [`put`] is an
//! upsert that always writes the row, and [`collect`] writes the row before
//! it looks for records naming it. On PostgreSQL the second waits for the
//! first's row lock; a collection's reference check is a new statement, so
//! under READ COMMITTED it sees a store committed meanwhile, and a store
//! after a committed delete inserts the row again. On SQLite writers take
//! turns.

use crate::db::Tx;
use crate::error::ApiError;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sqlx::Row;
use std::collections::VecDeque;
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

/// Store `bytes` under `digest` (the caller has checked that it is their
/// blake3), or mark the stored row kept when `pin` is [`Pin::Kept`].
pub async fn put(tx: &mut Tx, digest: &str, bytes: &[u8], pin: Pin) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO blobs (digest, bytes, pinned) VALUES ($1, $2, $3)
         ON CONFLICT (digest) DO UPDATE SET pinned = CASE WHEN excluded.pinned = 1 THEN 1 ELSE blobs.pinned END",
    )
    .bind(digest)
    .bind(bytes.to_vec())
    .bind(i64::from(pin == Pin::Kept))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The bytes of `digest`.
pub async fn read(pool: &sqlx::AnyPool, digest: &str) -> Result<Vec<u8>, ApiError> {
    let row = sqlx::query("SELECT bytes FROM blobs WHERE digest = $1")
        .bind(digest)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no blob {digest}")))?;
    Ok(row.try_get("bytes")?)
}

/// Delete `digest` if nothing needs it any more: not kept, and named by no
/// unit or lease of a job whose data is kept. Returns whether it went.
pub async fn collect(tx: &mut Tx, digest: &str) -> Result<bool, sqlx::Error> {
    // The row lock first (see the module's note on races).
    sqlx::query("UPDATE blobs SET pinned = pinned WHERE digest = $1").bind(digest).execute(&mut **tx).await?;
    let deleted = sqlx::query(
        "DELETE FROM blobs WHERE digest = $1 AND pinned = 0
           AND NOT EXISTS (SELECT 1 FROM units u JOIN jobs j ON j.id = u.job_id WHERE u.input_digest = $1 AND j.data_deleted_at_ms IS NULL)
           AND NOT EXISTS (SELECT 1 FROM units u JOIN jobs j ON j.id = u.job_id WHERE u.output_digest = $1 AND j.data_deleted_at_ms IS NULL)
           AND NOT EXISTS (SELECT 1 FROM leases l JOIN jobs j ON j.id = l.job_id WHERE l.output_digest = $1 AND j.data_deleted_at_ms IS NULL)",
    )
    .bind(digest)
    .execute(&mut **tx)
    .await?;
    Ok(deleted.rows_affected() > 0)
}

/// Blob bytes held in memory for downloads at once, all downloads
/// together: a download waits for its blob's share
/// ([`DOWNLOAD_QUEUE_WAIT`] at most, then 503 busy), so a flock of callers
/// asking for the largest components cannot exhaust the market's memory.
/// (Blobs live in the database, which hands them over whole; issue 14's
/// object store is what lets a download stream in pieces.)
pub const DOWNLOAD_BYTES_IN_FLIGHT: u64 = 1 << 30;
/// Longest a download waits for its share of [`DOWNLOAD_BYTES_IN_FLIGHT`].
pub const DOWNLOAD_QUEUE_WAIT: Duration = Duration::from_secs(10);
/// Longest a download may go without its reader taking a piece: past it,
/// what it has not sent is freed and its share given back, so a reader
/// taking a byte a minute cannot hold the budget (a slow but steady one,
/// a piece every half minute, is served to the end).
pub const DOWNLOAD_STALL: Duration = Duration::from_secs(30);
/// Downloads one peer address may have in flight: with the largest
/// components, a sixteenth of the budget each, one address holds at most a
/// quarter of it.
pub const DOWNLOADS_PER_PEER: usize = 4;
/// The unit the in-flight budget is counted in (a semaphore's permits).
pub const BUDGET_UNIT: u64 = 64 << 10;
/// Pieces a held blob is handed to the connection in, each its own
/// allocation, so the pieces not sent are freed when a download is cut.
const PIECE_BYTES: usize = 256 << 10;

/// Blob downloads: the shared in-memory budget, ranges, and validators.
#[derive(Clone)]
pub struct Downloads {
    budget: Arc<tokio::sync::Semaphore>,
    wait: Duration,
    stall: Duration,
    /// Downloads in flight per peer address ([`DOWNLOADS_PER_PEER`]).
    peers: Arc<crate::tally::Tally<std::net::IpAddr>>,
}

impl Default for Downloads {
    fn default() -> Self {
        Downloads::with_budget(DOWNLOAD_BYTES_IN_FLIGHT, DOWNLOAD_QUEUE_WAIT)
    }
}

/// What a download holds until it is sent, cut or dropped.
struct Held {
    /// Pieces not taken yet.
    pieces: VecDeque<Bytes>,
    /// Their share of the budget, given back piece by piece.
    share: tokio::sync::OwnedSemaphorePermit,
    /// Its slot among its peer's downloads.
    _peer: Option<crate::tally::Slot<std::net::IpAddr>>,
    /// When its reader last took a piece.
    taken_at: tokio::time::Instant,
}

type Holding = Arc<Mutex<Option<Held>>>;

impl Held {
    /// The next piece for the reader, its share given back.
    fn take_piece(&mut self) -> Option<Bytes> {
        let piece = self.pieces.pop_front()?;
        self.taken_at = tokio::time::Instant::now();
        let units = budget_units(piece.len() as u64).min(self.share.num_permits());
        drop(self.share.split(units));
        Some(piece)
    }
}

impl Downloads {
    /// Downloads holding at most `bytes` at once, a download waiting `wait`
    /// at most for its share (the market uses [`DOWNLOAD_BYTES_IN_FLIGHT`]
    /// and [`DOWNLOAD_QUEUE_WAIT`]; tests use less).
    pub fn with_budget(bytes: u64, wait: Duration) -> Self {
        Downloads { budget: Arc::new(tokio::sync::Semaphore::new((bytes / BUDGET_UNIT) as usize)), wait, stall: DOWNLOAD_STALL, peers: Arc::default() }
    }

    /// These downloads, cut after `stall` instead of [`DOWNLOAD_STALL`]
    /// (tests).
    pub fn with_stall(self, stall: Duration) -> Self {
        Downloads { stall, ..self }
    }

    /// The response for a GET of blob `digest` as `content_type`, with
    /// `headers` of the request: `ETag` (the digest: a blob never changes)
    /// and 304 for a matching `If-None-Match`; one `Range` of bytes as 206,
    /// or 416 past the end (a malformed or multi-part range, or any range
    /// of an empty blob, gets the whole blob, as HTTP allows).
    pub async fn serve(
        &self,
        pool: &sqlx::AnyPool,
        digest: &str,
        request: &HeaderMap,
        peer: Option<std::net::IpAddr>,
        content_type: &'static str,
    ) -> Result<Response, ApiError> {
        let length: i64 = sqlx::query("SELECT CAST(LENGTH(bytes) AS BIGINT) AS n FROM blobs WHERE digest = $1")
            .bind(digest)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no blob {digest}")))?
            .try_get("n")?;
        let length = length as u64;
        let etag = format!("\"{digest}\"");
        let validators = [(header::ETAG, etag.clone()), (header::ACCEPT_RANGES, "bytes".to_string())];
        let if_none_match = request.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
        if if_none_match.is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*")) {
            return Ok((StatusCode::NOT_MODIFIED, validators).into_response());
        }
        let range = match wanted_range(request, length) {
            Ok(range) => range,
            Err(()) => {
                let unsatisfiable = [(header::CONTENT_RANGE, format!("bytes */{length}"))];
                return Ok((StatusCode::RANGE_NOT_SATISFIABLE, validators, unsatisfiable).into_response());
            }
        };
        // Loopback (the web pages' own reads) is one peer of many callers.
        let peer_slot = match peer.filter(|p| !p.is_loopback()) {
            Some(peer) => Some(
                self.peers
                    .enter(&peer, DOWNLOADS_PER_PEER, usize::MAX)
                    .map_err(|_| ApiError::TooManyAtOnce { what: "downloads in flight", limit: DOWNLOADS_PER_PEER, per: "address" })?,
            ),
            None => None,
        };
        // Twice the blob while its pieces are made from it, then what the
        // pieces hold.
        let share = (2 * budget_units(length)) as u32;
        let mut held = tokio::time::timeout(self.wait, self.budget.clone().acquire_many_owned(share))
            .await
            .map_err(|_| ApiError::Busy)?
            .expect("the download budget is never closed");
        let bytes = read(pool, digest).await?;
        let digest = digest.to_string();
        let (status, pieces, content_range) = tokio::task::spawn_blocking(move || pieces_of(&bytes, &digest, range))
            .await
            .map_err(|e| ApiError::Internal(format!("preparing a download: {e}")))??;
        let sent_length: usize = pieces.iter().map(Bytes::len).sum();
        let kept = pieces.iter().map(|p| budget_units(p.len() as u64)).sum::<usize>();
        drop(held.split(held.num_permits().saturating_sub(kept)));
        let held = Held { pieces, share: held, _peer: peer_slot, taken_at: tokio::time::Instant::now() };
        let mut response = (status, validators, Body::from_stream(cut_when_stalled(held, self.stall))).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(sent_length));
        if let Some(content_range) = content_range {
            headers.insert(header::CONTENT_RANGE, HeaderValue::from_str(&content_range).expect("ASCII"));
        }
        Ok(response)
    }
}

/// Budget units for `bytes` (at least one).
fn budget_units(bytes: u64) -> usize {
    bytes.div_ceil(BUDGET_UNIT).max(1) as usize
}

/// `bytes` checked against `digest` (what is served is what was stored
/// under it), and the part `range` asks for as pieces, each its own
/// allocation; with the status and `Content-Range` to answer.
fn pieces_of(bytes: &[u8], digest: &str, range: Option<std::ops::RangeInclusive<usize>>) -> Result<(StatusCode, VecDeque<Bytes>, Option<String>), ApiError> {
    if agora_wire::digest_hex(bytes) != digest {
        return Err(ApiError::Internal(format!("stored blob {digest} does not match its digest")));
    }
    let (status, body, content_range) = match range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, &bytes[r.clone()], Some(format!("bytes {}-{}/{}", r.start(), r.end(), bytes.len()))),
        None => (StatusCode::OK, bytes, None),
    };
    Ok((status, body.chunks(PIECE_BYTES).map(Bytes::copy_from_slice).collect(), content_range))
}

/// The one byte range a request asks for, within `length`: None for the
/// whole blob (no range, a malformed or multi-part one, a suffix longer than
/// the blob, or an empty blob), Err for a range past the end.
fn wanted_range(request: &HeaderMap, length: u64) -> Result<Option<std::ops::RangeInclusive<usize>>, ()> {
    use http_range_header::RangeUnsatisfiableError;
    let Some(Ok(parsed)) = request.get(header::RANGE).and_then(|v| v.to_str().ok()).map(http_range_header::parse_range_header) else {
        return Ok(None);
    };
    if parsed.ranges.len() != 1 || length == 0 {
        return Ok(None);
    }
    match parsed.validate(length) {
        Ok(ranges) => Ok(Some(*ranges[0].start() as usize..=*ranges[0].end() as usize)),
        Err(RangeUnsatisfiableError::FileSuffixOutOfBounds) => Ok(None),
        Err(_) => Err(()),
    }
}

/// `held`'s pieces as a body stream that gives their share back as they
/// are taken, and all of it when the stream ends or is dropped, or when its
/// reader has taken nothing for `stall`: then what it has not sent is freed
/// and the connection gets an error instead of the rest.
fn cut_when_stalled(held: Held, stall: Duration) -> impl futures_core::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let holding: Holding = Arc::new(Mutex::new(Some(held)));
    let watchdog = Arc::downgrade(&holding);
    tokio::spawn(async move {
        let mut due = tokio::time::Instant::now() + stall;
        loop {
            tokio::time::sleep_until(due).await;
            let Some(holding) = watchdog.upgrade() else { return };
            let mut held = holding.lock().expect("never poisoned");
            match held.as_ref().map(|h| h.taken_at + stall) {
                None => return,
                Some(next) if next > tokio::time::Instant::now() => due = next,
                Some(_) => {
                    held.take();
                    return;
                }
            }
        }
    });
    struct Releasing(Holding);
    impl Drop for Releasing {
        fn drop(&mut self) {
            self.0.lock().expect("never poisoned").take();
        }
    }
    futures_util::stream::unfold(Some(Releasing(holding)), |state| async move {
        let releasing = state?;
        let next = releasing.0.lock().expect("never poisoned").as_mut().map(Held::take_piece);
        match next {
            Some(Some(piece)) => Some((Ok(piece), Some(releasing))),
            // Sent in full: the rest goes back as `releasing` drops.
            Some(None) => None,
            None => Some((Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the download stalled")), None)),
        }
    })
}
