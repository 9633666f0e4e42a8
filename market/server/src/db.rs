//! The database: SQLite (one file, the default) or PostgreSQL (shared by
//! market replicas), behind sqlx's `Any` driver with runtime queries that
//! both accept. Migrations are timestamped SQL files, one set per database,
//! embedded at build time and applied at start. A blob's bytes are not in
//! the database but in the object store the `Db` carries beside its pool
//! ([`crate::store`]).

use crate::store::BlobStore;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{Any, AnyPool, Transaction};
use std::borrow::Cow;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    NoStore(String),
}

/// A write transaction (see [`Db::write`]).
pub type Tx = Transaction<'static, Any>;

#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub kind: Kind,
    /// What it was opened with (a PostgreSQL listener opens its own
    /// connection: `feeds`).
    pub url: std::sync::Arc<str>,
    /// Where blob bytes live (`blobs` rows say what they are).
    pub blobs: crate::store::BlobStore,
}

/// The migrations of each database, in order: (version, description, SQL).
const SQLITE: &[(i64, &str, &str)] = &[
    (
        20261124000000,
        "core",
        include_str!("../migrations/sqlite/20261124000000_core.sql"),
    ),
    (
        20261124010000,
        "jobs",
        include_str!("../migrations/sqlite/20261124010000_jobs.sql"),
    ),
    (
        20261124020000,
        "live",
        include_str!("../migrations/sqlite/20261124020000_live.sql"),
    ),
    (
        20261124030000,
        "activity",
        include_str!("../migrations/sqlite/20261124030000_activity.sql"),
    ),
    (
        20261124040000,
        "browser",
        include_str!("../migrations/sqlite/20261124040000_browser.sql"),
    ),
    (
        20261124050000,
        "canaries",
        include_str!("../migrations/sqlite/20261124050000_canaries.sql"),
    ),
    (
        20261202000000,
        "promises",
        include_str!("../migrations/sqlite/20261202000000_promises.sql"),
    ),
    (
        20261202100000,
        "verifications",
        include_str!("../migrations/sqlite/20261202100000_verifications.sql"),
    ),
    (
        20261206000000,
        "confirming",
        include_str!("../migrations/sqlite/20261206000000_confirming.sql"),
    ),
    (
        20261206010000,
        "retention",
        include_str!("../migrations/sqlite/20261206010000_retention.sql"),
    ),
    (
        20261206020000,
        "private_inputs",
        include_str!("../migrations/sqlite/20261206020000_private_inputs.sql"),
    ),
    (
        20261207000000,
        "data_retention",
        include_str!("../migrations/sqlite/20261207000000_data_retention.sql"),
    ),
    (
        20261207010000,
        "publish_quotas",
        include_str!("../migrations/sqlite/20261207010000_publish_quotas.sql"),
    ),
    (
        20261207020000,
        "job_notices",
        include_str!("../migrations/sqlite/20261207020000_job_notices.sql"),
    ),
    (
        20261207030000,
        "object_store",
        include_str!("../migrations/sqlite/20261207030000_object_store.sql"),
    ),
    (
        20261207040000,
        "uploads",
        include_str!("../migrations/sqlite/20261207040000_uploads.sql"),
    ),
    (
        20261207050000,
        "lease_outputs",
        include_str!("../migrations/sqlite/20261207050000_lease_outputs.sql"),
    ),
    (
        20261208000000,
        "cancel",
        include_str!("../migrations/sqlite/20261208000000_cancel.sql"),
    ),
    (
        20261208010000,
        "requirements",
        include_str!("../migrations/sqlite/20261208010000_requirements.sql"),
    ),
    (
        20261208020000,
        "work_filters",
        include_str!("../migrations/sqlite/20261208020000_work_filters.sql"),
    ),
    (
        20261208030000,
        "bids",
        include_str!("../migrations/sqlite/20261208030000_bids.sql"),
    ),
    (
        20261208040000,
        "retries",
        include_str!("../migrations/sqlite/20261208040000_retries.sql"),
    ),
    (
        20261208050000,
        "telemetry_history",
        include_str!("../migrations/sqlite/20261208050000_telemetry_history.sql"),
    ),
    (
        20261208060000,
        "speed",
        include_str!("../migrations/sqlite/20261208060000_speed.sql"),
    ),
    (
        20261208070000,
        "gated",
        include_str!("../migrations/sqlite/20261208070000_gated.sql"),
    ),
];
const POSTGRES: &[(i64, &str, &str)] = &[
    (
        20261124000000,
        "core",
        include_str!("../migrations/postgres/20261124000000_core.sql"),
    ),
    (
        20261124010000,
        "jobs",
        include_str!("../migrations/postgres/20261124010000_jobs.sql"),
    ),
    (
        20261124020000,
        "live",
        include_str!("../migrations/postgres/20261124020000_live.sql"),
    ),
    (
        20261124030000,
        "activity",
        include_str!("../migrations/postgres/20261124030000_activity.sql"),
    ),
    (
        20261124040000,
        "browser",
        include_str!("../migrations/postgres/20261124040000_browser.sql"),
    ),
    (
        20261124050000,
        "canaries",
        include_str!("../migrations/postgres/20261124050000_canaries.sql"),
    ),
    (
        20261202000000,
        "promises",
        include_str!("../migrations/postgres/20261202000000_promises.sql"),
    ),
    (
        20261202100000,
        "verifications",
        include_str!("../migrations/postgres/20261202100000_verifications.sql"),
    ),
    (
        20261206000000,
        "confirming",
        include_str!("../migrations/postgres/20261206000000_confirming.sql"),
    ),
    (
        20261206010000,
        "retention",
        include_str!("../migrations/postgres/20261206010000_retention.sql"),
    ),
    (
        20261206020000,
        "private_inputs",
        include_str!("../migrations/postgres/20261206020000_private_inputs.sql"),
    ),
    (
        20261207000000,
        "data_retention",
        include_str!("../migrations/postgres/20261207000000_data_retention.sql"),
    ),
    (
        20261207010000,
        "publish_quotas",
        include_str!("../migrations/postgres/20261207010000_publish_quotas.sql"),
    ),
    (
        20261207020000,
        "job_notices",
        include_str!("../migrations/postgres/20261207020000_job_notices.sql"),
    ),
    (
        20261207030000,
        "object_store",
        include_str!("../migrations/postgres/20261207030000_object_store.sql"),
    ),
    (
        20261207040000,
        "uploads",
        include_str!("../migrations/postgres/20261207040000_uploads.sql"),
    ),
    (
        20261207050000,
        "lease_outputs",
        include_str!("../migrations/postgres/20261207050000_lease_outputs.sql"),
    ),
    (
        20261208000000,
        "cancel",
        include_str!("../migrations/postgres/20261208000000_cancel.sql"),
    ),
    (
        20261208010000,
        "requirements",
        include_str!("../migrations/postgres/20261208010000_requirements.sql"),
    ),
    (
        20261208020000,
        "work_filters",
        include_str!("../migrations/postgres/20261208020000_work_filters.sql"),
    ),
    (
        20261208030000,
        "bids",
        include_str!("../migrations/postgres/20261208030000_bids.sql"),
    ),
    (
        20261208040000,
        "retries",
        include_str!("../migrations/postgres/20261208040000_retries.sql"),
    ),
    (
        20261208050000,
        "telemetry_history",
        include_str!("../migrations/postgres/20261208050000_telemetry_history.sql"),
    ),
    (
        20261208060000,
        "speed",
        include_str!("../migrations/postgres/20261208060000_speed.sql"),
    ),
    (
        20261208070000,
        "gated",
        include_str!("../migrations/postgres/20261208070000_gated.sql"),
    ),
];

#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> futures_core::future::BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>>
    {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

impl Db {
    /// Connect to `url` (`sqlite://path?mode=rwc`, `sqlite::memory:`,
    /// `postgres://...`) and apply the migrations, with blob bytes in the
    /// store [`BlobStore::beside`] the database (a SQLite database only: a
    /// market on PostgreSQL names its store, [`Db::connect_with`]).
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        let blobs = BlobStore::beside(url)?.ok_or_else(|| {
            DbError::NoStore(format!("{url} keeps no blob store beside it: name one"))
        })?;
        Db::connect_with(url, blobs).await
    }

    /// Connect to `url` with blob bytes in `blobs`, apply the migrations
    /// and move into `blobs` the bytes of records written before blobs
    /// lived in an object store.
    pub async fn connect_with(url: &str, blobs: BlobStore) -> Result<Db, DbError> {
        let db = Db::open(url, blobs).await?;
        let moved = crate::blobs::move_into_store(&db).await?;
        if moved > 0 {
            tracing::info!(moved, store = %db.blobs.location, "moved blob bytes from the database into the object store");
        }
        Ok(db)
    }

    async fn open(url: &str, blobs: BlobStore) -> Result<Db, sqlx::Error> {
        install_default_drivers();
        let kind = if url.starts_with("postgres") {
            Kind::Postgres
        } else {
            Kind::Sqlite
        };
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(30));
        options = match kind {
            // One writer at a time is SQLite's model; the pool is small and
            // writes take the lock up front (BEGIN IMMEDIATE).
            Kind::Sqlite => options.max_connections(if url.contains(":memory:") { 1 } else { 4 }),
            Kind::Postgres => options.max_connections(16),
        };
        let pool = options
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if kind == Kind::Sqlite {
                        use sqlx::Executor;
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        let source = match kind {
            Kind::Sqlite => Embedded(SQLITE),
            Kind::Postgres => Embedded(POSTGRES),
        };
        Migrator::new(source).await?.run(&pool).await?;
        Ok(Db {
            pool,
            kind,
            url: url.into(),
            blobs,
        })
    }

    /// A plain connection pool without migrations (administration: creating
    /// schemas or databases).
    pub async fn admin_pool(url: &str) -> Result<AnyPool, sqlx::Error> {
        install_default_drivers();
        AnyPoolOptions::new().max_connections(1).connect(url).await
    }

    /// A transaction for writes: on SQLite it takes the write lock at once,
    /// so two writers never deadlock upgrading a read lock.
    pub async fn write(&self) -> Result<Tx, sqlx::Error> {
        match self.kind {
            Kind::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Kind::Postgres => self.pool.begin().await,
        }
    }
}

/// A column stored as text and read as `T` through its `FromStr` (the state
/// enums of `agora-wire`): a typed field of a `sqlx::FromRow` row, so a
/// stored state no variant names is a decode error, never a guess.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Text<T>(pub T);

impl<T> sqlx::Type<Any> for Text<T> {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <String as sqlx::Type<Any>>::type_info()
    }

    fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
        <String as sqlx::Type<Any>>::compatible(ty)
    }
}

impl<'r, T> sqlx::Decode<'r, Any> for Text<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <String as sqlx::Decode<'r, Any>>::decode(value)?;
        Ok(Text(text.parse()?))
    }
}

#[cfg(test)]
mod tests {
    /// Every migration file is embedded, in order: a file added to a folder
    /// but not to its list would never run.
    #[test]
    fn every_migration_file_is_listed() {
        for (folder, listed) in [("sqlite", super::SQLITE), ("postgres", super::POSTGRES)] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(folder);
            let mut files: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            files.sort();
            let names: Vec<String> = listed
                .iter()
                .map(|(version, name, _)| format!("{version}_{name}.sql"))
                .collect();
            assert_eq!(
                files, names,
                "{folder}: the files and the embedded list differ"
            );
        }
    }
}
