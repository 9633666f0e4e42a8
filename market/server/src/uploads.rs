//! Uploads by content: a buyer's blob (a dataset, weights, a unit's input)
//! arrives in chunks, is checked chunk by chunk as it arrives, survives an
//! interruption, and is then held by its uploader, counted against a quota,
//! until the uploader lets it go. Jobs name held blobs by digest
//! ([`crate::jobs`]).
//!
//! The protocol:
//! 1. `POST /api/v1/uploads` (signed): the digest, the size and every
//!    chunk's value ([`agora_wire::chunks`]); the values must make the
//!    digest. The blob's bytes are reserved against the account's quota and
//!    the store begins the object ([`crate::store::BlobStore::begin_parts`]).
//!    The same request again resumes: it says which chunks are missing. For a
//!    blob the account already holds it says so, and nothing is sent again.
//!    Whether another account holds the same bytes is never told (that would
//!    tell anyone who can guess a file whether the market has it); the store
//!    keeps one object per digest whoever uploads it.
//! 2. `PUT /api/v1/uploads/{upload}/chunks/{index}`: the chunk's bytes,
//!    hashed piece by piece as they arrive and checked against its declared
//!    value before anything is written. Not signed: a chunk is accepted only
//!    when it is exactly the declared blob's, so whoever sends it can only
//!    deliver the uploader's own bytes (and a signature would hash every byte
//!    once more).
//! 3. `POST /api/v1/uploads/{upload}/complete` (signed by the uploader):
//!    once no chunk is missing, the object is made whole, the blob recorded
//!    and held, in one transaction.
//!
//! Storage rests on money, since keys are free: a blob costs its uploader
//! a credit per [`StorageConfig::bytes_per_credit`] bytes (rounded up, at
//! least one a blob). Beginning an upload holds its price (hold
//! `market:storage:{id}`, in the transaction that reserves its bytes);
//! finishing it posts the hold to the market's fees in the transaction that
//! makes the blob the uploader's; dropping it voids the hold. So a flock of
//! fresh keys begins nothing, credits moved from key to key pay for every
//! upload each key has under way and every blob it holds, and an upload
//! lives at most [`UPLOAD_MAX_AGE_MS`], well inside the hold's life. What an account holds and is uploading is also at
//! most [`StorageConfig::quota_bytes`]; the usage counter changes only by
//! conditional updates, so concurrent uploads cannot both pass one check.
//! An upload untouched for [`UPLOAD_IDLE_MS`] is dropped by the sweep and
//! its reservation given back. A held blob that a kept job of its holder
//! names cannot be let go (its bytes stay counted) until the job's data
//! goes.

use crate::blobs::{Pin, Staged};
use crate::db::Db;
use crate::error::ApiError;
use crate::ledger::{FEES, Ledger, Op};
use agora_wire::KeyId;
use agora_wire::api::{ChunkReceived, HeldBlob, NewUpload, Storage, UploadInfo};
use agora_wire::chunks::{self, ChunkHasher, MAX_BLOB_BYTES, UPLOAD_CHUNK_BYTES};
use axum::body::{Body, Bytes};
use bytes::BytesMut;
use futures_util::StreamExt;
use std::sync::Arc;

/// An upload untouched this long is dropped (its parts removed, its bytes
/// given back to the quota): a day, for a laptop that sleeps overnight.
pub const UPLOAD_IDLE_MS: i64 = 24 * 3_600_000;
/// An upload older than this is dropped however busy: its price's hold
/// must outlive it (`ledger::MAX_HOLD_MS` is 30 days).
pub const UPLOAD_MAX_AGE_MS: i64 = 7 * 24 * 3_600_000;
/// How long the hold of an upload's price lasts: past its oldest drop.
const UPLOAD_HOLD_MS: u64 = (UPLOAD_MAX_AGE_MS + 24 * 3_600_000) as u64;
/// Chunk bodies held in memory at once, all uploads together (8 MiB each:
/// 256 MiB, and up to a few times that while pieces kept as they arrived pin
/// the read buffers they came in, see `SMALLEST_KEPT_PIECE`); past it a
/// chunk is refused busy, and its sender retries.
pub const UPLOAD_CHUNKS_IN_FLIGHT: usize = 32;
/// Chunks one address sends at once (loopback, a proxy, is counted in all
/// only), so a few slow senders cannot hold every slot.
pub const UPLOAD_CHUNKS_PER_PEER: usize = 4;
/// Longest a chunk's body may take to arrive once its slot is taken
/// (8 MiB in 30 s: 280 KB/s); past it the slot goes back.
pub const CHUNK_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Uploads dropped by one batch of a sweep, and batches a sweep runs.
const EXPIRED_PER_BATCH: i64 = 64;
const EXPIRED_BATCHES_PER_SWEEP: u32 = 16;
/// Blobs listed in one page of an account's storage.
pub const HELD_BLOBS_PER_PAGE: u32 = 100;

/// What an operator chooses about storage.
#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// Most bytes one account may hold and upload (`--storage-quota`).
    pub quota_bytes: u64,
    /// Bytes a credit stores (`--storage-per-credit`): a blob costs its
    /// size over this, rounded up, at least one credit.
    pub bytes_per_credit: u64,
}

impl StorageConfig {
    /// What storing a blob of `size` bytes costs, in credits.
    pub fn price_of(&self, size: u64) -> u64 {
        size.div_ceil(self.bytes_per_credit.max(1)).max(1)
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            quota_bytes: 64 << 30,
            bytes_per_credit: 1 << 20,
        }
    }
}

/// Uploads and what accounts hold.
#[derive(Clone)]
pub struct Uploads {
    db: Db,
    ledger: Ledger,
    config: StorageConfig,
    /// Chunk bodies in flight, per address.
    chunks: Arc<crate::tally::Tally<std::net::IpAddr>>,
}

/// An upload's row.
#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    account: String,
    digest: String,
    size: i64,
    chunk_bytes: i64,
    object: String,
    parts: String,
}

impl Uploads {
    pub fn new(db: Db, ledger: Ledger, config: StorageConfig) -> Self {
        Uploads {
            db,
            ledger,
            config,
            chunks: Arc::default(),
        }
    }

    /// Refuse an upload of `size` bytes that `account` cannot pay for.
    async fn check_funds(&self, account: &str, size: u64) -> Result<(), ApiError> {
        let price = self.config.price_of(size);
        let available = self
            .ledger
            .balance(account)
            .await?
            .map_or(0, |b| b.available);
        if available < price {
            return Err(ApiError::InsufficientFunds {
                account: account.to_string(),
                available,
                requested: price,
            });
        }
        Ok(())
    }

    async fn used_by(&self, account: &str) -> Result<u64, ApiError> {
        let used: Option<i64> =
            sqlx::query_scalar("SELECT bytes FROM storage_usage WHERE account = $1")
                .bind(account)
                .fetch_optional(&self.db.pool)
                .await?;
        Ok(used.unwrap_or(0) as u64)
    }

    /// Begin or resume the upload of `request.digest` for `account`.
    pub async fn begin(
        &self,
        account: &KeyId,
        request: NewUpload,
        now: i64,
    ) -> Result<UploadInfo, ApiError> {
        let digest = request.digest.to_ascii_lowercase();
        if !agora_wire::is_digest_hex(&digest) {
            return Err(ApiError::Invalid(
                "a digest is 64 lowercase hex digits (blake3)".into(),
            ));
        }
        if request.size > MAX_BLOB_BYTES {
            return Err(ApiError::Limit(agora_wire::limits::LimitError {
                name: "MAX_BLOB_BYTES",
                what: "size",
                value: request.size,
                min: 0,
                max: MAX_BLOB_BYTES,
            }));
        }
        // The values make the digest: every chunk accepted later is the
        // blob's, and the whole can never end up with other bytes.
        chunks::check_values(
            &request.chunk_values,
            &digest,
            request.size,
            UPLOAD_CHUNK_BYTES,
        )
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
        if let Some(held) = self.held(account.as_str(), &digest).await? {
            return Ok(held);
        }
        if let Some(open) = self.open_upload(account.as_str(), &digest).await? {
            return self.info(&open).await;
        }
        // Before the store is asked for anything: a key that cannot pay
        // costs the market a balance read.
        self.check_funds(account.as_str(), request.size).await?;
        let quota = self.config.quota_bytes;
        let object = crate::store::BlobStore::new_key(&digest);
        let parts = self.db.blobs.begin_parts(&object, request.size).await?;
        let row = Row {
            id: crate::jobs::random_id('u', 16),
            account: account.to_string(),
            digest: digest.clone(),
            size: request.size as i64,
            chunk_bytes: UPLOAD_CHUNK_BYTES as i64,
            object,
            parts,
        };
        match self.insert(&row, &request.chunk_values, quota, now).await {
            Ok(()) => self.info(&row).await,
            Err(e) => {
                if let Err(abort) = self.db.blobs.abort_parts(&row.object, &row.parts).await {
                    tracing::warn!(
                        upload = row.id,
                        "an unused upload's parts stay in the store: {abort}"
                    );
                }
                // A concurrent begin of the same blob won: resume it.
                match self.open_upload(account.as_str(), &digest).await? {
                    Some(open) if matches!(e, ApiError::Internal(_)) => self.info(&open).await,
                    _ => Err(e),
                }
            }
        }
    }

    /// Reserve the upload's bytes and record it, in one transaction.
    async fn insert(
        &self,
        row: &Row,
        values: &[String],
        quota: u64,
        now: i64,
    ) -> Result<(), ApiError> {
        if self
            .used_by(&row.account)
            .await?
            .saturating_add(row.size as u64)
            > quota
        {
            // A first look, before the store is asked for anything; the
            // conditional update below is the check that counts.
            return Err(ApiError::StorageQuota {
                used: self.used_by(&row.account).await?,
                requested: row.size as u64,
                quota,
            });
        }
        let mut tx = self.db.write().await?;
        sqlx::query("INSERT INTO storage_usage (account, bytes) VALUES ($1, 0) ON CONFLICT (account) DO NOTHING").bind(&row.account).execute(&mut *tx).await?;
        let reserved = sqlx::query(
            "UPDATE storage_usage SET bytes = bytes + $2 WHERE account = $1 AND bytes + $2 <= $3",
        )
        .bind(&row.account)
        .bind(row.size)
        .bind(quota.min(i64::MAX as u64) as i64)
        .execute(&mut *tx)
        .await?;
        if reserved.rows_affected() != 1 {
            let used: i64 =
                sqlx::query_scalar("SELECT bytes FROM storage_usage WHERE account = $1")
                    .bind(&row.account)
                    .fetch_one(&mut *tx)
                    .await?;
            return Err(ApiError::StorageQuota {
                used: used as u64,
                requested: row.size as u64,
                quota,
            });
        }
        sqlx::query(
            "INSERT INTO uploads (id, account, digest, size, chunk_bytes, object, parts, created_at_ms, touched_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind(&row.id)
        .bind(&row.account)
        .bind(&row.digest)
        .bind(row.size)
        .bind(row.chunk_bytes)
        .bind(&row.object)
        .bind(&row.parts)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for (index, value) in values.iter().enumerate() {
            sqlx::query("INSERT INTO upload_chunks (upload_id, idx, value) VALUES ($1, $2, $3)")
                .bind(&row.id)
                .bind(index as i64)
                .bind(value.to_ascii_lowercase())
                .execute(&mut *tx)
                .await?;
        }
        // Its price held for it, last (the account's row is locked only for
        // the end of the transaction).
        let price = Op::Hold {
            debit: row.account.clone(),
            credit: FEES.into(),
            amount: self.config.price_of(row.size as u64),
            timeout_ms: UPLOAD_HOLD_MS,
        };
        self.ledger
            .execute_in(&mut tx, &price_hold(&row.id), &price, now)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The blob `digest` as `account` holds it, if it does.
    async fn held(&self, account: &str, digest: &str) -> Result<Option<UploadInfo>, ApiError> {
        let size: Option<i64> =
            sqlx::query_scalar("SELECT size FROM holdings WHERE account = $1 AND digest = $2")
                .bind(account)
                .bind(digest)
                .fetch_optional(&self.db.pool)
                .await?;
        Ok(size.map(|size| UploadInfo {
            digest: digest.into(),
            size: size as u64,
            upload: None,
            chunk_bytes: UPLOAD_CHUNK_BYTES,
            missing: vec![],
            stored: true,
        }))
    }

    async fn open_upload(&self, account: &str, digest: &str) -> Result<Option<Row>, ApiError> {
        Ok(sqlx::query_as("SELECT id, account, digest, size, chunk_bytes, object, parts FROM uploads WHERE account = $1 AND digest = $2")
            .bind(account)
            .bind(digest)
            .fetch_optional(&self.db.pool)
            .await?)
    }

    async fn upload(&self, id: &str) -> Result<Row, ApiError> {
        sqlx::query_as("SELECT id, account, digest, size, chunk_bytes, object, parts FROM uploads WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no upload {id} under way (finished, cancelled or dropped after {} hours idle)", UPLOAD_IDLE_MS / 3_600_000)))
    }

    async fn missing(&self, id: &str) -> Result<Vec<u64>, ApiError> {
        let missing: Vec<i64> = sqlx::query_scalar(
            "SELECT idx FROM upload_chunks WHERE upload_id = $1 AND part IS NULL ORDER BY idx",
        )
        .bind(id)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(missing.into_iter().map(|i| i as u64).collect())
    }

    async fn info(&self, row: &Row) -> Result<UploadInfo, ApiError> {
        Ok(UploadInfo {
            digest: row.digest.clone(),
            size: row.size as u64,
            upload: Some(row.id.clone()),
            chunk_bytes: row.chunk_bytes as u64,
            missing: self.missing(&row.id).await?,
            stored: false,
        })
    }

    /// Store chunk `index` of upload `id`, read from `body` (of
    /// `content_length` bytes, from `peer`) once there is room for it, if
    /// its bytes are the declared ones.
    pub async fn put_chunk(
        &self,
        id: &str,
        index: u64,
        peer: Option<std::net::IpAddr>,
        content_length: Option<u64>,
        body: Body,
        now: i64,
    ) -> Result<ChunkReceived, ApiError> {
        let row = self.upload(id).await?;
        let (size, chunk_bytes) = (row.size as u64, row.chunk_bytes as u64);
        let count = chunks::chunk_count(size, chunk_bytes);
        if index >= count {
            return Err(ApiError::Invalid(format!(
                "upload {id} has chunks 0 to {}",
                count - 1
            )));
        }
        let range = chunks::chunk_range(index, size, chunk_bytes);
        let want = range.end - range.start;
        // The length first, so no slot waits on a body that cannot fit.
        if content_length != Some(want) {
            return Err(ApiError::Invalid(format!(
                "chunk {index} of upload {id} is {want} bytes: send them with that Content-Length"
            )));
        }
        let _slot = self.chunk_slot(peer)?;
        let value: String =
            sqlx::query_scalar("SELECT value FROM upload_chunks WHERE upload_id = $1 AND idx = $2")
                .bind(id)
                .bind(index as i64)
                .fetch_optional(&self.db.pool)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("no upload {id} under way")))?;
        let hasher = ChunkHasher::new(index, count, chunk_bytes);
        let received = tokio::time::timeout(CHUNK_BODY_TIMEOUT, receive_chunk(body, want, hasher));
        let (bytes, made) = match received.await {
            Ok(Some(received)) => received,
            Ok(None) => {
                return Err(ApiError::Invalid(format!(
                    "chunk {index} of upload {id} is {want} bytes; others were sent, or the body broke off"
                )));
            }
            Err(_) => {
                return Err(ApiError::Invalid(format!(
                    "chunk {index} of upload {id} did not arrive within {} s",
                    CHUNK_BODY_TIMEOUT.as_secs()
                )));
            }
        };
        if hex::encode(made) != value {
            return Err(ApiError::ChunkMismatch(format!(
                "chunk {index} of upload {id} is not the declared blob's: its bytes were changed or misplaced"
            )));
        }
        let part = self
            .db
            .blobs
            .put_part(&row.object, &row.parts, index, range.start, bytes)
            .await?;
        // One commit for both.
        let mut tx = self.db.write().await?;
        sqlx::query("UPDATE upload_chunks SET part = $3 WHERE upload_id = $1 AND idx = $2")
            .bind(id)
            .bind(index as i64)
            .bind(part)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE uploads SET touched_at_ms = $2 WHERE id = $1 AND touched_at_ms < $2")
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let missing: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM upload_chunks WHERE upload_id = $1 AND part IS NULL",
        )
        .bind(id)
        .fetch_one(&self.db.pool)
        .await?;
        Ok(ChunkReceived {
            index,
            missing: missing as u64,
        })
    }

    /// A slot for one chunk body: [`UPLOAD_CHUNKS_PER_PEER`] per address
    /// (loopback counted in all only), [`UPLOAD_CHUNKS_IN_FLIGHT`] in all.
    fn chunk_slot(
        &self,
        peer: Option<std::net::IpAddr>,
    ) -> Result<crate::tally::Slot<std::net::IpAddr>, ApiError> {
        let local = std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST);
        let (address, per_address) = match peer {
            Some(peer) if !peer.is_loopback() => (peer, UPLOAD_CHUNKS_PER_PEER),
            _ => (local, usize::MAX),
        };
        self.chunks
            .enter(&address, per_address, UPLOAD_CHUNKS_IN_FLIGHT)
            .map_err(|refused| match refused {
                crate::tally::Refused::PerKey => ApiError::TooManyAtOnce {
                    what: "upload chunks in flight",
                    limit: UPLOAD_CHUNKS_PER_PEER,
                    per: "address",
                },
                crate::tally::Refused::InAll => ApiError::Busy,
            })
    }

    /// Finish upload `id` of `account`: the object made whole, the blob
    /// recorded and held by `account`.
    pub async fn complete(
        &self,
        account: &KeyId,
        id: &str,
        now: i64,
    ) -> Result<UploadInfo, ApiError> {
        let row = self.upload(id).await?;
        if row.account != account.as_str() {
            return Err(ApiError::NotFound(format!("no upload {id} under way")));
        }
        let missing = self.missing(id).await?;
        if !missing.is_empty() {
            return Err(ApiError::Incomplete {
                missing: missing.len() as u64,
                first: missing[0],
            });
        }
        self.check_funds(&row.account, row.size as u64).await?;
        sqlx::query("UPDATE uploads SET touched_at_ms = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&self.db.pool)
            .await?;
        let parts: Vec<String> =
            sqlx::query_scalar("SELECT part FROM upload_chunks WHERE upload_id = $1 ORDER BY idx")
                .bind(id)
                .fetch_all(&self.db.pool)
                .await?;
        self.check_parts_at_risk(&row, &parts).await?;
        if let Err(e) = self
            .db
            .blobs
            .finish_parts(&row.object, &row.parts, parts)
            .await
        {
            // A write that failed shows at this sync, and only once: the
            // chunks are asked for again rather than trusted after it.
            if !self.db.blobs.exists(&row.object).await? {
                sqlx::query("UPDATE upload_chunks SET part = NULL WHERE upload_id = $1")
                    .bind(id)
                    .execute(&self.db.pool)
                    .await?;
                tracing::warn!(
                    upload = id,
                    "finishing an upload failed; its chunks are asked for again: {e}"
                );
            }
            return Err(e.into());
        }
        let mut staged = Staged::adopt(
            &self.db,
            row.digest.clone(),
            row.size as u64,
            row.object.clone(),
        );
        let mut tx = self.db.write().await?;
        let claimed = sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if claimed.rows_affected() == 1 {
            // On any failure the object stays the upload's (an adopted object
            // is removed only by settling), for the next try or the drop.
            self.make_held(&mut tx, &row, &mut staged, now).await?;
            tx.commit().await?;
        } else {
            // Completed by a concurrent request (whose record names this
            // same object, so settling leaves it).
            drop(tx);
        }
        staged.settle().await;
        self.held(&row.account, &row.digest)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("upload {id} was cancelled")))
    }

    /// Check again each chunk the machine may have lost since it arrived
    /// (written in an earlier boot, never synced): one whose bytes are not
    /// its value any more is missing again, and the upload is incomplete.
    async fn check_parts_at_risk(&self, row: &Row, parts: &[String]) -> Result<(), ApiError> {
        let (size, chunk_bytes) = (row.size as u64, row.chunk_bytes as u64);
        let count = chunks::chunk_count(size, chunk_bytes);
        let mut lost = Vec::new();
        let at_risk = self.db.blobs.parts_at_risk(parts);
        for index in at_risk.iter().map(|&i| i as u64) {
            let bytes = match self
                .db
                .blobs
                .read_part(&row.parts, chunks::chunk_range(index, size, chunk_bytes))
                .await
            {
                Ok(bytes) => bytes,
                // The file itself went (or shrank) with the crash: every
                // chunk written then is lost; the file is made again.
                Err(_) => {
                    self.db.blobs.remake_parts(&row.parts, size).await?;
                    Vec::new()
                }
            };
            let value: String = sqlx::query_scalar(
                "SELECT value FROM upload_chunks WHERE upload_id = $1 AND idx = $2",
            )
            .bind(&row.id)
            .bind(index as i64)
            .fetch_one(&self.db.pool)
            .await?;
            if !is_chunk(index, count, chunk_bytes, bytes, value).await? {
                sqlx::query(
                    "UPDATE upload_chunks SET part = NULL WHERE upload_id = $1 AND idx = $2",
                )
                .bind(&row.id)
                .bind(index as i64)
                .execute(&self.db.pool)
                .await?;
                lost.push(index);
            }
        }
        match lost.first() {
            Some(&first) => {
                tracing::warn!(
                    upload = row.id,
                    chunks = lost.len(),
                    "chunks lost in a crash of the machine: asked for again"
                );
                Err(ApiError::Incomplete {
                    missing: lost.len() as u64,
                    first,
                })
            }
            None => Ok(()),
        }
    }

    /// In the completing transaction: the blob recorded, held by the
    /// uploader, and paid for.
    async fn make_held(
        &self,
        tx: &mut crate::db::Tx,
        row: &Row,
        staged: &mut Staged,
        now: i64,
    ) -> Result<(), ApiError> {
        sqlx::query("DELETE FROM upload_chunks WHERE upload_id = $1")
            .bind(&row.id)
            .execute(&mut **tx)
            .await?;
        let held = sqlx::query("INSERT INTO holdings (account, digest, size, created_at_ms) VALUES ($1, $2, $3, $4) ON CONFLICT (account, digest) DO NOTHING")
            .bind(&row.account)
            .bind(&row.digest)
            .bind(row.size)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        if held.rows_affected() == 0 {
            // Held already (an upload begun as another finished): counted once.
            give_back(tx, &row.account, row.size).await?;
        }
        staged.record(tx, Pin::Job).await?;
        // Paid for a new holding; given back for one held already.
        let (id, op) = match held.rows_affected() {
            1 => (
                format!("{}:paid", price_hold(&row.id)),
                Op::Post {
                    pending_id: price_hold(&row.id),
                    amount: None,
                },
            ),
            _ => (
                format!("{}:void", price_hold(&row.id)),
                Op::Void {
                    pending_id: price_hold(&row.id),
                },
            ),
        };
        self.ledger.execute_in(tx, &id, &op, now).await?;
        Ok(())
    }

    /// Cancel upload `id` of `account`: its parts removed, its bytes given
    /// back to the quota.
    pub async fn cancel(&self, account: &KeyId, id: &str, now: i64) -> Result<(), ApiError> {
        let row = self.upload(id).await?;
        if row.account != account.as_str() {
            return Err(ApiError::NotFound(format!("no upload {id} under way")));
        }
        self.drop_upload(
            row,
            Due {
                idle_since: i64::MAX,
                made_before: i64::MAX,
            },
            now,
        )
        .await
    }

    /// Drop an upload last touched before `idle_since`: its row and
    /// reservation in one transaction, then its parts, and an object already
    /// joined from them (no record names it: its record would have taken
    /// the row). Nothing when it finished, was touched or was dropped
    /// meanwhile. A crash between the two leaves parts no row names (disk,
    /// never a blob).
    async fn drop_upload(&self, row: Row, due: Due, now: i64) -> Result<(), ApiError> {
        let mut tx = self.db.write().await?;
        let dropped = sqlx::query(
            "DELETE FROM uploads WHERE id = $1 AND (touched_at_ms < $2 OR created_at_ms < $3)",
        )
        .bind(&row.id)
        .bind(due.idle_since)
        .bind(due.made_before)
        .execute(&mut *tx)
        .await?;
        if dropped.rows_affected() != 1 {
            return Ok(());
        }
        sqlx::query("DELETE FROM upload_chunks WHERE upload_id = $1")
            .bind(&row.id)
            .execute(&mut *tx)
            .await?;
        give_back(&mut tx, &row.account, row.size).await?;
        // Its price back (a hold the ledger's sweep expired is back already).
        match self
            .ledger
            .execute_in(
                &mut tx,
                &format!("{}:void", price_hold(&row.id)),
                &Op::Void {
                    pending_id: price_hold(&row.id),
                },
                now,
            )
            .await
        {
            Ok(_) | Err(ApiError::NotPending(_)) => {}
            Err(e) => return Err(e),
        }
        tx.commit().await?;
        if let Err(e) = self.db.blobs.abort_parts(&row.object, &row.parts).await {
            tracing::warn!(
                upload = row.id,
                "a dropped upload's parts stay in the store: {e}"
            );
        }
        Staged::adopt(&self.db, row.digest, row.size as u64, row.object)
            .settle()
            .await;
        Ok(())
    }

    /// Drop uploads untouched for [`UPLOAD_IDLE_MS`] or older than
    /// [`UPLOAD_MAX_AGE_MS`]; how many.
    pub async fn drop_idle(&self, now: i64) -> Result<u64, ApiError> {
        let due = Due {
            idle_since: now - UPLOAD_IDLE_MS,
            made_before: now - UPLOAD_MAX_AGE_MS,
        };
        let mut count = 0;
        for _ in 0..EXPIRED_BATCHES_PER_SWEEP {
            let batch: Vec<Row> = sqlx::query_as(
                "SELECT id, account, digest, size, chunk_bytes, object, parts FROM uploads WHERE touched_at_ms < $1 OR created_at_ms < $2
                 ORDER BY touched_at_ms LIMIT $3",
            )
            .bind(due.idle_since)
            .bind(due.made_before)
            .bind(EXPIRED_PER_BATCH)
            .fetch_all(&self.db.pool)
            .await?;
            let full = batch.len() as i64 == EXPIRED_PER_BATCH;
            for row in batch {
                let id = row.id.clone();
                // One that fails stays for the next sweep; the rest go on.
                match self.drop_upload(row, due, now).await {
                    Ok(()) => count += 1,
                    Err(e) => {
                        tracing::warn!(upload = id, "dropping an idle upload failed: {e}");
                        return Ok(count);
                    }
                }
            }
            if !full {
                break;
            }
        }
        Ok(count)
    }

    /// Let blob `digest` go: `account` no longer holds it, its bytes go back
    /// to the quota, and the blob itself goes once nothing else needs it (a
    /// job that names it keeps it).
    pub async fn release(&self, account: &KeyId, digest: &str) -> Result<(), ApiError> {
        let mut tx = self.db.write().await?;
        // The blob's row first, as a submit naming it takes it: a submit
        // under way either committed (and its job is seen below) or waits.
        crate::blobs::lock(&mut tx, digest).await?;
        let size: Option<i64> = sqlx::query_scalar(
            "DELETE FROM holdings WHERE account = $1 AND digest = $2 RETURNING size",
        )
        .bind(account.as_str())
        .bind(digest)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(size) = size else {
            return Err(ApiError::NotFound(format!("you hold no blob {digest}")));
        };
        // Named by a job of the holder whose data is kept: it stays, and so
        // does its charge against the quota, until the job's data goes.
        let named: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM jobs j WHERE j.buyer = $1 AND j.data_deleted_at_ms IS NULL
               AND (EXISTS (SELECT 1 FROM job_shared s WHERE s.job_id = j.id AND s.digest = $2)
                    OR EXISTS (SELECT 1 FROM units u WHERE u.job_id = j.id AND u.input_digest = $2))
             LIMIT 1",
        )
        .bind(account.as_str())
        .bind(digest)
        .fetch_optional(&mut *tx)
        .await?;
        if named.is_some() {
            return Err(ApiError::NotYet(format!(
                "a job of yours names blob {digest}: delete the job's data first (agora delete-data JOB), or wait for its retention"
            )));
        }
        give_back(&mut tx, account.as_str(), size).await?;
        let object = crate::blobs::collect(&mut tx, digest).await?;
        tx.commit().await?;
        crate::blobs::remove_collected(&self.db, object.into_iter().collect()).await;
        Ok(())
    }

    /// What `account` stores: usage, quota and a page of its blobs.
    pub async fn storage(&self, account: &KeyId, page: u32) -> Result<Storage, ApiError> {
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT digest, size, created_at_ms FROM holdings WHERE account = $1 ORDER BY created_at_ms DESC, digest LIMIT $2 OFFSET $3")
                .bind(account.as_str())
                .bind(HELD_BLOBS_PER_PAGE as i64)
                .bind(page as i64 * HELD_BLOBS_PER_PAGE as i64)
                .fetch_all(&self.db.pool)
                .await?;
        Ok(Storage {
            used_bytes: self.used_by(account.as_str()).await?,
            quota_bytes: self.config.quota_bytes,
            blobs: rows
                .into_iter()
                .map(|(digest, size, created_at_ms)| HeldBlob {
                    digest,
                    size: size as u64,
                    created_at_ms,
                })
                .collect(),
        })
    }
}

/// The sizes of the blobs `digests` that `account` holds (the others are
/// absent): what a job of `account` may name.
pub async fn held_sizes(
    conn: &mut sqlx::AnyConnection,
    account: &str,
    digests: &[&str],
) -> Result<std::collections::HashMap<String, u64>, sqlx::Error> {
    let mut sizes = std::collections::HashMap::new();
    for digest in digests {
        let size: Option<i64> =
            sqlx::query_scalar("SELECT size FROM holdings WHERE account = $1 AND digest = $2")
                .bind(account)
                .bind(*digest)
                .fetch_optional(&mut *conn)
                .await?;
        if let Some(size) = size {
            sizes.insert(digest.to_string(), size as u64);
        }
    }
    Ok(sizes)
}

/// Which uploads a drop takes: untouched since, or made before.
#[derive(Clone, Copy)]
struct Due {
    idle_since: i64,
    made_before: i64,
}

/// The hold of upload `id`'s price.
fn price_hold(id: &str) -> String {
    format!("market:storage:{id}")
}

/// Pieces of a chunk's body smaller than this are copied together rather
/// than kept: a kept piece pins the read buffer it came in (several KiB for
/// a piece of one byte), so a body sent a byte at a time would hold
/// thousands of times its size. Larger pieces are kept as they came (no
/// copy: copying each chunk into a fresh 8 MiB buffer cost uploads 4x their
/// speed); one pins at most the server's largest read buffer, about 400
/// KiB, so at worst about 6x its bytes.
const SMALLEST_KEPT_PIECE: usize = 64 << 10;

/// A chunk's body of exactly `want` bytes, in pieces, and its value, hashed
/// piece by piece as they arrive (a piece is at most the server's read
/// buffer, a few hundred KiB: well under a millisecond of hashing). None
/// when the body is not `want` bytes or broke off.
async fn receive_chunk(
    body: Body,
    want: u64,
    mut hasher: ChunkHasher,
) -> Option<(Vec<Bytes>, [u8; 32])> {
    let mut stream = body.into_data_stream();
    let (mut pieces, mut small, mut got) = (Vec::new(), BytesMut::new(), 0u64);
    while let Some(piece) = stream.next().await {
        let piece = piece.ok()?;
        got += piece.len() as u64;
        if got > want {
            return None;
        }
        hasher.update(&piece);
        if piece.len() < SMALLEST_KEPT_PIECE {
            small.extend_from_slice(&piece);
            continue;
        }
        if !small.is_empty() {
            pieces.push(small.split().freeze());
        }
        pieces.push(piece);
    }
    if !small.is_empty() {
        pieces.push(small.freeze());
    }
    (got == want).then(|| (pieces, hasher.finish()))
}

/// Whether `bytes` are chunk `index` (of `count`) with declared `value`,
/// hashed off the async threads.
async fn is_chunk(
    index: u64,
    count: u64,
    chunk_bytes: u64,
    bytes: impl AsRef<[u8]> + Send + 'static,
    value: String,
) -> Result<bool, ApiError> {
    let made = tokio::task::spawn_blocking(move || {
        chunks::chunk_value(index, count, chunk_bytes, bytes.as_ref())
    })
    .await
    .map_err(|e| ApiError::Internal(format!("hashing a chunk: {e}")))?;
    Ok(hex::encode(made) == value)
}

/// Give `bytes` of `account`'s usage back.
async fn give_back(tx: &mut crate::db::Tx, account: &str, bytes: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE storage_usage SET bytes = bytes - $2 WHERE account = $1")
        .bind(account)
        .bind(bytes)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
