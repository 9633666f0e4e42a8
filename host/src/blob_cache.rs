//! The provider's cache of blobs by digest (a job's shared inputs): on disk
//! under a size bound, least recently used first out, and in memory while
//! a unit uses one. A blob is fetched once per provider, however many units
//! of however many jobs read it, and however many of them start at once;
//! its bytes are checked against their digest before they are kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

/// Files in the cache folder are named by digest; a download in progress
/// has a name of its own with this ending until it is checked (two hosts
/// may share a folder).
const PARTIAL: &str = "partial";

pub struct BlobCache {
    dir: PathBuf,
    max_bytes: u64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The bytes of blobs some unit holds now.
    in_memory: HashMap<String, Weak<[u8]>>,
    /// One lock per digest being fetched: the second asker waits for the
    /// first's download instead of making its own.
    fetching: HashMap<String, Arc<Mutex<()>>>,
    /// Bytes fetched from the market, for the heartbeat and tests.
    fetched_bytes: u64,
}

/// Why a blob is not in the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("fetching blob {digest}: {message}")]
    Fetch { digest: String, message: String },
    #[error("blob {digest} arrived with digest {got}")]
    Digest { digest: String, got: String },
    #[error("the blob cache at {dir}: {source}")]
    Io { dir: String, source: std::io::Error },
}

impl BlobCache {
    /// The cache in `dir` (made if missing), holding at most `max_bytes` on
    /// disk (a blob larger than that is used from memory and not kept).
    pub fn new(dir: &Path, max_bytes: u64) -> Result<BlobCache, CacheError> {
        std::fs::create_dir_all(dir).map_err(|source| CacheError::Io {
            dir: dir.display().to_string(),
            source,
        })?;
        Ok(BlobCache {
            dir: dir.to_path_buf(),
            max_bytes,
            inner: Mutex::default(),
        })
    }

    /// Bytes fetched from the market since this cache started.
    pub fn fetched_bytes(&self) -> u64 {
        self.inner.lock().expect("cache lock").fetched_bytes
    }

    /// The digests on disk, most recently used first, at most `limit` (the
    /// heartbeat's summary of what this provider holds).
    pub fn held(&self, limit: usize) -> Vec<String> {
        let mut files = self.files();
        files.sort_by(|a, b| b.2.cmp(&a.2));
        files
            .into_iter()
            .take(limit)
            .map(|(digest, _, _)| digest)
            .collect()
    }

    /// The bytes of blob `digest`, from memory, disk, or else `fetch` (which
    /// writes them into the file it is given).
    pub fn get(
        &self,
        digest: &str,
        fetch: impl FnOnce(&mut std::fs::File) -> Result<(), String>,
    ) -> Result<Arc<[u8]>, CacheError> {
        if !agora_wire::is_digest_hex(digest) {
            return Err(CacheError::Digest {
                digest: digest.into(),
                got: "not a blake3 digest".into(),
            });
        }
        let turn = {
            let mut inner = self.inner.lock().expect("cache lock");
            if let Some(bytes) = inner.in_memory.get(digest).and_then(Weak::upgrade) {
                return Ok(bytes);
            }
            inner
                .fetching
                .entry(digest.to_string())
                .or_default()
                .clone()
        };
        let _turn = turn.lock().expect("fetch lock");
        // Another asker may have fetched it while this one waited.
        if let Some(bytes) = self
            .inner
            .lock()
            .expect("cache lock")
            .in_memory
            .get(digest)
            .and_then(Weak::upgrade)
        {
            return Ok(bytes);
        }
        let got = match self.from_disk(digest) {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => self.fetch(digest, fetch),
            Err(e) => Err(e),
        };
        let mut inner = self.inner.lock().expect("cache lock");
        let Ok(bytes) = got else {
            inner.fetching.remove(digest);
            return got;
        };
        inner.in_memory.retain(|_, weak| weak.strong_count() > 0);
        inner
            .in_memory
            .insert(digest.to_string(), Arc::downgrade(&bytes));
        inner.fetching.remove(digest);
        Ok(bytes)
    }

    fn io(&self) -> impl Fn(std::io::Error) -> CacheError + '_ {
        move |source| CacheError::Io {
            dir: self.dir.display().to_string(),
            source,
        }
    }

    /// A kept file, checked again (a disk can rot): a bad one is removed.
    fn from_disk(&self, digest: &str) -> Result<Option<Arc<[u8]>>, CacheError> {
        let path = self.dir.join(digest);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io()(e)),
        };
        if blake3::hash(&bytes).to_hex().as_str() != digest {
            tracing::warn!(
                digest,
                "a cached blob no longer matches its digest: fetching it again"
            );
            std::fs::remove_file(&path).map_err(self.io())?;
            return Ok(None);
        }
        // Used now: last out.
        let _ =
            std::fs::File::open(&path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
        Ok(Some(bytes.into()))
    }

    fn fetch(
        &self,
        digest: &str,
        fetch: impl FnOnce(&mut std::fs::File) -> Result<(), String>,
    ) -> Result<Arc<[u8]>, CacheError> {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).expect("the OS's random source");
        let partial = self
            .dir
            .join(format!("{digest}.{}.{PARTIAL}", hex::encode(random)));
        let mut file = std::fs::File::create(&partial).map_err(self.io())?;
        let fetched = fetch(&mut file);
        drop(file);
        if let Err(message) = fetched {
            let _ = std::fs::remove_file(&partial);
            return Err(CacheError::Fetch {
                digest: digest.into(),
                message,
            });
        }
        let bytes = std::fs::read(&partial).map_err(self.io())?;
        self.inner.lock().expect("cache lock").fetched_bytes += bytes.len() as u64;
        let got = blake3::hash(&bytes).to_hex().to_string();
        if got != digest {
            let _ = std::fs::remove_file(&partial);
            return Err(CacheError::Digest {
                digest: digest.into(),
                got,
            });
        }
        if bytes.len() as u64 <= self.max_bytes {
            self.make_room(bytes.len() as u64)?;
            std::fs::rename(&partial, self.dir.join(digest)).map_err(self.io())?;
        } else {
            std::fs::remove_file(&partial).map_err(self.io())?;
        }
        Ok(bytes.into())
    }

    /// Remove the least recently used files until `incoming` more bytes fit.
    fn make_room(&self, incoming: u64) -> Result<(), CacheError> {
        let mut files = self.files();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort_by(|a, b| a.2.cmp(&b.2));
        for (digest, len, _) in files {
            if total + incoming <= self.max_bytes {
                break;
            }
            std::fs::remove_file(self.dir.join(&digest)).map_err(self.io())?;
            total -= len;
        }
        Ok(())
    }

    /// Kept files: digest, length, last use.
    fn files(&self) -> Vec<(String, u64, std::time::SystemTime)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                let meta = e.metadata().ok()?;
                agora_wire::is_digest_hex(&name).then(|| {
                    (
                        name,
                        meta.len(),
                        meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                    )
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn blob(n: u8, len: usize) -> (String, Vec<u8>) {
        let bytes = vec![n; len];
        (blake3::hash(&bytes).to_hex().to_string(), bytes)
    }

    #[test]
    fn a_blob_is_fetched_once_and_kept_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::new(dir.path(), 250).unwrap();
        let (a, a_bytes) = blob(1, 100);
        let fetches = std::sync::atomic::AtomicU32::new(0);
        let fetch = |bytes: &[u8]| {
            let bytes = bytes.to_vec();
            let fetches = &fetches;
            move |f: &mut std::fs::File| {
                fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                f.write_all(&bytes).map_err(|e| e.to_string())
            }
        };
        // Eight threads ask at once: one download.
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| assert_eq!(&*cache.get(&a, fetch(&a_bytes)).unwrap(), &a_bytes[..]));
            }
        });
        assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(cache.fetched_bytes(), 100);
        // From disk in a new cache over the same folder.
        let again = BlobCache::new(dir.path(), 250).unwrap();
        assert_eq!(
            &*again.get(&a, |_| Err("no fetch".into())).unwrap(),
            &a_bytes[..]
        );
        // Two more: the least recently used goes.
        let (b, b_bytes) = blob(2, 100);
        let (c, c_bytes) = blob(3, 100);
        std::thread::sleep(std::time::Duration::from_millis(20));
        again.get(&b, fetch(&b_bytes)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        again.get(&c, fetch(&c_bytes)).unwrap();
        let held = again.held(10);
        assert_eq!(held, vec![c.clone(), b.clone()], "a, used first, went");
        // Bytes that are not the digest's are refused and not kept.
        let (d, _) = blob(4, 10);
        assert!(matches!(
            again.get(&d, fetch(b"lies")),
            Err(CacheError::Digest { .. })
        ));
        assert!(!dir.path().join(&d).exists());
        // A rotten file is fetched again.
        std::fs::write(dir.path().join(&c), b"rot").unwrap();
        let fresh = BlobCache::new(dir.path(), 250).unwrap();
        assert_eq!(&*fresh.get(&c, fetch(&c_bytes)).unwrap(), &c_bytes[..]);
    }
}
