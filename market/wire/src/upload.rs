//! Uploading a file as a blob (`agora upload`, and hosts' outputs): its
//! digest and chunk values in one pass over the file (its chunks hashed on
//! every core, up to `HASH_THREADS`), then only the chunks the market is
//! missing, on `UPLOAD_STREAMS` streams at once, each retried on a busy
//! market or a broken connection. Run again after an interruption, it sends
//! only what is missing; a blob the uploader holds already is not sent at
//! all.

use crate::api::{ChunkReceived, NewUpload, UploadInfo, codes};
use crate::chunks::{ChunkHasher, MAX_BLOB_BYTES, UPLOAD_CHUNK_BYTES, chunk_count, chunk_range};
use crate::client::{Client, ClientError};
use std::ops::Range;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Tries of one chunk before the upload stops (run it again to resume).
const CHUNK_TRIES: u32 = 5;
/// Chunks sent at once: the market takes four per address
/// (`UPLOAD_CHUNKS_PER_PEER`), and the two ends' reading, hashing and
/// writing overlap.
const UPLOAD_STREAMS: usize = 4;
/// Reading the file for its digest, in pieces of this size.
const HASH_READ_BYTES: usize = 1 << 20;
/// Threads hashing the file's chunks at most: past the cores a machine
/// has, the disk is the bound.
const HASH_THREADS: usize = 8;

/// Where an upload is, for a progress bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadStage {
    /// Reading the file for its digest: bytes read of the size.
    Hashing,
    /// Sending chunks: bytes the market has of the size (what an earlier,
    /// interrupted upload sent counts from the start).
    Sending,
}

impl Client {
    /// Upload the file at `path` as a blob this client's key holds;
    /// `progress(stage, done, total)` as it goes.
    pub fn upload_file(
        &self,
        path: &Path,
        progress: &mut dyn FnMut(UploadStage, u64, u64),
    ) -> Result<UploadInfo, ClientError> {
        let file_error = |source| ClientError::File {
            path: path.display().to_string(),
            source,
        };
        let size = std::fs::metadata(path).map_err(file_error)?.len();
        self.upload_range(path, 0..size, progress)
    }

    /// Upload the bytes `range` of the file at `path` as a blob (one piece
    /// of a large file).
    pub fn upload_range(
        &self,
        path: &Path,
        range: Range<u64>,
        progress: &mut dyn FnMut(UploadStage, u64, u64),
    ) -> Result<UploadInfo, ClientError> {
        let file_error = |source| ClientError::File {
            path: path.display().to_string(),
            source,
        };
        let file = Piece::open(path, range).map_err(file_error)?;
        self.upload_from(&file, progress).map_err(|e| match e {
            ClientError::File { source, .. } => file_error(source),
            e => e,
        })
    }

    /// Upload `bytes` (made in memory) as a blob.
    pub fn upload_bytes(&self, bytes: &[u8]) -> Result<UploadInfo, ClientError> {
        self.upload_from(&Bytes(bytes), &mut |_, _, _| {})
    }

    fn upload_from(
        &self,
        file: &dyn Source,
        progress: &mut dyn FnMut(UploadStage, u64, u64),
    ) -> Result<UploadInfo, ClientError> {
        let file_error = |source| ClientError::File {
            path: "the upload".into(),
            source,
        };
        let size = file.len();
        if size > MAX_BLOB_BYTES {
            let source = std::io::Error::other(format!(
                "{size} bytes: a blob is at most {MAX_BLOB_BYTES} bytes (MAX_BLOB_BYTES)"
            ));
            return Err(file_error(source));
        }
        let (digest, values) = digest_of(file, size, progress).map_err(file_error)?;
        let request = NewUpload {
            digest,
            size,
            chunk_values: values.iter().map(hex::encode).collect(),
        };
        let digest = request.digest.clone();
        let mut info: UploadInfo = self.post("/api/v1/uploads", &request, None)?;
        if info.digest != digest || info.size != size {
            return Err(ClientError::Decode(format!(
                "the market answered for blob {} of {} bytes",
                info.digest, info.size
            )));
        }
        if info.stored {
            progress(UploadStage::Sending, size, size);
            return Ok(info);
        }
        let upload = info
            .upload
            .clone()
            .ok_or_else(|| ClientError::Decode("an upload under way without an id".into()))?;
        let count = crate::chunks::chunk_count(size, UPLOAD_CHUNK_BYTES);
        if info.chunk_bytes != UPLOAD_CHUNK_BYTES || info.missing.iter().any(|&i| i >= count) {
            return Err(ClientError::Decode(format!(
                "the market's upload does not fit {count} chunks of {UPLOAD_CHUNK_BYTES} bytes"
            )));
        }
        let mut missing = std::mem::take(&mut info.missing);
        missing.sort_unstable();
        missing.dedup();
        let missing_bytes: u64 = missing
            .iter()
            .map(|&i| chunk_range(i, size, info.chunk_bytes))
            .map(|r| r.end - r.start)
            .sum();
        let mut sent = size.saturating_sub(missing_bytes);
        progress(UploadStage::Sending, sent, size);
        on_threads(
            UPLOAD_STREAMS,
            missing.into_iter(),
            |index, buffer, report| {
                let range = chunk_range(index, size, UPLOAD_CHUNK_BYTES);
                buffer.resize((range.end - range.start) as usize, 0);
                file.read_at(range.start, buffer).map_err(file_error)?;
                self.put_chunk(&upload, index, buffer)?;
                report(buffer.len() as u64);
                Ok(())
            },
            &mut |bytes| {
                sent += bytes;
                progress(UploadStage::Sending, sent, size);
            },
        )?;
        let done: UploadInfo = self.post(
            &format!("/api/v1/uploads/{upload}/complete"),
            &serde_json::json!({}),
            None,
        )?;
        if !done.stored || done.digest != digest {
            return Err(ClientError::Decode(format!(
                "the market finished upload {upload} as blob {} (stored: {})",
                done.digest, done.stored
            )));
        }
        Ok(done)
    }

    /// Send one chunk, retrying a busy market or a broken connection.
    fn put_chunk(&self, upload: &str, index: u64, bytes: &[u8]) -> Result<(), ClientError> {
        let mut wait = Duration::from_millis(200);
        for attempt in 1..=CHUNK_TRIES {
            match self.put_bytes::<ChunkReceived>(
                &format!("/api/v1/uploads/{upload}/chunks/{index}"),
                bytes,
            ) {
                Ok(_) => return Ok(()),
                Err(e) if attempt < CHUNK_TRIES && retryable(&e) => {
                    std::thread::sleep(wait);
                    wait *= 2;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last try returns")
    }
}

/// Whether sending again may succeed.
fn retryable(error: &ClientError) -> bool {
    match error {
        ClientError::Transport { .. } => true,
        ClientError::Api { code, .. } => code == codes::BUSY || code == codes::RATE_LIMITED,
        _ => false,
    }
}

/// The digest and chunk values of the `size` bytes of `file`, read once:
/// its chunks hashed apart on as many threads as the machine has cores, up
/// to `HASH_THREADS` (a chunk's value needs no other chunk), then merged
/// into the digest.
fn digest_of(
    file: &dyn Source,
    size: u64,
    progress: &mut dyn FnMut(UploadStage, u64, u64),
) -> std::io::Result<(String, Vec<[u8; 32]>)> {
    let chunks = chunk_count(size, UPLOAD_CHUNK_BYTES);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(HASH_THREADS)
        .min(chunks as usize);
    let values = Mutex::new(vec![[0u8; 32]; chunks as usize]);
    progress(UploadStage::Hashing, 0, size);
    let mut read = 0;
    on_threads(
        threads,
        0..chunks,
        |index, buffer, report| {
            buffer.resize(HASH_READ_BYTES, 0);
            let range = chunk_range(index, size, UPLOAD_CHUNK_BYTES);
            let mut hasher = ChunkHasher::new(index, chunks, UPLOAD_CHUNK_BYTES);
            let mut at = range.start;
            while at < range.end {
                let piece = &mut buffer[..(range.end - at).min(HASH_READ_BYTES as u64) as usize];
                file.read_at(at, piece)?;
                hasher.update(piece);
                at += piece.len() as u64;
                report(piece.len() as u64);
            }
            values.lock().expect("no panic while hashing")[index as usize] = hasher.finish();
            Ok::<_, std::io::Error>(())
        },
        &mut |bytes| {
            read += bytes;
            progress(UploadStage::Hashing, read, size);
        },
    )?;
    let values = values.into_inner().expect("no panic while hashing");
    let digest = crate::chunks::root_of(&values, size, UPLOAD_CHUNK_BYTES)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok((digest.to_hex().to_string(), values))
}

/// Run `work(index, buffer, report)` for each of `indexes` on `threads`
/// threads at once, each thread with a buffer of its own; the bytes each
/// `report`s done go to `done` on this thread as they come. The first
/// error stops the rest after the work they have in hand, and is returned.
fn on_threads<E: Send>(
    threads: usize,
    indexes: impl Iterator<Item = u64> + Send,
    work: impl Fn(u64, &mut Vec<u8>, &dyn Fn(u64)) -> Result<(), E> + Sync,
    done: &mut dyn FnMut(u64),
) -> Result<(), E> {
    let queue = Mutex::new(indexes);
    let stopped = AtomicBool::new(false);
    let (reports, reported) = std::sync::mpsc::channel::<Result<u64, E>>();
    let mut first_error = None;
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (queue, stopped, work, reports) = (&queue, &stopped, &work, reports.clone());
            scope.spawn(move || {
                let mut buffer = Vec::new();
                let report = |bytes| {
                    let _ = reports.send(Ok(bytes));
                };
                loop {
                    // Its own statement: the lock is let go before the work
                    // (a `while let` would hold it for the body, and the
                    // threads would take turns).
                    let next = queue.lock().expect("no panic while taking").next();
                    let Some(index) = next.filter(|_| !stopped.load(Ordering::Relaxed)) else {
                        break;
                    };
                    if let Err(e) = work(index, &mut buffer, &report) {
                        stopped.store(true, Ordering::Relaxed);
                        let _ = reports.send(Err(e));
                        break;
                    }
                }
            });
        }
        drop(reports);
        for report in reported {
            match report {
                Ok(bytes) => done(bytes),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    });
    first_error.map_or(Ok(()), Err)
}

/// What an upload reads, from any thread.
trait Source: Sync {
    fn len(&self) -> u64;
    /// Fill `buffer` from `offset`.
    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> std::io::Result<()>;
}

struct Bytes<'a>(&'a [u8]);

impl Source for Bytes<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> std::io::Result<()> {
        let start = offset as usize;
        buffer.copy_from_slice(&self.0[start..start + buffer.len()]);
        Ok(())
    }
}

/// The bytes `start..start + len` of a file, read at offsets within them.
struct Piece {
    file: std::fs::File,
    start: u64,
    len: u64,
}

impl Piece {
    fn open(path: &Path, range: Range<u64>) -> std::io::Result<Piece> {
        let file = std::fs::File::open(path)?;
        if file.metadata()?.len() < range.end {
            return Err(std::io::Error::other(format!(
                "the file is shorter than {} bytes",
                range.end
            )));
        }
        Ok(Piece {
            file,
            start: range.start,
            len: range.end - range.start,
        })
    }
}

impl Source for Piece {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> std::io::Result<()> {
        read_exact_at(&self.file, buffer, self.start + offset).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                std::io::Error::other("the file changed size while it was read")
            }
            _ => e,
        })
    }
}

/// Fill `buffer` from `offset` of `file`, with no seek shared between
/// threads.
#[cfg(unix)]
fn read_exact_at(file: &std::fs::File, buffer: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buffer, offset)
}

#[cfg(windows)]
fn read_exact_at(
    file: &std::fs::File,
    mut buffer: &mut [u8],
    mut offset: u64,
) -> std::io::Result<()> {
    while !buffer.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buffer, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buffer = &mut buffer[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}
