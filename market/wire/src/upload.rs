//! Uploading a file as a blob (`agora upload`, and hosts' outputs): its
//! digest and chunk values in one pass over the file, then only the chunks
//! the market is missing, each retried on a busy market or a broken
//! connection. Run again after an interruption, it sends only what is
//! missing; a blob the uploader holds already is not sent at all.

use crate::api::{ChunkReceived, NewUpload, UploadInfo, codes};
use crate::chunks::{Chunker, MAX_BLOB_BYTES, UPLOAD_CHUNK_BYTES, chunk_range};
use crate::client::{Client, ClientError};
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// Tries of one chunk before the upload stops (run it again to resume).
const CHUNK_TRIES: u32 = 5;
/// Chunks sent at once: the market takes four per address
/// (`UPLOAD_CHUNKS_PER_PEER`), and the two ends' reading, hashing and
/// writing overlap.
const UPLOAD_STREAMS: usize = 4;
/// Reading the file for its digest, in pieces of this size.
const HASH_READ_BYTES: usize = 1 << 20;

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
        let mut file = Piece::open(path, range).map_err(file_error)?;
        self.upload_from(&mut file, progress).map_err(|e| match e {
            ClientError::File { source, .. } => file_error(source),
            e => e,
        })
    }

    /// Upload `bytes` (made in memory) as a blob.
    pub fn upload_bytes(&self, bytes: &[u8]) -> Result<UploadInfo, ClientError> {
        self.upload_from(&mut Bytes(bytes), &mut |_, _, _| {})
    }

    fn upload_from(
        &self,
        file: &mut dyn Source,
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
        let missing_bytes: u64 = info
            .missing
            .iter()
            .map(|&i| chunk_range(i, size, info.chunk_bytes))
            .map(|r| r.end - r.start)
            .sum();
        let mut sent = size - missing_bytes;
        progress(UploadStage::Sending, sent, size);
        let mut missing = std::mem::take(&mut info.missing);
        missing.dedup();
        let queue = Mutex::new(missing.into_iter());
        let source = Mutex::new(file);
        let (sent_tx, sent_rx) = std::sync::mpsc::channel::<Result<u64, ClientError>>();
        let mut failed = None;
        std::thread::scope(|scope| {
            for _ in 0..UPLOAD_STREAMS {
                let (queue, source, sent_tx, upload) = (&queue, &source, sent_tx.clone(), &upload);
                scope.spawn(move || {
                    while let Some(index) = queue.lock().expect("no panic while taking").next() {
                        let range = chunk_range(index, size, UPLOAD_CHUNK_BYTES);
                        let mut chunk = vec![0; (range.end - range.start) as usize];
                        // The file's lock only for the read: the sends overlap.
                        let read = source
                            .lock()
                            .expect("no panic while reading")
                            .read_at(range.start, &mut chunk);
                        let sent = read
                            .map_err(file_error)
                            .and_then(|()| self.put_chunk(upload, index, &chunk))
                            .map(|()| chunk.len() as u64);
                        let stop = sent.is_err();
                        let _ = sent_tx.send(sent);
                        if stop {
                            break;
                        }
                    }
                });
            }
            drop(sent_tx);
            for chunk in sent_rx {
                match chunk {
                    Ok(bytes) => {
                        sent += bytes;
                        progress(UploadStage::Sending, sent, size);
                    }
                    Err(e) => {
                        // The other streams stop after their chunk in flight.
                        *queue.lock().expect("no panic while taking") = Vec::new().into_iter();
                        failed.get_or_insert(e);
                    }
                }
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
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

/// The digest and chunk values of the `size` bytes of `file`, read once.
fn digest_of(
    file: &mut dyn Source,
    size: u64,
    progress: &mut dyn FnMut(UploadStage, u64, u64),
) -> std::io::Result<(String, Vec<[u8; 32]>)> {
    let mut chunker = Chunker::new(size, UPLOAD_CHUNK_BYTES);
    let mut buffer = vec![0u8; HASH_READ_BYTES];
    let mut read = 0u64;
    progress(UploadStage::Hashing, 0, size);
    while read < size {
        let n = (size - read).min(HASH_READ_BYTES as u64) as usize;
        file.read_at(read, &mut buffer[..n])?;
        chunker.update(&buffer[..n]);
        read += n as u64;
        progress(UploadStage::Hashing, read, size);
    }
    let (digest, values) = chunker
        .finish()
        .ok_or_else(|| std::io::Error::other("the file changed size while it was read"))?;
    Ok((digest.to_hex().to_string(), values))
}

/// What an upload reads.
trait Source: Send {
    fn len(&self) -> u64;
    /// Fill `buffer` from `offset`.
    fn read_at(&mut self, offset: u64, buffer: &mut [u8]) -> std::io::Result<()>;
}

struct Bytes<'a>(&'a [u8]);

impl Source for Bytes<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&mut self, offset: u64, buffer: &mut [u8]) -> std::io::Result<()> {
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

    fn read_at(&mut self, offset: u64, buffer: &mut [u8]) -> std::io::Result<()> {
        self.file.seek(SeekFrom::Start(self.start + offset))?;
        self.file.read_exact(buffer).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                std::io::Error::other("the file changed size while it was read")
            }
            _ => e,
        })
    }
}
