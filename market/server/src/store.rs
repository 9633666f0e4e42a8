//! Where blob bytes live: an object store (the `object_store` crate), a
//! directory on disk for a single market or an S3-compatible bucket that
//! market replicas share. The `blobs` table keeps what a
//! blob is (its digest, size and pin: [`crate::blobs`]) and which object
//! holds its bytes. An object's key is the digest and a random part of its
//! own ([`BlobStore::new_key`]), so each record of a digest names an object
//! no other record ever named: a removal that lands late (a retry, a
//! collection whose lock was lost) can only hit the object of a record
//! already gone. An object is written whole (a directory writes a temporary
//! file and renames it, S3 makes an object visible only once complete) and
//! never changed after.
//!
//! Nothing here decides whether a blob may be stored, read or removed:
//! [`crate::blobs`] does.

use axum::body::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientConfigKey, GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload};
use std::ops::Range;
use std::sync::Arc;

/// The object store holding blob bytes, one object per digest.
#[derive(Clone, Debug)]
pub struct BlobStore {
    objects: Arc<dyn ObjectStore>,
    /// Where it is, as the operator named it (for logs).
    pub location: Arc<str>,
    /// A temporary directory the store lives in, removed with the last
    /// clone (tests and in-memory markets).
    _temporary: Option<Arc<tempfile::TempDir>>,
}

/// What went wrong with the store: typed, so callers decide on the kind.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no object {0}")]
    Missing(String),
    #[error("the blob store at {location}: {source}")]
    Store { location: Arc<str>, source: object_store::Error },
    #[error("opening the blob store at {location}: {message}")]
    Open { location: String, message: String },
    #[error("reading from the blob store at {location}: {source}")]
    Read { location: Arc<str>, source: std::io::Error },
}

/// What one read of a file in a directory store takes: a download holds one
/// piece at a time, so 1,024 downloads hold 256 MiB at most.
const FILE_PIECE_BYTES: u64 = 256 << 10;

/// The bytes `range` of `file`, read a piece at a time off the async threads.
fn file_pieces(file: std::fs::File, range: Range<u64>, location: Arc<str>) -> ByteStream {
    futures_util::stream::try_unfold((file, range), move |(mut file, range)| {
        let location = location.clone();
        async move {
            if range.is_empty() {
                return Ok(None);
            }
            let want = (range.end - range.start).min(FILE_PIECE_BYTES);
            let start = range.start;
            let read = tokio::task::spawn_blocking(move || {
                use std::io::{Read, Seek};
                let mut piece = vec![0; want as usize];
                file.seek(std::io::SeekFrom::Start(start))?;
                file.read_exact(&mut piece)?;
                Ok::<_, std::io::Error>((file, piece))
            })
            .await
            .map_err(std::io::Error::other)
            .and_then(|read| read);
            let (file, piece) = read.map_err(|source| StoreError::Read { location, source })?;
            Ok(Some((Bytes::from(piece), (file, start + want..range.end))))
        }
    })
    .boxed()
}

/// A stream of a blob's bytes, in the store's pieces.
pub type ByteStream = futures_util::stream::BoxStream<'static, Result<Bytes, StoreError>>;

impl BlobStore {
    /// The store at `location`: a directory (made if missing), or
    /// `s3://BUCKET`, an S3-compatible bucket reached with the `AWS_*`
    /// environment variables as the AWS tools read them (`AWS_ENDPOINT`,
    /// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_ALLOW_HTTP` for a plain-HTTP endpoint).
    pub fn open(location: &str) -> Result<Self, StoreError> {
        match location.split_once("://") {
            Some(("s3", _)) => BlobStore::s3(location, []),
            Some(_) => Err(StoreError::Open { location: location.into(), message: "a blob store is a directory or s3://BUCKET".into() }),
            None => BlobStore::in_dir(std::path::Path::new(location)),
        }
    }

    /// The bucket `url` (`s3://BUCKET`), configured from the environment
    /// and then from `options` (a test names its server's endpoint and
    /// keys here).
    pub fn s3(url: &str, options: impl IntoIterator<Item = (AmazonS3ConfigKey, String)>) -> Result<Self, StoreError> {
        let bucket = url.strip_prefix("s3://").unwrap_or_default();
        if bucket.is_empty() || bucket.contains('/') {
            return Err(StoreError::Open { location: url.into(), message: "name a bucket alone, s3://BUCKET (a bucket is one market's)".into() });
        }
        // A download streams for as long as its reader takes: no limit on
        // a whole request, only on each read.
        let streaming = [
            (AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "24h".to_string()),
            (AmazonS3ConfigKey::Client(ClientConfigKey::ReadTimeout), "30s".to_string()),
            (AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout), "10s".to_string()),
        ];
        let builder =
            streaming.into_iter().chain(options).fold(AmazonS3Builder::from_env().with_url(url), |b, (key, value)| b.with_config(key, value));
        let objects = builder.build().map_err(|e| StoreError::Open { location: url.into(), message: e.to_string() })?;
        Ok(BlobStore { objects: Arc::new(objects), location: url.into(), _temporary: None })
    }

    /// The store in directory `dir` (made if missing).
    pub fn in_dir(dir: &std::path::Path) -> Result<Self, StoreError> {
        let open = |message: String| StoreError::Open { location: dir.display().to_string(), message };
        std::fs::create_dir_all(dir).map_err(|e| open(e.to_string()))?;
        // Durable like the database's commit: an object is on disk, and
        // named, before the record naming it commits.
        let objects = LocalFileSystem::new_with_prefix(dir).map_err(|e| open(e.to_string()))?.with_fsync(true);
        Ok(BlobStore { objects: Arc::new(objects), location: dir.display().to_string().into(), _temporary: None })
    }

    /// The store a SQLite database at `url` keeps beside it: the directory
    /// `FILE.blobs` next to its file, or a [`BlobStore::temporary`] one for
    /// an in-memory database. None for any other database (PostgreSQL):
    /// replicas name the store they share.
    pub fn beside(url: &str) -> Result<Option<Self>, StoreError> {
        let Some(rest) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) else { return Ok(None) };
        let file = rest.split('?').next().unwrap_or_default();
        match file.is_empty() || file.contains(":memory:") {
            true => BlobStore::temporary().map(Some),
            false => BlobStore::in_dir(std::path::Path::new(&format!("{file}.blobs"))).map(Some),
        }
    }

    /// A store in a fresh temporary directory, removed when the last clone
    /// of the store is dropped: for markets whose database is in memory too.
    pub fn temporary() -> Result<Self, StoreError> {
        let dir = tempfile::Builder::new()
            .prefix("agora-blobs-")
            .tempdir()
            .map_err(|e| StoreError::Open { location: "a temporary directory".into(), message: e.to_string() })?;
        let store = BlobStore::in_dir(dir.path())?;
        Ok(BlobStore { _temporary: Some(Arc::new(dir)), ..store })
    }

    /// A key no object has had: the digest (two of its characters first, so
    /// no directory holds millions of entries) and a random part.
    pub fn new_key(digest: &str) -> String {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).expect("the OS's random source");
        format!("blobs/{}/{digest}.{}", digest.get(..2).unwrap_or("__"), hex::encode(random))
    }

    fn failed(&self, key: &str) -> impl Fn(object_store::Error) -> StoreError + Send + Sync + use<> {
        let (location, key) = (self.location.clone(), key.to_string());
        move |source| match source {
            object_store::Error::NotFound { .. } => StoreError::Missing(key.clone()),
            source => StoreError::Store { location: location.clone(), source },
        }
    }

    /// Whether the object `key` is there.
    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        match self.objects.head(&Path::from(key)).await.map_err(self.failed(key)) {
            Ok(_) => Ok(true),
            Err(StoreError::Missing(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Write the object `key` (a [`BlobStore::new_key`]).
    pub async fn write(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.objects.put(&Path::from(key), PutPayload::from_bytes(bytes)).await.map_err(self.failed(key))?;
        Ok(())
    }

    /// The whole object `key`.
    pub async fn read(&self, key: &str) -> Result<Bytes, StoreError> {
        let found = self.objects.get(&Path::from(key)).await.map_err(self.failed(key))?;
        found.bytes().await.map_err(self.failed(key))
    }

    /// The bytes `range` of the object `key` (all of it for None), as a
    /// stream that holds one piece at a time.
    pub async fn stream(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream, StoreError> {
        let options = GetOptions { range: range.map(GetRange::Bounded), ..GetOptions::default() };
        let found = self.objects.get_opts(&Path::from(key), options).await.map_err(self.failed(key))?;
        let failed = self.failed(key);
        Ok(match found.payload {
            // A file is read here in FILE_PIECE_BYTES pieces (the store's own
            // stream reads 8 KiB at a time, each a blocking task).
            GetResultPayload::File(file, _) => file_pieces(file, found.range, self.location.clone()),
            GetResultPayload::Stream(pieces) => pieces.map(move |piece| piece.map_err(&failed)).boxed(),
        })
    }

    /// Remove the object `key` (nothing when it is not there).
    pub async fn remove(&self, key: &str) -> Result<(), StoreError> {
        match self.objects.delete(&Path::from(key)).await.map_err(self.failed(key)) {
            Ok(()) | Err(StoreError::Missing(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
