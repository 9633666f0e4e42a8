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
//! pass (and checked before anything is written); the blobs belong to the
//! job and go with its data (`retention`), answered or not. A canary's
//! lease takes uploads like any other (its provider cannot tell them
//! apart); they are counted, not stored. A result may name outputs only
//! if its package's component imports `data.output`.

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

/// Whose lease a lease id is: a buyer's unit's (of this job), or a
/// canary's, which its provider cannot tell from a buyer's and so uploads
/// to alike.
enum LeaseOf {
    Job(String),
    Canary,
}

impl Jobs {
    /// Store `bytes` (whose blake3 is `digest`) as an output of lease
    /// `lease_id`, which `provider` runs now. A canary's outputs are only
    /// counted: its answer is judged by digest.
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
        // Nothing goes to the store for a lease its sender does not run,
        // nor past the lease's room.
        let of = self
            .running_lease(&self.db.pool, provider, lease_id, now)
            .await?;
        check_room(&self.db.pool, lease_id, digest, size).await?;
        let uploaded = LeaseUpload {
            lease: lease_id.into(),
            digest: digest.into(),
            bytes: size,
        };
        let job = match of {
            LeaseOf::Job(job) => job,
            LeaseOf::Canary => {
                record_upload(&self.db.pool, lease_id, digest, size).await?;
                return Ok(uploaded);
            }
        };
        let mut staged =
            crate::blobs::Staged::write(&self.db, [(digest.to_string(), bytes)]).await?;
        let stored = self
            .record_lease_output(provider, lease_id, &job, digest, size, &mut staged, now)
            .await;
        // Recorded or not, the store keeps only what a record names.
        staged.settle().await;
        stored.map(|()| uploaded)
    }

    /// [`Jobs::put_lease_output`]'s transaction for a buyer's lease: the
    /// lease and its room read again under the job's lock (a result or a
    /// sweep may have ended it; concurrent uploads count one at a time).
    #[allow(clippy::too_many_arguments)]
    async fn record_lease_output(
        &self,
        provider: &KeyId,
        lease_id: &str,
        job: &str,
        digest: &str,
        size: u64,
        staged: &mut crate::blobs::Staged,
        now: i64,
    ) -> Result<(), ApiError> {
        let mut tx = self.db.write().await?;
        settle::lock_job(&mut tx, self.db.kind, job).await?;
        if !Self::runs_lease(&mut *tx, provider, lease_id, now).await? {
            return Err(ApiError::NotPending(format!(
                "lease {lease_id} (expired or already answered)"
            )));
        }
        check_room(&mut *tx, lease_id, digest, size).await?;
        record_upload(&mut *tx, lease_id, digest, size).await?;
        staged.record(&mut tx, crate::blobs::Pin::Job).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whose lease `lease_id` is, when `provider` runs it now; refused as
    /// a result for it would be.
    async fn running_lease(
        &self,
        db: &sqlx::AnyPool,
        provider: &KeyId,
        lease_id: &str,
        now: i64,
    ) -> Result<LeaseOf, ApiError> {
        let buyers =
            sqlx::query("SELECT provider, state, expires_at_ms, job_id FROM leases WHERE id = $1")
                .bind(lease_id)
                .fetch_optional(db)
                .await?;
        let (row, of) = match buyers {
            Some(row) => {
                let job = row.try_get("job_id")?;
                (row, LeaseOf::Job(job))
            }
            None => {
                let canary = sqlx::query(
                    "SELECT provider, state, expires_at_ms FROM canary_runs WHERE lease_id = $1",
                )
                .bind(lease_id)
                .fetch_optional(db)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("no lease `{lease_id}`")))?;
                (canary, LeaseOf::Canary)
            }
        };
        check_runs(&row, provider, lease_id, now)?;
        Ok(of)
    }

    /// Refuse an ok result for lease `lease_id` unless `provider` runs it
    /// now, its outputs were all uploaded under it with the sizes it says
    /// and together stay within [`MAX_UNIT_BYTES`], and it names outputs
    /// only if its package adds them (imports `data.output`). `main` is
    /// the main output's digest when it was uploaded (not sent inline), and
    /// `inline` the inline one's size.
    pub(super) async fn check_uploaded(
        &self,
        provider: &KeyId,
        lease_id: &str,
        main: Option<&str>,
        inline: u64,
        outputs: &[NamedOutput],
        now: i64,
    ) -> Result<(), ApiError> {
        self.running_lease(&self.db.pool, provider, lease_id, now)
            .await?;
        if !outputs.is_empty() && !self.adds_outputs(lease_id).await? {
            return Err(ApiError::Invalid(
                "this package adds no named outputs (its component does not import data.output)"
                    .into(),
            ));
        }
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

    /// Whether the package version lease `lease_id` runs (a buyer's or a
    /// canary's) imports `data.output`.
    async fn adds_outputs(&self, lease_id: &str) -> Result<bool, ApiError> {
        let adds: Option<i64> = sqlx::query_scalar(
            "SELECT v.adds_outputs FROM leases l JOIN jobs j ON j.id = l.job_id
               JOIN versions v ON v.name = j.package AND v.version = j.version WHERE l.id = $1
             UNION ALL
             SELECT v.adds_outputs FROM canary_runs r JOIN canaries c ON c.id = r.canary_id
               JOIN versions v ON v.name = c.package AND v.version = c.version WHERE r.lease_id = $1",
        )
        .bind(lease_id)
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(adds == Some(1))
    }
}

/// Refuse an upload of `size` bytes under lease `lease_id` past
/// [`MAX_LEASE_UPLOADS`] blobs or [`MAX_UNIT_BYTES`] bytes together (the
/// same blob again is no new upload).
async fn check_room<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    lease_id: &str,
    digest: &str,
    size: u64,
) -> Result<(), ApiError> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS total FROM lease_uploads WHERE lease_id = $1 AND digest <> $2",
    )
    .bind(lease_id)
    .bind(digest)
    .fetch_one(db)
    .await?;
    let (count, total): (i64, i64) = (row.try_get("n")?, row.try_get("total")?);
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
    Ok(())
}

async fn record_upload<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    lease_id: &str,
    digest: &str,
    size: u64,
) -> Result<(), ApiError> {
    sqlx::query("INSERT INTO lease_uploads (lease_id, digest, size) VALUES ($1, $2, $3) ON CONFLICT (lease_id, digest) DO NOTHING")
        .bind(lease_id)
        .bind(digest)
        .bind(size as i64)
        .execute(db)
        .await?;
    Ok(())
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
