//! A blob in chunks: the sizes an upload uses and the blake3 tree that
//! lets each chunk be checked on its own, on arrival, against the blob's
//! digest.
//!
//! blake3 is a Merkle tree over 1 KiB pieces, so a blob cut into chunks of
//! a power-of-two size has one chaining value per chunk (the chunk's hash
//! at its offset, not the root), and the chaining values merge, in the
//! tree's shape, into the blob's ordinary blake3 digest. An uploader
//! declares every chunk's chaining value with the digest; the market checks
//! once that they merge into the digest ([`root_of`]) and then checks each
//! chunk's bytes against its own value as it arrives ([`chunk_value`]): a
//! chunk is accepted only when it is exactly the declared blob's, so no
//! upload ends with bytes that do not match their digest, and the market
//! never reads a blob back to hash it.
//!
//! A blob of one chunk has no tree: its one value is its digest.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

/// The bytes of every chunk of an upload but the last: a power of two (the
/// tree needs it), and at least S3's 5 MiB smallest multipart part.
pub const UPLOAD_CHUNK_BYTES: u64 = 8 << 20;

/// Largest blob the market stores: a dataset or a model's weights, far
/// above a unit's inline input. 2,048 chunks; its chunk list is 128 KiB of
/// JSON.
pub const MAX_BLOB_BYTES: u64 = 16 << 30;

/// How many chunks of `chunk_bytes` a blob of `size` bytes has: at least
/// one (an empty blob is one empty chunk).
pub fn chunk_count(size: u64, chunk_bytes: u64) -> u64 {
    size.div_ceil(chunk_bytes).max(1)
}

/// The byte range of chunk `index` of a blob of `size`.
pub fn chunk_range(index: u64, size: u64, chunk_bytes: u64) -> std::ops::Range<u64> {
    let start = index * chunk_bytes;
    start.min(size)..(start + chunk_bytes).min(size)
}

/// The value chunk `index` of a blob of `chunks` chunks is checked
/// against: its chaining value at its offset, or, for a blob of one chunk,
/// its digest. `chunk_bytes` must be a power of two of at least 1 KiB.
pub fn chunk_value(index: u64, chunks: u64, chunk_bytes: u64, bytes: &[u8]) -> [u8; 32] {
    let mut hasher = ChunkHasher::new(index, chunks, chunk_bytes);
    hasher.update(bytes);
    hasher.finish()
}

/// [`chunk_value`] of bytes that come in pieces (a chunk hashed as it
/// arrives, or read a piece at a time).
pub struct ChunkHasher {
    hasher: blake3::Hasher,
    /// The blob is this one chunk: its value is the root digest.
    whole: bool,
}

impl ChunkHasher {
    /// For chunk `index` of a blob of `chunks` chunks of `chunk_bytes`.
    pub fn new(index: u64, chunks: u64, chunk_bytes: u64) -> ChunkHasher {
        debug_assert!(chunk_bytes.is_power_of_two() && chunk_bytes >= blake3::CHUNK_LEN as u64);
        let mut hasher = blake3::Hasher::new();
        if chunks > 1 {
            hasher.set_input_offset(index * chunk_bytes);
        }
        ChunkHasher {
            hasher,
            whole: chunks == 1,
        }
    }

    /// The chunk's next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    /// The chunk's value.
    pub fn finish(&self) -> [u8; 32] {
        match self.whole {
            true => *self.hasher.finalize().as_bytes(),
            false => self.hasher.finalize_non_root(),
        }
    }
}

/// Why declared chunk values do not make a digest.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error(
        "a blob of {size} bytes has {expected} chunks of {chunk_bytes} bytes; {given} chunk values were given"
    )]
    Count {
        size: u64,
        chunk_bytes: u64,
        expected: u64,
        given: usize,
    },
    #[error("the chunk values make the digest {made}, not the claimed {claimed}")]
    Digest { made: String, claimed: String },
    #[error("a chunk value is 64 hex digits: {0}")]
    Malformed(String),
}

/// The digest the chunk values `values` (in order) of a blob of `size`
/// bytes make.
pub fn root_of(
    values: &[[u8; 32]],
    size: u64,
    chunk_bytes: u64,
) -> Result<blake3::Hash, ChunkError> {
    let expected = chunk_count(size, chunk_bytes);
    if values.len() as u64 != expected {
        return Err(ChunkError::Count {
            size,
            chunk_bytes,
            expected,
            given: values.len(),
        });
    }
    if let [only] = values {
        return Ok(blake3::Hash::from_bytes(*only));
    }
    let (left, right) = split(values, size, chunk_bytes);
    Ok(merge_subtrees_root(&left, &right, Mode::Hash))
}

/// The chaining values of the left and right subtrees of `values`, which
/// cover `len` bytes in more than one chunk.
fn split(values: &[[u8; 32]], len: u64, chunk_bytes: u64) -> (ChainingValue, ChainingValue) {
    // The left subtree is the largest power-of-two number of 1 KiB pieces
    // short of the whole: a whole number of chunks, since a chunk is a
    // power of two of pieces and there is more than one.
    let left_len = left_subtree_len(len);
    let at = (left_len / chunk_bytes) as usize;
    (
        subtree(&values[..at], left_len, chunk_bytes),
        subtree(&values[at..], len - left_len, chunk_bytes),
    )
}

fn subtree(values: &[[u8; 32]], len: u64, chunk_bytes: u64) -> ChainingValue {
    match values {
        [only] => *only,
        _ => {
            let (left, right) = split(values, len, chunk_bytes);
            merge_subtrees_non_root(&left, &right, Mode::Hash)
        }
    }
}

/// Check that `values` (hex, in order) make `digest` (hex) for a blob of
/// `size` bytes; the values as bytes.
pub fn check_values(
    values: &[String],
    digest: &str,
    size: u64,
    chunk_bytes: u64,
) -> Result<Vec<[u8; 32]>, ChunkError> {
    let values: Vec<[u8; 32]> = values
        .iter()
        .map(|v| {
            let mut value = [0u8; 32];
            hex::decode_to_slice(v, &mut value)
                .map_err(|_| ChunkError::Malformed(v.chars().take(80).collect()))?;
            Ok(value)
        })
        .collect::<Result<_, ChunkError>>()?;
    let made = root_of(&values, size, chunk_bytes)?.to_hex().to_string();
    if !made.eq_ignore_ascii_case(digest) {
        return Err(ChunkError::Digest {
            made,
            claimed: digest.to_string(),
        });
    }
    Ok(values)
}

/// A blob's digest and chunk values, from its bytes read in order (the
/// uploader's one pass over a file).
pub struct Chunker {
    size: u64,
    chunk_bytes: u64,
    chunks: u64,
    /// The chunk being read and how far.
    current: blake3::Hasher,
    at: u64,
    values: Vec<[u8; 32]>,
    /// More bytes than the size were given.
    over: bool,
}

impl Chunker {
    /// For a blob of `size` bytes cut into `chunk_bytes` chunks.
    pub fn new(size: u64, chunk_bytes: u64) -> Chunker {
        let chunks = chunk_count(size, chunk_bytes);
        Chunker {
            size,
            chunk_bytes,
            chunks,
            current: blake3::Hasher::new(),
            at: 0,
            values: Vec::with_capacity(chunks as usize),
            over: false,
        }
    }

    /// The next bytes of the blob.
    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.at >= self.size {
                self.over = true;
                return;
            }
            let index = self.values.len() as u64;
            let end = chunk_range(index, self.size, self.chunk_bytes).end;
            let take = (end - self.at).min(bytes.len() as u64) as usize;
            if index > 0 && self.at == index * self.chunk_bytes {
                self.current.set_input_offset(self.at);
            }
            self.current.update(&bytes[..take]);
            self.at += take as u64;
            bytes = &bytes[take..];
            if self.at == end && self.values.len() as u64 + 1 < self.chunks {
                self.values.push(self.current.finalize_non_root());
                self.current = blake3::Hasher::new();
            }
        }
    }

    /// The digest and the chunk values; None when fewer or more bytes than
    /// the size were given.
    pub fn finish(mut self) -> Option<(blake3::Hash, Vec<[u8; 32]>)> {
        if self.at != self.size || self.over {
            return None;
        }
        let last = match self.chunks {
            1 => *self.current.finalize().as_bytes(),
            _ => self.current.finalize_non_root(),
        };
        self.values.push(last);
        let digest = root_of(&self.values, self.size, self.chunk_bytes).ok()?;
        Some((digest, self.values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 1000) as u8).collect()
    }

    /// Sizes around every chunk boundary and tree shape, at small chunks.
    #[test]
    fn chunk_values_make_the_plain_digest() {
        for chunk_bytes in [1024u64, 4096] {
            for size in [
                0usize,
                1,
                1023,
                1024,
                1025,
                2048,
                3000,
                4096,
                4097,
                5 * 4096 + 3,
                7 * 4096,
                9 * 4096 + 1,
                16 * 4096,
            ] {
                let data = bytes(size);
                let chunks = chunk_count(size as u64, chunk_bytes);
                let values: Vec<[u8; 32]> = (0..chunks)
                    .map(|i| {
                        let r = chunk_range(i, size as u64, chunk_bytes);
                        chunk_value(
                            i,
                            chunks,
                            chunk_bytes,
                            &data[r.start as usize..r.end as usize],
                        )
                    })
                    .collect();
                assert_eq!(
                    root_of(&values, size as u64, chunk_bytes).unwrap(),
                    blake3::hash(&data),
                    "size {size} chunk {chunk_bytes}"
                );
                // The one-pass chunker, fed in odd pieces, agrees.
                let mut chunker = Chunker::new(size as u64, chunk_bytes);
                data.chunks(777).for_each(|piece| chunker.update(piece));
                let (digest, made) = chunker.finish().unwrap();
                assert_eq!((digest, made), (blake3::hash(&data), values.clone()));
                // So does each chunk hashed in odd pieces as it arrives.
                for (i, value) in values.iter().enumerate() {
                    let r = chunk_range(i as u64, size as u64, chunk_bytes);
                    let mut hasher = ChunkHasher::new(i as u64, chunks, chunk_bytes);
                    data[r.start as usize..r.end as usize]
                        .chunks(333)
                        .for_each(|piece| hasher.update(piece));
                    assert_eq!(&hasher.finish(), value, "chunk {i} in pieces");
                }
            }
        }
    }

    #[test]
    fn a_wrong_value_count_or_digest_is_refused() {
        let data = bytes(3 * 1024 + 10);
        let mut chunker = Chunker::new(data.len() as u64, 1024);
        chunker.update(&data);
        let (digest, values) = chunker.finish().unwrap();
        let hex: Vec<String> = values.iter().map(hex::encode).collect();
        assert!(check_values(&hex, &digest.to_hex(), data.len() as u64, 1024).is_ok());
        assert!(matches!(
            check_values(&hex[..3], &digest.to_hex(), data.len() as u64, 1024),
            Err(ChunkError::Count {
                expected: 4,
                given: 3,
                ..
            })
        ));
        let mut swapped = hex.clone();
        swapped.swap(0, 1);
        assert!(matches!(
            check_values(&swapped, &digest.to_hex(), data.len() as u64, 1024),
            Err(ChunkError::Digest { .. })
        ));
        assert!(matches!(
            check_values(
                &vec!["zz".to_string(); 4],
                &digest.to_hex(),
                data.len() as u64,
                1024
            ),
            Err(ChunkError::Malformed(_))
        ));
        // A chunk at another offset has another value.
        assert_ne!(
            chunk_value(1, 4, 1024, &data[..1024]),
            chunk_value(0, 4, 1024, &data[..1024])
        );
        // Too few bytes for the size.
        let mut short = Chunker::new(10, 1024);
        short.update(&[1; 9]);
        assert!(short.finish().is_none());
        let mut long = Chunker::new(0, 1024);
        long.update(&[1]);
        assert!(long.finish().is_none());
    }
}
