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
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    ClientConfigKey, GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt,
    PutPayload,
};
use std::ops::Range;
use std::sync::Arc;

/// The object store holding blob bytes, one object per digest.
#[derive(Clone, Debug)]
pub struct BlobStore {
    objects: Arc<dyn ObjectStore>,
    /// Where an upload's chunks go before its object is whole.
    parts: Parts,
    /// Where it is, as the operator named it (for logs).
    pub location: Arc<str>,
    /// A temporary directory the store lives in, removed with the last
    /// clone (tests and in-memory markets).
    _temporary: Option<Arc<tempfile::TempDir>>,
}

/// How a blob uploaded in chunks becomes an object: written into a file of
/// the directory store at each chunk's offset and renamed into place when
/// whole, or sent as the parts of an S3 multipart upload that S3 joins. No
/// byte is read back or copied again.
#[derive(Clone, Debug)]
enum Parts {
    Dir(std::path::PathBuf),
    S3(Arc<AmazonS3>),
}

/// What went wrong with the store: typed, so callers decide on the kind.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no object {0}")]
    Missing(String),
    #[error("the blob store at {location}: {source}")]
    Store {
        location: Arc<str>,
        source: object_store::Error,
    },
    #[error("opening the blob store at {location}: {message}")]
    Open { location: String, message: String },
    #[error("the blob store at {location}: {source}")]
    Io {
        location: Arc<str>,
        source: std::io::Error,
    },
}

/// What one read of a file in a directory store takes: a download holds
/// two pieces at a time (one being sent, the next being read), so 1,024
/// downloads hold 512 MiB at most.
const FILE_PIECE_BYTES: u64 = 256 << 10;

/// The bytes `range` of `file`, read a piece at a time off the async
/// threads: the first when the stream is first polled (a download dropped
/// unread, a HEAD, reads nothing), each next one begun while the one before
/// is sent. One read at a time, so the file's position is never shared.
fn file_pieces(file: std::fs::File, range: Range<u64>, location: Arc<str>) -> ByteStream {
    let file = Arc::new(file);
    let read_from = move |range: &Range<u64>| {
        let (file, start) = (file.clone(), range.start);
        let want = (range.end - range.start).min(FILE_PIECE_BYTES);
        (want > 0).then(|| tokio::task::spawn_blocking(move || read_piece(&file, start, want)))
    };
    futures_util::stream::try_unfold((range, None), move |(range, reading)| {
        let (location, read_from) = (location.clone(), read_from.clone());
        async move {
            let Some(reading) = reading.or_else(|| read_from(&range)) else {
                return Ok(None);
            };
            let read = reading
                .await
                .map_err(std::io::Error::other)
                .and_then(|read| read);
            let piece = read.map_err(|source| StoreError::Io { location, source })?;
            let rest = range.start + piece.len() as u64..range.end;
            let next = read_from(&rest);
            Ok(Some((Bytes::from(piece), (rest, next))))
        }
    })
    .boxed()
}

/// The `want` bytes of `file` from `start`.
fn read_piece(mut file: &std::fs::File, start: u64, want: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek};
    file.seek(std::io::SeekFrom::Start(start))?;
    let mut piece = vec![0; want as usize];
    file.read_exact(&mut piece)?;
    Ok(piece)
}

/// A directory store's part id: the chunk was written, unsynced, in the
/// boot named after it; or it was synced.
const BOOT_PART: &str = "boot:";
const SYNCED_PART: &str = "synced";

/// Start writing the bytes `offset..offset + len` of `file` to the disk
/// and return at once (Linux's `sync_file_range` with `WRITE`): the disk
/// works while the rest of an upload arrives, so the sync that finishes it
/// has little left to wait for. Elsewhere, and on any error, nothing: that
/// sync writes whatever is left.
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor belongs to `file`, open for the whole call;
        // the call reads no memory of ours.
        let _ = unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// This machine's boot (Linux's boot id), read once; None elsewhere.
fn boot_id() -> Option<String> {
    static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|id| id.trim().to_string())
            .filter(|id| !id.is_empty())
    })
    .clone()
}

/// An upload's parts file of `size` bytes (sparse), synced with its
/// folder, so a crash of the machine does not lose the file itself. `new`:
/// none may be there already.
fn make_parts_file(file: &std::path::Path, size: u64, new: bool) -> std::io::Result<()> {
    let folder = file.parent().expect("under the store");
    std::fs::create_dir_all(folder)?;
    let made = match new {
        true => std::fs::File::create_new(file)?,
        false => std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(file)?,
    };
    made.set_len(size)?;
    made.sync_all()?;
    std::fs::File::open(folder)?.sync_all()
}

/// 64 random bits, hex.
fn random_hex() -> String {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).expect("the OS's random source");
    hex::encode(random)
}

/// The file an upload's chunks are written into in a directory store
/// (`handle` is one this store made: hex).
fn parts_file(dir: &std::path::Path, handle: &str) -> std::path::PathBuf {
    dir.join("uploads").join(handle)
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
            Some(_) => Err(StoreError::Open {
                location: location.into(),
                message: "a blob store is a directory or s3://BUCKET".into(),
            }),
            None => BlobStore::in_dir(std::path::Path::new(location)),
        }
    }

    /// The bucket `url` (`s3://BUCKET`), configured from the environment
    /// and then from `options` (a test names its server's endpoint and
    /// keys here).
    pub fn s3(
        url: &str,
        options: impl IntoIterator<Item = (AmazonS3ConfigKey, String)>,
    ) -> Result<Self, StoreError> {
        let bucket = url.strip_prefix("s3://").unwrap_or_default();
        if bucket.is_empty() || bucket.contains('/') {
            return Err(StoreError::Open {
                location: url.into(),
                message: "name a bucket alone, s3://BUCKET (a bucket is one market's)".into(),
            });
        }
        // A download streams for as long as its reader takes: no limit on
        // a whole request, only on each read.
        let streaming = [
            (
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                "24h".to_string(),
            ),
            (
                AmazonS3ConfigKey::Client(ClientConfigKey::ReadTimeout),
                "30s".to_string(),
            ),
            (
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                "10s".to_string(),
            ),
        ];
        let builder = streaming.into_iter().chain(options).fold(
            AmazonS3Builder::from_env().with_url(url),
            |b, (key, value)| b.with_config(key, value),
        );
        let objects = Arc::new(builder.build().map_err(|e| StoreError::Open {
            location: url.into(),
            message: e.to_string(),
        })?);
        Ok(BlobStore {
            objects: objects.clone(),
            parts: Parts::S3(objects),
            location: url.into(),
            _temporary: None,
        })
    }

    /// The store in directory `dir` (made if missing).
    pub fn in_dir(dir: &std::path::Path) -> Result<Self, StoreError> {
        let open = |message: String| StoreError::Open {
            location: dir.display().to_string(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| open(e.to_string()))?;
        // Durable like the database's commit: an object is on disk, and
        // named, before the record naming it commits.
        let objects = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| open(e.to_string()))?
            .with_fsync(true);
        let dir = dir.canonicalize().map_err(|e| open(e.to_string()))?;
        Ok(BlobStore {
            objects: Arc::new(objects),
            parts: Parts::Dir(dir.clone()),
            location: dir.display().to_string().into(),
            _temporary: None,
        })
    }

    /// The store a SQLite database at `url` keeps beside it: the directory
    /// `FILE.blobs` next to its file, or a [`BlobStore::temporary`] one for
    /// an in-memory database. None for any other database (PostgreSQL):
    /// replicas name the store they share.
    pub fn beside(url: &str) -> Result<Option<Self>, StoreError> {
        let Some(rest) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        else {
            return Ok(None);
        };
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
            .map_err(|e| StoreError::Open {
                location: "a temporary directory".into(),
                message: e.to_string(),
            })?;
        let store = BlobStore::in_dir(dir.path())?;
        Ok(BlobStore {
            _temporary: Some(Arc::new(dir)),
            ..store
        })
    }

    /// A key no object has had: the digest (two of its characters first, so
    /// no directory holds millions of entries) and a random part.
    pub fn new_key(digest: &str) -> String {
        format!(
            "blobs/{}/{digest}.{}",
            digest.get(..2).unwrap_or("__"),
            random_hex()
        )
    }

    fn failed(
        &self,
        key: &str,
    ) -> impl Fn(object_store::Error) -> StoreError + Send + Sync + use<> {
        let (location, key) = (self.location.clone(), key.to_string());
        move |source| match source {
            object_store::Error::NotFound { .. } => StoreError::Missing(key.clone()),
            source => StoreError::Store {
                location: location.clone(),
                source,
            },
        }
    }

    /// Whether the object `key` is there.
    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        match self
            .objects
            .head(&Path::from(key))
            .await
            .map_err(self.failed(key))
        {
            Ok(_) => Ok(true),
            Err(StoreError::Missing(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Write the object `key` (a [`BlobStore::new_key`]).
    pub async fn write(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.objects
            .put(&Path::from(key), PutPayload::from_bytes(bytes))
            .await
            .map_err(self.failed(key))?;
        Ok(())
    }

    /// The whole object `key`.
    pub async fn read(&self, key: &str) -> Result<Bytes, StoreError> {
        let found = self
            .objects
            .get(&Path::from(key))
            .await
            .map_err(self.failed(key))?;
        found.bytes().await.map_err(self.failed(key))
    }

    /// The bytes `range` of the object `key` (all of it for None), as a
    /// stream that holds a piece or two at a time.
    pub async fn stream(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, StoreError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let found = self
            .objects
            .get_opts(&Path::from(key), options)
            .await
            .map_err(self.failed(key))?;
        let failed = self.failed(key);
        Ok(match found.payload {
            // A file is read here in FILE_PIECE_BYTES pieces (the store's own
            // stream reads 8 KiB at a time, each a blocking task).
            GetResultPayload::File(file, _) => {
                file_pieces(file, found.range, self.location.clone())
            }
            GetResultPayload::Stream(pieces) => {
                pieces.map(move |piece| piece.map_err(&failed)).boxed()
            }
        })
    }

    /// Begin the object `key` of `size` bytes, to arrive in chunks; the
    /// handle its chunks and its end name (a file of the directory, or the
    /// S3 upload's id). Nothing is visible under `key` until
    /// [`BlobStore::finish_parts`].
    pub async fn begin_parts(&self, key: &str, size: u64) -> Result<String, StoreError> {
        match &self.parts {
            Parts::Dir(dir) => {
                let handle = random_hex();
                let file = parts_file(dir, &handle);
                self.blocking(move || make_parts_file(&file, size, true))
                    .await?;
                Ok(handle)
            }
            Parts::S3(s3) => s3
                .create_multipart(&Path::from(key))
                .await
                .map_err(self.failed(key)),
        }
    }

    /// Write chunk `index` (its bytes, in the `pieces` they arrived in,
    /// start at `offset`) of the object being uploaded under `handle`; the
    /// part's id, kept for the end (for a directory: the boot it was written
    /// in, unsynced). Writing the same chunk again writes the same place.
    pub async fn put_part(
        &self,
        key: &str,
        handle: &str,
        index: u64,
        offset: u64,
        pieces: Vec<Bytes>,
    ) -> Result<String, StoreError> {
        match &self.parts {
            Parts::Dir(dir) => {
                let file = parts_file(dir, handle);
                // Not synced chunk by chunk (the disk would bound an upload
                // at its synced write rate): the part id names this boot,
                // and a chunk written in an earlier boot is checked again
                // before the object is finished (`parts_at_risk`). Its
                // writeback starts at once, so the sync that finishes the
                // object has little left. Where the boot cannot be named,
                // each chunk is synced.
                let boot = boot_id();
                let sync = boot.is_none();
                self.blocking(move || {
                    use std::io::{Seek, Write};
                    // Never made here: a finished or cancelled upload's file is gone.
                    let mut file = std::fs::OpenOptions::new().write(true).open(file)?;
                    file.seek(std::io::SeekFrom::Start(offset))?;
                    for piece in &pieces {
                        file.write_all(piece)?;
                    }
                    if sync {
                        return file.sync_data();
                    }
                    let written = pieces.iter().map(|p| p.len() as u64).sum();
                    start_writeback(&file, offset, written);
                    Ok(())
                })
                .await?;
                Ok(boot.map_or_else(
                    || SYNCED_PART.to_string(),
                    |boot| format!("{BOOT_PART}{boot}"),
                ))
            }
            Parts::S3(s3) => {
                let part = s3
                    .put_part(
                        &Path::from(key),
                        &handle.to_string(),
                        index as usize,
                        PutPayload::from_iter(pieces),
                    )
                    .await;
                Ok(part.map_err(self.failed(key))?.content_id)
            }
        }
    }

    /// The chunks (indexes into `parts`, the ids [`BlobStore::put_part`]
    /// gave) whose bytes a crash of the machine may have lost since: a
    /// directory store's chunks written in an earlier boot and never
    /// synced. Check them ([`BlobStore::read_part`]) before finishing.
    pub fn parts_at_risk(&self, parts: &[String]) -> Vec<usize> {
        if !matches!(self.parts, Parts::Dir(_)) {
            return Vec::new();
        }
        let boot = boot_id().map(|b| format!("{BOOT_PART}{b}"));
        parts
            .iter()
            .enumerate()
            .filter(|(_, part)| {
                part.starts_with(BOOT_PART) && Some(part.as_str()) != boot.as_deref()
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// The bytes `range` of the unfinished upload `handle` (a directory
    /// store's; S3 parts are never at risk).
    pub async fn read_part(&self, handle: &str, range: Range<u64>) -> Result<Vec<u8>, StoreError> {
        let Parts::Dir(dir) = &self.parts else {
            return Err(StoreError::Open {
                location: self.location.to_string(),
                message: "an S3 upload's parts are not read back".into(),
            });
        };
        let file = parts_file(dir, handle);
        let location = self.location.clone();
        let read = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Seek};
            let mut file = std::fs::File::open(file)?;
            file.seek(std::io::SeekFrom::Start(range.start))?;
            let mut bytes = vec![0; (range.end - range.start) as usize];
            file.read_exact(&mut bytes)?;
            Ok::<_, std::io::Error>(bytes)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        read.map_err(|source| StoreError::Io { location, source })
    }

    /// Make a directory store's parts file `handle` again, empty, when a
    /// crash of the machine lost it (every chunk is then sent again).
    pub async fn remake_parts(&self, handle: &str, size: u64) -> Result<(), StoreError> {
        let Parts::Dir(dir) = &self.parts else {
            return Ok(());
        };
        let file = parts_file(dir, handle);
        self.blocking(move || make_parts_file(&file, size, false))
            .await
    }

    /// Make the object `key` from its parts (in chunk order): renamed into
    /// place, or joined by S3. Done again after it succeeded, it finds the
    /// object there and succeeds.
    pub async fn finish_parts(
        &self,
        key: &str,
        handle: &str,
        parts: Vec<String>,
    ) -> Result<(), StoreError> {
        let finished = match &self.parts {
            Parts::Dir(dir) => {
                let (file, object) = (parts_file(dir, handle), dir.join(key));
                self.blocking(move || {
                    std::fs::File::open(&file)?.sync_all()?;
                    let folder = object.parent().expect("under the store");
                    std::fs::create_dir_all(folder)?;
                    std::fs::rename(&file, &object)?;
                    std::fs::File::open(folder)?.sync_all()
                })
                .await
            }
            Parts::S3(s3) => {
                let parts = parts
                    .into_iter()
                    .map(|content_id| PartId { content_id })
                    .collect();
                s3.complete_multipart(&Path::from(key), &handle.to_string(), parts)
                    .await
                    .map(|_| ())
                    .map_err(self.failed(key))
            }
        };
        match finished {
            Err(e) if self.exists(key).await? => {
                tracing::debug!(key, "an upload was finished before: {e}");
                Ok(())
            }
            other => other,
        }
    }

    /// Drop an unfinished upload's parts (nothing when they are gone).
    pub async fn abort_parts(&self, key: &str, handle: &str) -> Result<(), StoreError> {
        match &self.parts {
            Parts::Dir(dir) => {
                let file = parts_file(dir, handle);
                self.blocking(move || match std::fs::remove_file(file) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    other => other,
                })
                .await
            }
            Parts::S3(s3) => match s3
                .abort_multipart(&Path::from(key), &handle.to_string())
                .await
                .map_err(self.failed(key))
            {
                Ok(()) | Err(StoreError::Missing(_)) => Ok(()),
                Err(e) => Err(e),
            },
        }
    }

    /// Run file I/O off the async threads.
    async fn blocking(
        &self,
        io: impl FnOnce() -> std::io::Result<()> + Send + 'static,
    ) -> Result<(), StoreError> {
        let location = self.location.clone();
        let done = tokio::task::spawn_blocking(io)
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
        done.map_err(|source| StoreError::Io { location, source })
    }

    /// Remove the object `key` (nothing when it is not there).
    pub async fn remove(&self, key: &str) -> Result<(), StoreError> {
        match self
            .objects
            .delete(&Path::from(key))
            .await
            .map_err(self.failed(key))
        {
            Ok(()) | Err(StoreError::Missing(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
