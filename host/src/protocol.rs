//! The supervisor <-> worker wire format over the worker's stdin/stdout.
//!
//! A frame is `u32 header length (LE) | header JSON | u64 body length (LE) |
//! body bytes`. JSON keeps the header readable in a hex dump; the body (the
//! component, input and output) stays raw bytes.

use crate::gpu::AdapterInfo;
use crate::limits::Limits;
use crate::report::{LiveUpdate, RunReport};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::io::{self, Read, Write};

/// Largest header accepted (headers are small; this bounds a corrupt frame).
const MAX_HEADER_BYTES: u32 = 16 << 20;
/// Largest body accepted: a component plus an input or an output.
const MAX_BODY_BYTES: u64 = 8 << 30;

/// Worker -> supervisor, once at start.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    /// Every device the worker may run jobs on; the first is its default.
    pub devices: Vec<AdapterInfo>,
    /// Set when the worker could not start (for example `--gpu wgpu` without
    /// an adapter).
    pub error: Option<String>,
    /// The walls it raised before opening its GPU, and its attempts to get
    /// past them.
    #[serde(default)]
    pub sandbox: crate::sandbox::SandboxReport,
}

/// What a run request asks the worker to do with the loaded component.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Call {
    /// Check and compile the component in the body (and keep it); nothing
    /// runs. Its own deadline is the compile timeout.
    Load,
    Run,
    /// Call `verify`; the body holds the input, then `output_len` bytes
    /// of output, then the request's `outputs` (before any shared input).
    Verify {
        output_len: u64,
        /// The checked result's named outputs, by name and length.
        #[serde(default)]
        outputs: Vec<(String, u64)>,
    },
    /// Measure the default device's speed (`gpu::speed`); no component.
    /// The output is the GFLOPS as 8 little-endian bytes of an `f64`.
    Benchmark,
}

/// Supervisor -> worker. Body: the component's bytes (for `Load`), or the
/// input (for `Run` and `Verify`), then each shared input's bytes in the
/// order of `shared`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub digest: String,
    pub limits: Limits,
    pub call: Call,
    /// Send [`WorkerMessage::Live`] frames while the job runs.
    pub live: bool,
    /// The job's shared inputs, their bytes at the end of the body for those
    /// `sent` (the worker keeps the rest from an earlier job).
    #[serde(default)]
    pub shared: Vec<SharedSpec>,
}

/// One shared input of a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SharedSpec {
    pub name: String,
    pub digest: String,
    pub len: u64,
    /// Its bytes are in this frame's body; else the worker holds them.
    pub sent: bool,
}

/// Split the bytes of the `sent` shared inputs off the end of `body`, by
/// digest.
pub fn split_shared(
    body: &mut Vec<u8>,
    shared: &[SharedSpec],
) -> io::Result<Vec<(String, std::sync::Arc<[u8]>)>> {
    let mut sent = Vec::new();
    for spec in shared.iter().rev().filter(|s| s.sent) {
        let at = body.len().checked_sub(spec.len as usize).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "shared inputs longer than the body",
            )
        })?;
        // One copy, into the shared allocation; the body's tail is freed.
        sent.push((spec.digest.clone(), std::sync::Arc::from(&body[at..])));
        body.truncate(at);
        body.shrink_to_fit();
    }
    Ok(sent)
}

/// Worker -> supervisor, after the hello: any number of live updates (empty
/// body), then the answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerMessage {
    Live(LiveUpdate),
    Done(Response),
}

/// The answer to a request. Body: the output (empty on failure; `[0|1]` for
/// verify), then each of `outputs`' bytes.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub report: RunReport,
    pub has_output: bool,
    /// The worker no longer has the component (evicted): send it again.
    pub needs_component: bool,
    /// The worker no longer holds a shared input it was not sent: send
    /// them all.
    #[serde(default)]
    pub needs_shared: bool,
    /// A run's named outputs, by name and length, their bytes after the
    /// output's.
    #[serde(default)]
    pub outputs: Vec<(String, u64)>,
}

/// Split the named outputs `specs` (name and length, in order) off the end
/// of `body`.
pub fn split_named(body: &mut Vec<u8>, specs: &[(String, u64)]) -> io::Result<crate::NamedOutputs> {
    use agora_wire::limits::{MAX_NAMED_OUTPUTS, is_output_name};
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    if specs.len() > MAX_NAMED_OUTPUTS {
        return Err(bad("more named outputs than MAX_NAMED_OUTPUTS"));
    }
    let mut named = crate::NamedOutputs::new();
    for (name, len) in specs.iter().rev() {
        if !is_output_name(name) || named.contains_key(name) {
            return Err(bad("a named output's name is malformed or given twice"));
        }
        let at = body.len().checked_sub(*len as usize).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "named outputs longer than the body",
            )
        })?;
        named.insert(name.clone(), std::sync::Arc::from(&body[at..]));
        body.truncate(at);
    }
    Ok(named)
}

pub fn write_frame<H: Serialize>(w: &mut impl Write, header: &H, body: &[&[u8]]) -> io::Result<()> {
    let header = serde_json::to_vec(header).map_err(io::Error::other)?;
    let body_len: usize = body.iter().map(|b| b.len()).sum();
    w.write_all(&(header.len() as u32).to_le_bytes())?;
    w.write_all(&header)?;
    w.write_all(&(body_len as u64).to_le_bytes())?;
    for part in body {
        w.write_all(part)?;
    }
    w.flush()
}

/// Read one frame; `Ok(None)` at a clean end of stream.
pub fn read_frame<H: DeserializeOwned>(r: &mut impl Read) -> io::Result<Option<(H, Vec<u8>)>> {
    read_frame_within(r, || MAX_BODY_BYTES)
}

/// [`read_frame`], refusing a body over `max_body()` bytes before reading
/// it. The allowance is asked once the frame's length has arrived (the
/// supervisor allows a worker's answer no more than the output the request
/// in flight asked for, and a reader waits for a frame before it is sent).
pub fn read_frame_within<H: DeserializeOwned>(
    r: &mut impl Read,
    max_body: impl FnOnce() -> u64,
) -> io::Result<Option<(H, Vec<u8>)>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let header_len = u32::from_le_bytes(len);
    if header_len > MAX_HEADER_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame header of {header_len} bytes"),
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    r.read_exact(&mut header)?;
    let mut body_len = [0u8; 8];
    r.read_exact(&mut body_len)?;
    let body_len = u64::from_le_bytes(body_len);
    if body_len > max_body().min(MAX_BODY_BYTES) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame body of {body_len} bytes"),
        ));
    }
    // Grown as bytes arrive: a length the sender does not back with bytes
    // costs the reader nothing.
    let mut body = Vec::with_capacity(body_len.min(1 << 20) as usize);
    r.by_ref().take(body_len).read_to_end(&mut body)?;
    if body.len() as u64 != body_len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "frame body cut short",
        ));
    }
    let header = serde_json::from_slice(&header)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Some((header, body)))
}

#[cfg(test)]
mod tests {
    //! The framing read from a worker, which may be hostile once a guest
    //! escaped into it: any bytes get an answer, never a panic or an
    //! allocation the bytes do not back.
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    fn config() -> ProptestConfig {
        let seed = std::env::var("AGORA_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0xa60a);
        ProptestConfig {
            cases: 256,
            rng_seed: RngSeed::Fixed(seed),
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn a_frame_reads_back_as_written(name in ".{0,40}", n in any::<u64>(), parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..4)) {
            let mut wire = Vec::new();
            let slices: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
            write_frame(&mut wire, &(name.clone(), n), &slices).unwrap();
            let (header, body): ((String, u64), Vec<u8>) = read_frame(&mut wire.as_slice()).unwrap().unwrap();
            prop_assert_eq!(header, (name, n));
            prop_assert_eq!(body, parts.concat());
        }

        #[test]
        fn any_bytes_get_an_answer(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = read_frame::<WorkerMessage>(&mut bytes.as_slice());
        }

        /// A length prefix promising more than it sends is an error (and
        /// the body grows only with what arrives); one past the reader's
        /// allowance is refused before its body is read.
        #[test]
        fn a_lying_length_is_cut_short(claimed in 1u64..MAX_BODY_BYTES, sent in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assume!((sent.len() as u64) < claimed);
            let mut wire = Vec::new();
            let header = b"{}";
            wire.extend((header.len() as u32).to_le_bytes());
            wire.extend(header);
            wire.extend(claimed.to_le_bytes());
            wire.extend(&sent);
            let read = read_frame::<serde_json::Value>(&mut wire.as_slice());
            prop_assert_eq!(read.err().map(|e| e.kind()), Some(io::ErrorKind::UnexpectedEof));
            let over = read_frame_within::<serde_json::Value>(&mut wire.as_slice(), || claimed - 1);
            prop_assert_eq!(over.err().map(|e| e.kind()), Some(io::ErrorKind::InvalidData));
        }
    }
}
