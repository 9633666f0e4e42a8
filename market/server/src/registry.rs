//! The package registry: components stored by blake3 digest, versions that
//! never change once published, names owned by their first publisher, and
//! the signed, hash-chained package log that clients verify.
//!
//! A component is inspected with wasmparser only (the market never links
//! wasmtime): it must validate as a component, export `run`, and import
//! nothing but the Agora contract and WASI.

use crate::db::Db;
use crate::error::ApiError;
use agora_wire::KeyId;
use agora_wire::api::{
    BrowserBundle, PackageInfo, PackageSummary, Page, PublishRequest, VersionInfo,
};
use agora_wire::log::{LogAction, LogEntry, verify_log};
use axum::body::Bytes;
use base64::Engine as _;
use sqlx::Row;
use sqlx::any::AnyRow;
use std::sync::Arc;
use std::time::Duration;

/// Largest component accepted (the host refuses larger ones too).
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;
/// Largest publish request body: the component in base64 plus metadata.
pub const MAX_PUBLISH_BODY_BYTES: usize = MAX_COMPONENT_BYTES / 3 * 4 + (1 << 20);
pub const MAX_NAME_LEN: usize = 64;
pub const MAX_DESCRIPTION_LEN: usize = 2000;
pub const MAX_TAGS: usize = 16;
pub const MAX_TAG_LEN: usize = 32;

/// Publishes whose heavy checks (validating the component, making its
/// browser bundle) run at once: each is seconds of CPU on a large
/// component, so without a bound a flock of publishers would starve every
/// other request of the market's cores.
pub const PUBLISH_CHECKS_AT_ONCE: usize = 2;
/// Longest a publish waits for a turn at the checks (then 503 busy: retry),
/// and longest the checks may then run (then the component is refused as
/// too slow to check; its turn is held until the checks end).
pub const PUBLISH_CHECK_DEADLINE: Duration = Duration::from_secs(30);
/// Heavy checks one key may have running or waiting at once: a key
/// sending slow components one after the other holds one turn, not all.
pub const PUBLISH_CHECKS_PER_KEY: usize = 1;
/// Versions one key may publish in a day.
pub const MAX_VERSIONS_PER_KEY_PER_DAY: u64 = 50;
/// Component bytes one key may publish in a day: components are kept for
/// good, so a key's share of the market's disk is bounded.
pub const MAX_PUBLISH_BYTES_PER_KEY_PER_DAY: u64 = 1 << 30;
const DAY_MS: i64 = 24 * 3600 * 1000;

/// Import namespaces a host provides.
const PROVIDED_IMPORTS: [&str; 2] = ["agora:compute/", "wasi:"];

#[derive(Clone)]
pub struct Registry {
    db: Db,
    /// Turns at the heavy checks of a publish ([`PUBLISH_CHECKS_AT_ONCE`]).
    checks: Arc<tokio::sync::Semaphore>,
    /// Heavy checks per key ([`PUBLISH_CHECKS_PER_KEY`]).
    checking: Arc<crate::tally::Tally<KeyId>>,
}

/// What the registry learns from a component's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// The contract's functions it imports that a browser tab does not
    /// provide (`browser::NOT_IN_TABS`), as `interface#function`.
    pub not_in_tabs: Vec<String>,
}

/// The WebAssembly features hosts enable (`JOB_WASM_FEATURES`): a component
/// outside them is refused at publish, since no host would load it.
pub fn job_wasm_features() -> wasmparser::WasmFeatures {
    agora_wire::limits::JOB_WASM_FEATURES.iter().fold(
        wasmparser::WasmFeatures::empty(),
        |all, name| {
            all | wasmparser::WasmFeatures::from_name(name).unwrap_or_else(|| {
                panic!("JOB_WASM_FEATURES names `{name}`, unknown to wasmparser")
            })
        },
    )
}

/// Validate a component and read its top-level imports and exports.
pub fn inspect(bytes: &[u8]) -> Result<Inspection, ApiError> {
    if !wasmparser::Parser::is_component(bytes) {
        return Err(ApiError::BadPackage("not a WebAssembly component".into()));
    }
    let types =
        match wasmparser::Validator::new_with_features(job_wasm_features()).validate_all(bytes) {
            Ok(types) => types,
            Err(e) => {
                return Err(
                    match wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
                        .validate_all(bytes)
                    {
                        Ok(_) => ApiError::BadPackage(format!(
                            "the component uses a WebAssembly feature hosts do not enable: {e}"
                        )),
                        Err(_) => ApiError::BadPackage(format!("invalid component: {e}")),
                    },
                );
            }
        };
    let mut found = Inspection {
        imports: Vec::new(),
        exports: Vec::new(),
        not_in_tabs: Vec::new(),
    };
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload =
            payload.map_err(|e| ApiError::BadPackage(format!("invalid component: {e}")))?;
        match payload {
            wasmparser::Payload::Version { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth -= 1,
            wasmparser::Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let import = import.map_err(|e| ApiError::BadPackage(e.to_string()))?;
                    // Types (the world's `use`d resources) come with the interfaces.
                    if !matches!(import.ty, wasmparser::ComponentTypeRef::Type(_)) {
                        found.imports.push(import.name.name.to_string());
                    }
                }
            }
            wasmparser::Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    let export = export.map_err(|e| ApiError::BadPackage(e.to_string()))?;
                    if export.kind != wasmparser::ComponentExternalKind::Type {
                        found.exports.push(export.name.name.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    for import in &found.imports {
        let unversioned = import.split('@').next().unwrap_or(import);
        if let Some(wasmparser::component_types::ComponentItem {
            ty: wasmparser::component_types::ComponentEntityType::Instance(id),
            ..
        }) = types.component_item_for_import(import)
        {
            found.not_in_tabs.extend(
                types[*id]
                    .exports
                    .keys()
                    .map(|function| format!("{unversioned}#{function}"))
                    .filter(|f| crate::browser::NOT_IN_TABS.contains(&f.as_str())),
            );
        }
    }
    if !found.exports.iter().any(|e| e == "run") {
        return Err(ApiError::BadPackage(
            "the component does not export `run` (the agora:compute job world)".into(),
        ));
    }
    if let Some(other) = found
        .imports
        .iter()
        .find(|i| !PROVIDED_IMPORTS.iter().any(|p| i.starts_with(p)))
    {
        return Err(ApiError::BadPackage(format!(
            "the component imports `{other}`, which Agora hosts do not provide"
        )));
    }
    Ok(found)
}

pub fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(ApiError::Invalid(format!(
            "a package name is 1 to {MAX_NAME_LEN} of a-z, 0-9 and '-', starting with a letter or digit"
        )));
    }
    Ok(())
}

fn summary_from(row: &AnyRow) -> Result<PackageSummary, ApiError> {
    let tags: String = row.try_get("tags")?;
    Ok(PackageSummary {
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        category: row.try_get("category")?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        owner: KeyId::parse(&row.try_get::<String, _>("owner")?)
            .map_err(|e| ApiError::Internal(e.to_string()))?,
        latest: row.try_get("latest")?,
        downloads: row.try_get::<i64, _>("downloads")? as u64,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

/// The newest non-yanked version, computed in SQL order is not semver
/// order, so it is chosen here.
const SUMMARY_SELECT: &str = "SELECT p.name AS name, p.description AS description, p.category AS category, p.tags AS tags,
    p.owner AS owner, p.downloads AS downloads, p.updated_at_ms AS updated_at_ms,
    (SELECT v.version FROM versions v WHERE v.name = p.name AND v.yanked = 0 ORDER BY v.published_at_ms DESC LIMIT 1) AS latest
    FROM packages p";

impl Registry {
    pub fn new(db: Db) -> Self {
        Registry {
            db,
            checks: Arc::new(tokio::sync::Semaphore::new(PUBLISH_CHECKS_AT_ONCE)),
            checking: Arc::default(),
        }
    }

    /// The package's log, oldest first.
    pub async fn log(&self, name: &str) -> Result<Vec<LogEntry>, ApiError> {
        read_log(&self.db.pool, name).await
    }

    /// Publish a version signed by `signer`.
    pub async fn publish(
        &self,
        signer: &KeyId,
        name: &str,
        request: PublishRequest,
        now_ms: i64,
    ) -> Result<VersionInfo, ApiError> {
        check_name(name)?;
        let LogAction::Release {
            version,
            digest,
            size,
        } = &request.entry.action
        else {
            return Err(ApiError::BadLog(
                "a publish carries a `release` log entry".into(),
            ));
        };
        semver::Version::parse(version)
            .map_err(|e| ApiError::Invalid(format!("version `{version}` is not semver: {e}")))?;
        if request.entry.package != name {
            return Err(ApiError::BadLog(format!(
                "the log entry is for `{}`, not `{name}`",
                request.entry.package
            )));
        }
        if request.entry.signer != *signer {
            return Err(ApiError::Forbidden(
                "the release must be signed by the key that signs the request".into(),
            ));
        }
        check_metadata(&request)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&request.component_base64)
            .map_err(|e| ApiError::Invalid(format!("component_base64: {e}")))?;
        if bytes.len() > MAX_COMPONENT_BYTES {
            return Err(ApiError::BadPackage(format!(
                "component of {} bytes exceeds {MAX_COMPONENT_BYTES}",
                bytes.len()
            )));
        }
        let actual = agora_wire::digest_hex(&bytes);
        if actual != *digest || *size != bytes.len() as u64 {
            return Err(ApiError::BadPackage(format!(
                "the component's digest is {actual} ({} bytes) but the signed release says {digest} ({size} bytes)",
                bytes.len()
            )));
        }
        // The cheap checks first, on what is stored now: the name's owner,
        // a free version, the signed entry, the key's quota. They are made
        // again in the write transaction, after the heavy ones.
        self.may_publish(
            &mut *self.db.pool.acquire().await?,
            signer,
            &request.entry,
            bytes.len(),
            now_ms,
        )
        .await?;
        // Shared with the checks' thread, not copied (up to 64 MiB).
        let bytes: Arc<[u8]> = bytes.into();
        let (inspection, bundle) = self
            .heavy_checks(signer, bytes.clone(), actual.clone())
            .await?;
        match &bundle {
            Ok(b) => {
                tracing::info!(package = name, version = %version, files = b.manifest.files.len(), "browser bundle made")
            }
            Err(why) => {
                tracing::info!(package = name, version = %version, "not browser-capable: {why}")
            }
        }

        // The component's and the bundle's bytes first, outside the
        // transaction.
        let bundle_files = bundle.iter().flat_map(|b| {
            b.manifest
                .files
                .iter()
                .zip(&b.files)
                .map(|(f, bytes)| (f.digest.clone(), Bytes::copy_from_slice(bytes)))
        });
        let blobs =
            std::iter::once((actual.clone(), Bytes::from_owner(bytes.clone()))).chain(bundle_files);
        let mut staged = crate::blobs::Staged::write(&self.db, blobs.collect::<Vec<_>>()).await?;
        let mut tx = self.db.write().await?;
        self.may_publish(&mut tx, signer, &request.entry, bytes.len(), now_ms)
            .await?;

        let tags_json = serde_json::to_string(&request.tags).expect("plain JSON");
        let search = format!(
            "{} {} {}",
            name,
            request.description,
            request.tags.join(" ")
        )
        .to_lowercase();
        staged.record(&mut tx, crate::blobs::Pin::Kept).await?;
        sqlx::query(
            "INSERT INTO packages (name, owner, description, category, tags, search, downloads, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $7)
             ON CONFLICT (name) DO UPDATE SET description = $3, category = $4, tags = $5, search = $6, updated_at_ms = $7",
        )
        .bind(name)
        .bind(signer.as_str())
        .bind(&request.description)
        .bind(&request.category)
        .bind(&tags_json)
        .bind(&search)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let imports = serde_json::to_string(&inspection.imports).expect("plain JSON");
        let exports = serde_json::to_string(&inspection.exports).expect("plain JSON");
        let inserted = sqlx::query(
            "INSERT INTO versions (name, version, digest, size, yanked, published_at_ms, imports, exports, publisher, adds_outputs)
             VALUES ($1, $2, $3, $4, 0, $5, $6, $7, $8, $9)",
        )
        .bind(name)
        .bind(version)
        .bind(&actual)
        .bind(bytes.len() as i64)
        .bind(now_ms)
        .bind(&imports)
        .bind(&exports)
        .bind(signer.as_str())
        .bind(
            inspection
                .not_in_tabs
                .iter()
                .any(|f| f == crate::browser::ADDS_OUTPUTS) as i64,
        )
        .execute(&mut *tx)
        .await;
        let logged = match inserted {
            Ok(_) => append_entry(&mut tx, &request.entry).await,
            Err(e) => Err(e),
        };
        if let (Ok(()), Ok(built)) = (&logged, &bundle) {
            store_bundle(&mut tx, built, now_ms).await?;
        }
        if let Err(e) = logged {
            return Err(conflict_or(e, || {
                ApiError::VersionExists(format!("{name} {version} was published concurrently"))
            }));
        }
        tx.commit().await.map_err(|e| {
            conflict_or(e, || {
                ApiError::VersionExists(format!("{name} {version} was published concurrently"))
            })
        })?;
        staged.settle().await;
        Ok(VersionInfo {
            version: version.clone(),
            digest: actual,
            size: bytes.len() as u64,
            yanked: false,
            published_at_ms: now_ms,
            imports: inspection.imports,
            exports: inspection.exports,
            browser: bundle.is_ok(),
        })
    }

    /// Whether `signer` may append the release `entry` of `size` bytes now:
    /// the name is free or its own, the version is free, the log with the
    /// entry verifies, and the key is within its daily quotas.
    async fn may_publish(
        &self,
        db: &mut sqlx::AnyConnection,
        signer: &KeyId,
        entry: &LogEntry,
        size: usize,
        now_ms: i64,
    ) -> Result<(), ApiError> {
        let name = &entry.package;
        let mut log = read_log(&mut *db, name).await?;
        if let Some(first) = log.first() {
            let state = verify_log(&log, None)
                .map_err(|e| ApiError::Internal(format!("stored log of {name}: {e}")))?;
            if state.owner != *signer {
                return Err(ApiError::NameTaken(format!(
                    "package `{name}` belongs to another publisher ({})",
                    first.signer
                )));
            }
            if let LogAction::Release { version, .. } = &entry.action
                && state.releases.contains_key(version)
            {
                return Err(ApiError::VersionExists(format!(
                    "{name} {version} is already published; versions never change"
                )));
            }
        }
        log.push(entry.clone());
        verify_log(&log, None).map_err(|e| ApiError::BadLog(e.to_string()))?;
        let published = sqlx::query(
            "SELECT COUNT(*) AS versions, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS bytes FROM versions WHERE publisher = $1 AND published_at_ms > $2",
        )
        .bind(signer.as_str())
        .bind(now_ms - DAY_MS)
        .fetch_one(&mut *db)
        .await?;
        let versions = published.try_get::<i64, _>("versions")? as u64 + 1;
        let bytes = published.try_get::<i64, _>("bytes")? as u64 + size as u64;
        let over = |name, what, value, max| {
            ApiError::Limit(agora_wire::limits::LimitError {
                name,
                what,
                value,
                min: 0,
                max,
            })
        };
        if versions > MAX_VERSIONS_PER_KEY_PER_DAY {
            return Err(over(
                "MAX_VERSIONS_PER_KEY_PER_DAY",
                "versions published by this key in a day",
                versions,
                MAX_VERSIONS_PER_KEY_PER_DAY,
            ));
        }
        if bytes > MAX_PUBLISH_BYTES_PER_KEY_PER_DAY {
            return Err(over(
                "MAX_PUBLISH_BYTES_PER_KEY_PER_DAY",
                "component bytes published by this key in a day",
                bytes,
                MAX_PUBLISH_BYTES_PER_KEY_PER_DAY,
            ));
        }
        Ok(())
    }

    /// Validate the component and make its browser bundle, off the async
    /// threads, one of [`PUBLISH_CHECKS_AT_ONCE`], within
    /// [`PUBLISH_CHECK_DEADLINE`]. The bundle is made before the write
    /// transaction (it is pure computation) and stored with the version, or
    /// not at all.
    async fn heavy_checks(
        &self,
        signer: &KeyId,
        bytes: Arc<[u8]>,
        digest: String,
    ) -> Result<(Inspection, Result<crate::browser::Built, String>), ApiError> {
        let mine = self
            .checking
            .enter(signer, PUBLISH_CHECKS_PER_KEY, usize::MAX)
            .map_err(|_| ApiError::Busy)?;
        let turn =
            tokio::time::timeout(PUBLISH_CHECK_DEADLINE, self.checks.clone().acquire_owned())
                .await
                .map_err(|_| ApiError::Busy)?;
        let turn = turn.expect("the checks' semaphore is never closed");
        let started = tokio::time::Instant::now();
        let checks = tokio::task::spawn_blocking(move || {
            // Held until the checks end, even when the request gave up.
            let (_turn, _mine) = (turn, mine);
            let inspection = inspect(&bytes)?;
            let bundle = crate::browser::build(&bytes, &digest, &inspection);
            Ok::<_, ApiError>((inspection, bundle))
        });
        match tokio::time::timeout_at(started + PUBLISH_CHECK_DEADLINE, checks).await {
            Ok(done) => {
                done.map_err(|e| ApiError::Internal(format!("checking a component: {e}")))?
            }
            Err(_) => Err(ApiError::BadPackage(format!(
                "the component took longer than {} s to check (PUBLISH_CHECK_DEADLINE)",
                PUBLISH_CHECK_DEADLINE.as_secs()
            ))),
        }
    }

    /// The browser bundle of the component with `digest`.
    pub async fn browser_bundle(&self, digest: &str) -> Result<BrowserBundle, ApiError> {
        let row = sqlx::query("SELECT manifest FROM browser_bundles WHERE component_digest = $1")
            .bind(digest)
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or_else(|| {
                ApiError::NotFound(format!("no browser bundle for component {digest}"))
            })?;
        serde_json::from_str(&row.try_get::<String, _>("manifest")?)
            .map_err(|e| ApiError::Internal(format!("bundle manifest: {e}")))
    }

    /// One file of a browser bundle: its content type and bytes.
    /// The content type and blob digest of `file` of the browser bundle of
    /// component `digest`.
    pub async fn browser_file(
        &self,
        digest: &str,
        file: &str,
    ) -> Result<(&'static str, String), ApiError> {
        let manifest = self.browser_bundle(digest).await?;
        let entry = manifest
            .files
            .iter()
            .find(|f| f.name == file)
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "the browser bundle of {digest} has no file `{file}`"
                ))
            })?;
        Ok((crate::browser::content_type(file), entry.digest.clone()))
    }

    /// Append a yank or key rotation signed by the package's current key.
    pub async fn append(
        &self,
        signer: &KeyId,
        name: &str,
        entry: LogEntry,
    ) -> Result<LogEntry, ApiError> {
        if entry.signer != *signer {
            return Err(ApiError::Forbidden(
                "the entry must be signed by the key that signs the request".into(),
            ));
        }
        if matches!(entry.action, LogAction::Release { .. }) {
            return Err(ApiError::BadLog(
                "releases are published with their component".into(),
            ));
        }
        let mut tx = self.db.write().await?;
        let mut log = read_log(&mut *tx, name).await?;
        if log.is_empty() {
            return Err(ApiError::NotFound(format!("no package `{name}`")));
        }
        let owner = verify_log(&log, None)
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .owner;
        if owner != *signer {
            return Err(ApiError::Forbidden(format!(
                "package `{name}` belongs to another key"
            )));
        }
        log.push(entry.clone());
        verify_log(&log, None).map_err(|e| ApiError::BadLog(e.to_string()))?;
        match &entry.action {
            LogAction::Yank { version } => {
                sqlx::query("UPDATE versions SET yanked = 1 WHERE name = $1 AND version = $2")
                    .bind(name)
                    .bind(version)
                    .execute(&mut *tx)
                    .await?;
            }
            LogAction::RotateKey { new_key } => {
                sqlx::query("UPDATE packages SET owner = $1 WHERE name = $2")
                    .bind(new_key.as_str())
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
            }
            LogAction::Release { .. } => unreachable!("refused above"),
        }
        append_entry(&mut tx, &entry).await.map_err(|e| {
            conflict_or(e, || {
                ApiError::BadLog("the log moved on concurrently".into())
            })
        })?;
        tx.commit().await?;
        Ok(entry)
    }

    /// Every category with its number of packages, largest first.
    pub async fn categories(&self) -> Result<Vec<agora_wire::api::Category>, ApiError> {
        let rows = sqlx::query("SELECT category, COUNT(*) AS n FROM packages GROUP BY category ORDER BY n DESC, category LIMIT 200")
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(agora_wire::api::Category {
                    name: r.try_get("category")?,
                    packages: r.try_get::<i64, _>("n")? as u64,
                })
            })
            .collect()
    }

    pub async fn search(
        &self,
        query: Option<&str>,
        category: Option<&str>,
        sort: &str,
        page: u32,
        per_page: u32,
    ) -> Result<Page<PackageSummary>, ApiError> {
        let per_page = per_page.clamp(1, 100);
        let pattern = format!(
            "%{}%",
            query.unwrap_or("").to_lowercase().replace(['%', '_'], "")
        );
        let category = category.unwrap_or("");
        let order = match sort {
            "downloads" => "downloads DESC, name",
            "recent" => "updated_at_ms DESC, name",
            "name" | "" => "name",
            other => {
                return Err(ApiError::Invalid(format!(
                    "sort `{other}`: expected downloads, recent or name"
                )));
            }
        };
        let filter = "WHERE p.search LIKE $1 AND ($2 = '' OR p.category = $2)";
        let rows = sqlx::query(&format!(
            "{SUMMARY_SELECT} {filter} ORDER BY {order} LIMIT $3 OFFSET $4"
        ))
        .bind(&pattern)
        .bind(category)
        .bind(per_page as i64)
        .bind(page as i64 * per_page as i64)
        .fetch_all(&self.db.pool)
        .await?;
        let total: i64 = sqlx::query(&format!("SELECT COUNT(*) AS n FROM packages p {filter}"))
            .bind(&pattern)
            .bind(category)
            .fetch_one(&self.db.pool)
            .await?
            .try_get("n")?;
        let items = rows.iter().map(summary_from).collect::<Result<_, _>>()?;
        Ok(Page {
            items,
            page,
            per_page,
            total: total as u64,
        })
    }

    pub async fn info(&self, name: &str) -> Result<PackageInfo, ApiError> {
        let row = sqlx::query(&format!("{SUMMARY_SELECT} WHERE p.name = $1"))
            .bind(name)
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no package `{name}`")))?;
        let summary = summary_from(&row)?;
        let rows = sqlx::query(
            "SELECT version, digest, size, yanked, published_at_ms, imports, exports,
                    (SELECT COUNT(*) FROM browser_bundles b WHERE b.component_digest = v.digest) AS browser
             FROM versions v WHERE name = $1 ORDER BY published_at_ms DESC",
        )
        .bind(name)
        .fetch_all(&self.db.pool)
        .await?;
        let mut versions = Vec::new();
        for r in rows {
            let list = |c: &str| -> Result<Vec<String>, ApiError> {
                Ok(serde_json::from_str(&r.try_get::<String, _>(c)?).unwrap_or_default())
            };
            versions.push(VersionInfo {
                version: r.try_get("version")?,
                digest: r.try_get("digest")?,
                size: r.try_get::<i64, _>("size")? as u64,
                yanked: r.try_get::<i64, _>("yanked")? != 0,
                published_at_ms: r.try_get("published_at_ms")?,
                imports: list("imports")?,
                exports: list("exports")?,
                browser: r.try_get::<i64, _>("browser")? > 0,
            });
        }
        Ok(PackageInfo { summary, versions })
    }

    /// The digest of the component of `name` `version`, counted as a
    /// public download (the route serves its bytes).
    pub async fn download(&self, name: &str, version: &str) -> Result<String, ApiError> {
        let digest: String =
            sqlx::query("SELECT digest FROM versions WHERE name = $1 AND version = $2")
                .bind(name)
                .bind(version)
                .fetch_optional(&self.db.pool)
                .await?
                .ok_or_else(|| {
                    ApiError::NotFound(format!("no package `{name}` version `{version}`"))
                })?
                .try_get("digest")?;
        sqlx::query("UPDATE packages SET downloads = downloads + 1 WHERE name = $1")
            .bind(name)
            .execute(&self.db.pool)
            .await?;
        Ok(digest)
    }

    /// The component of `name` `version`, for the market's own use (its
    /// verifier): not a download.
    pub async fn component(
        &self,
        name: &str,
        version: &str,
    ) -> Result<(String, Vec<u8>), ApiError> {
        let digest: String =
            sqlx::query_scalar("SELECT digest FROM versions WHERE name = $1 AND version = $2")
                .bind(name)
                .bind(version)
                .fetch_optional(&self.db.pool)
                .await?
                .ok_or_else(|| {
                    ApiError::NotFound(format!("no package `{name}` version `{version}`"))
                })?;
        let bytes = crate::blobs::read(&self.db, &digest).await?;
        // Pair check: what is run is what was stored under its digest.
        if agora_wire::digest_hex(&bytes) != digest {
            return Err(ApiError::Internal(format!(
                "stored component {digest} does not match its digest"
            )));
        }
        Ok((digest, bytes))
    }
}

fn check_metadata(request: &PublishRequest) -> Result<(), ApiError> {
    if request.description.len() > MAX_DESCRIPTION_LEN {
        return Err(ApiError::Invalid(format!(
            "description longer than {MAX_DESCRIPTION_LEN} bytes"
        )));
    }
    if request.category.len() > MAX_TAG_LEN
        || request.tags.len() > MAX_TAGS
        || request.tags.iter().any(|t| t.len() > MAX_TAG_LEN)
    {
        return Err(ApiError::Invalid(format!(
            "at most {MAX_TAGS} tags, each (and the category) at most {MAX_TAG_LEN} bytes"
        )));
    }
    Ok(())
}

async fn read_log<'c>(
    executor: impl sqlx::Executor<'c, Database = sqlx::Any>,
    name: &str,
) -> Result<Vec<LogEntry>, ApiError> {
    let rows = sqlx::query("SELECT entry FROM package_log WHERE name = $1 ORDER BY seq")
        .bind(name)
        .fetch_all(executor)
        .await?;
    rows.iter()
        .map(|r| {
            let text: String = r.try_get("entry")?;
            serde_json::from_str(&text)
                .map_err(|e| ApiError::Internal(format!("stored log entry: {e}")))
        })
        .collect()
}

async fn append_entry(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    entry: &LogEntry,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO package_log (name, seq, entry, hash) VALUES ($1, $2, $3, $4)")
        .bind(&entry.package)
        .bind(entry.seq as i64)
        .bind(serde_json::to_string(entry).expect("plain JSON"))
        .bind(entry.hash())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn conflict_or(e: sqlx::Error, conflict: impl FnOnce() -> ApiError) -> ApiError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => conflict(),
        _ => e.into(),
    }
}

/// Store a bundle's manifest (its files are recorded with the component).
async fn store_bundle(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    built: &crate::browser::Built,
    now_ms: i64,
) -> Result<(), ApiError> {
    sqlx::query("INSERT INTO browser_bundles (component_digest, manifest, built_at_ms) VALUES ($1, $2, $3) ON CONFLICT (component_digest) DO NOTHING")
        .bind(&built.manifest.component_digest)
        .bind(serde_json::to_string(&built.manifest).expect("plain JSON"))
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
