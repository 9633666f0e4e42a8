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
use sqlx::Row;

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
