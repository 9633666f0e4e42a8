//! Outputs as blobs: a provider uploads each output of a lease it runs
//! (`PUT /api/v1/leases/{lease}/outputs/{digest}`, signed, the raw bytes:
//! the signature's body digest is the output's digest), then its signed
//! result names them: the main output by digest, the named ones
//! (`data.output`) in a manifest of name, digest and size. A result's
//! manifest is compared with its main output when replicas are decided
//! (`decide`), and the decided unit keeps the winning lease's; buyers
//! download each by name.
//!
//! Bounds, since a lease is the only standing a provider needs to store
//! bytes here: a lease takes uploads only while its provider runs it, at
//! most [`MAX_LEASE_UPLOADS`] blobs and [`MAX_UNIT_BYTES`] bytes together,
//! counted under the job's row lock so concurrent uploads cannot both
//! pass; the blobs belong to the job and go with its data
//! (`retention`), answered or not.

use super::*;
use agora_wire::api::NamedOutput;
use agora_wire::limits::{MAX_NAMED_OUTPUTS, OUTPUT_NAME_RULE, is_output_name};
use axum::body::Bytes;

/// Blobs one lease may upload: its main output and each named one.
pub const MAX_LEASE_UPLOADS: usize = MAX_NAMED_OUTPUTS + 1;

/// What an output upload answers.
#[derive(serde::Serialize)]
pub struct LeaseUpload {
    pub lease: String,
    pub digest: String,
    pub bytes: u64,
}

impl Jobs {
    /// Store `bytes` (whose blake3 is `digest`) as an output of lease
    /// `lease_id`, which `provider` runs now.
    pub async fn put_lease_output(
        &self,
        provider: &KeyId,
        lease_id: &str,
        digest: &str,
        bytes: Bytes,
        now: i64,
    ) -> Result<LeaseUpload, ApiError> {
        if agora_wire::digest_hex(&bytes) != digest {
            return Err(ApiError::Invalid(format!(
                "the bytes sent are not blob {digest}: an output is put under its own blake3 digest"
            )));
        }
        check_unit_bytes("an output", bytes.len())?;
        let size = bytes.len() as u64;
        // Nothing goes to the store for a lease its sender does not run.
        self.running_lease_job(&self.db.pool, provider, lease_id, now)
            .await?;
        let mut staged =
            crate::blobs::Staged::write(&self.db, [(digest.to_string(), bytes)]).await?;
        let mut tx = self.db.write().await?;
        let job = self
            .running_lease_job(&mut *tx, provider, lease_id, now)
            .await?;
        settle::lock_job(&mut tx, self.db.kind, &job).await?;
        // Read again under the job's lock: a result or a sweep may have
        // ended the lease, and concurrent uploads are counted one at a time.
        self.running_lease_job(&mut *tx, provider, lease_id, now)
            .await?;
        let (count, total): (i64, i64) = {
            let row = sqlx::query(
                "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS total FROM lease_uploads WHERE lease_id = $1 AND digest <> $2",
            )
            .bind(lease_id)
            .bind(digest)
            .fetch_one(&mut *tx)
            .await?;
            (row.try_get("n")?, row.try_get("total")?)
        };
        agora_wire::limits::at_most(
            "MAX_LEASE_UPLOADS",
            "outputs uploaded under one lease",
            count as u64 + 1,
            MAX_LEASE_UPLOADS as u64,
        )?;
        check_unit_bytes(
            "outputs uploaded under one lease",
            total as usize + size as usize,
        )?;
        sqlx::query("INSERT INTO lease_uploads (lease_id, digest, size) VALUES ($1, $2, $3) ON CONFLICT (lease_id, digest) DO NOTHING")
            .bind(lease_id)
            .bind(digest)
            .bind(size as i64)
            .execute(&mut *tx)
            .await?;
        staged.record(&mut tx, crate::blobs::Pin::Job).await?;
        tx.commit().await?;
        staged.settle().await;
        Ok(LeaseUpload {
            lease: lease_id.into(),
            digest: digest.into(),
            bytes: size,
        })
    }

    /// The job of lease `lease_id` when `provider` runs it now; refused
    /// as a result for it would be.
    async fn running_lease_job<'e>(
        &self,
        db: impl sqlx::Executor<'e, Database = sqlx::Any>,
        provider: &KeyId,
        lease_id: &str,
        now: i64,
    ) -> Result<String, ApiError> {
        let row =
            sqlx::query("SELECT provider, state, expires_at_ms, job_id FROM leases WHERE id = $1")
                .bind(lease_id)
                .fetch_optional(db)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("no lease `{lease_id}`")))?;
        if row.try_get::<String, _>("provider")? != provider.as_str() {
            return Err(ApiError::Forbidden(
                "this lease belongs to another provider".into(),
            ));
        }
        if row.try_get::<String, _>("state")? != "active"
            || row.try_get::<i64, _>("expires_at_ms")? <= now
        {
            return Err(ApiError::NotPending(format!(
                "lease {lease_id} (expired or already answered)"
            )));
        }
        Ok(row.try_get("job_id")?)
    }

    /// Refuse an ok result whose outputs were not all uploaded under its
    /// lease with the sizes it says, or that together pass
    /// [`MAX_UNIT_BYTES`]. `main` is the main output's digest when it was
    /// uploaded (not sent inline), and `inline` the inline one's size.
    pub(super) async fn check_uploaded(
        &self,
        lease_id: &str,
        main: Option<&str>,
        inline: u64,
        outputs: &[NamedOutput],
    ) -> Result<(), ApiError> {
        let uploaded: std::collections::HashMap<String, i64> =
            sqlx::query("SELECT digest, size FROM lease_uploads WHERE lease_id = $1")
                .bind(lease_id)
                .fetch_all(&self.db.pool)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("digest")?, r.try_get("size")?)))
                .collect::<Result<_, sqlx::Error>>()?;
        let size_of = |digest: &str| {
            uploaded.get(digest).map(|&s| s as u64).ok_or_else(|| {
                ApiError::Invalid(format!(
                    "output {digest} was not uploaded under lease {lease_id}: put its bytes first"
                ))
            })
        };
        let mut total = inline;
        if let Some(main) = main {
            total += size_of(main)?;
        }
        for o in outputs {
            if size_of(&o.digest)? != o.bytes {
                return Err(ApiError::Invalid(format!(
                    "output `{}` is {} bytes as uploaded, not {}",
                    o.name,
                    size_of(&o.digest)?,
                    o.bytes
                )));
            }
            total += o.bytes;
        }
        check_unit_bytes(
            "a unit's outputs together",
            total.min(usize::MAX as u64) as usize,
        )?;
        Ok(())
    }
}

/// A result's named outputs as stored: canonical JSON in name order, or
/// none. Refuses a manifest past [`MAX_NAMED_OUTPUTS`], with a name that
/// breaks the rule, out of order or twice, or with a malformed digest.
pub(super) fn manifest(outputs: &[NamedOutput]) -> Result<Option<String>, ApiError> {
    if outputs.is_empty() {
        return Ok(None);
    }
    agora_wire::limits::at_most(
        "MAX_NAMED_OUTPUTS",
        "outputs",
        outputs.len() as u64,
        MAX_NAMED_OUTPUTS as u64,
    )?;
    for (i, o) in outputs.iter().enumerate() {
        if !is_output_name(&o.name) {
            return Err(ApiError::Invalid(format!(
                "an output's name is {OUTPUT_NAME_RULE}: `{}`",
                o.name.chars().take(80).collect::<String>()
            )));
        }
        if i > 0 && outputs[i - 1].name >= o.name {
            return Err(ApiError::Invalid(
                "named outputs come in name order, each name once".into(),
            ));
        }
        if !agora_wire::is_digest_hex(&o.digest) {
            return Err(ApiError::Invalid(
                "a digest is 64 lowercase hex digits (blake3)".into(),
            ));
        }
    }
    Ok(Some(
        serde_json::to_string(outputs).map_err(|e| ApiError::Internal(e.to_string()))?,
    ))
}

/// The named outputs of a stored manifest (none when there is none, or
/// when it does not read: the market wrote it).
pub(super) fn read_manifest(text: Option<&str>) -> Vec<NamedOutput> {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}
